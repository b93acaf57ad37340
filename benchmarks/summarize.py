"""Markdown table from benchmarks/results/*.json, with ratios to the Keras run."""
from __future__ import annotations

import json
from pathlib import Path

R = Path(__file__).parent / "results"


def main() -> None:
    keras = json.loads((R / "seed_keras.json").read_text())
    ours = json.loads((R / "foundation.json").read_text())
    thr = json.loads((R / "throughput.json").read_text())
    kw = keras["wall_s_to_test_result"]
    print(f"Keras {keras['tensorflow']} vs tuneforge, {ours['date']}, data {ours['data']}\n")
    print("| pipeline | test acc | test acc, flip TTA | epochs (best) | wall | wall vs Keras |")
    print("|---|---|---|---|---|---|")
    print(f"| design's Keras CNN (seed_keras.py) | {keras['test_accuracy']:.2%} | - | {keras['epochs_run']} "
          f"({keras['restored_epoch']}) | {kw / 60:.1f} min | 1.00x |")
    for x in ours["results"]:
        print(f"| tuneforge {x['run']} | {x['test_accuracy']:.2%} | {x['test_accuracy_tta']:.2%} | {x['epochs_run']} "
              f"({x['best_epoch']}) | {x['wall_s'] / 60:.1f} min | {kw / x['wall_s']:.2f}x faster |")
    k = json.loads((R / "seed_keras_throughput.json").read_text())["throughput_img_s_bs256"]
    print("\n| seed-cnn training, batch 256, in memory | images/s | vs Keras | achieved GFLOP/s |")
    print("|---|---|---|---|")
    print(f"| Keras / TensorFlow (fp32) | {k:.0f} | 1.00x | - |")
    for t in thr["results"]:
        if "error" in t:
            print(f"| tuneforge {t['variant']} | error: {t['error'][:60]} | | |")
            continue
        print(f"| tuneforge {t['variant']} | {t['images_per_s']:.0f} | {t['images_per_s'] / k:.2f}x | {t['achieved_gflop_s']} |")
    print(f"\nMeasured matmul peak: fp32 {thr['peak_gflop_s']['fp32']} GFLOP/s, bf16 {thr['peak_gflop_s']['bf16']} GFLOP/s "
          f"(CPU capability {thr['cpu_capability']}, {thr['threads']} threads)")


if __name__ == "__main__":
    main()
