"""Multi-label images (`fit --multi-label` on a table of image paths): on generated 24x24 images
holding up to three coloured squares, whose labels are the colours present, a small fast-cnn finds
the rule far above the always-positive level; the per-label thresholds come from validation only;
predict, evaluate, serve and the ONNX export answer the same labels; both table layouts parse and
what is not supported is refused naming its flag, file or line."""
from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import tuneforge
from tuneforge.core.data.multilabel import read_multilabel_images
from tuneforge.deploy.predictor import Predictor
from tuneforge.deploy.serve import ServeSettings, create_app
from tuneforge.errors import ConfigError, DataError

from test_multilabel import assert_onnx_answers_as_torch  # tests/ is on sys.path (rootdir conftest)

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 50, 220)}
LABELS = sorted(COLOURS)


def draw(present: list[str], r: random.Random, side: int = 24) -> Image.Image:
    """A grey-ish image with a square of each colour in `present` (7x7 at 24 px), placed so none
    hides another."""
    im = Image.new("RGB", (24, 24), tuple(r.randint(90, 160) for _ in range(3)))
    corners = r.sample([(1, 1), (15, 1), (1, 15), (15, 15), (8, 8)], len(present))
    for c, (x, y) in zip(present, corners):
        x, y = x + r.randint(0, 1), y + r.randint(0, 1)
        im.paste(COLOURS[c], (x, y, x + 7, y + 7))
    return im if side == 24 else im.resize((side, side), Image.NEAREST)


def write_table(root: Path, name: str, n: int, seed: int, only_none: bool = False, folder: str = "img",
                side: int = 24) -> tuple[Path, np.ndarray]:
    """root/NAME.csv (path,labels) with its images in root/FOLDER/; returns it and its (n, 3) 0/1 labels.
    (tests/test_readme.py builds the README's findings.csv with it.)"""
    r = random.Random(seed)
    (root / folder).mkdir(parents=True, exist_ok=True)
    lines, y = ["path,labels"], []
    for i in range(n):
        present = [] if only_none else [c for c in COLOURS if r.random() < 0.45]
        draw(present, r, side).save(root / folder / f"{name}_{i}.png")
        lines.append(f"{folder}/{name}_{i}.png,{'|'.join(present)}")
        y.append([c in present for c in LABELS])
    (root / f"{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / f"{name}.csv", np.array(y, dtype=float)


def fit(root: Path, test: Path, out: str, **kw):
    return tuneforge.fit(data=str(root / "train.csv"), test=str(test), image_column="path", label_column="labels",
                         multi_label=True, model="fast-cnn", image_size=24, epochs=5, lr=3e-3, batch_size=32, val_fraction=0.25,
                         out=str(root / out),
                         progress=False, **{"baseline": False, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel_images")
    write_table(root, "train", 240, 0)
    test, y = write_table(root, "test", 80, 1)
    return root, test, y, fit(root, test, "run", baseline=True)


def test_the_model_finds_the_colours_well_above_chance(trained):
    root, test, y, result = trained
    report = result.report
    m = report["test"]
    # predicting every label for every image (recall 1) is the chance anchor: F1 = 2p / (1 + p)
    chance = 2 * y.mean() / (1 + y.mean())
    assert m["micro_f1"] >= 0.85 and m["micro_f1"] > chance + 0.2, (m["micro_f1"], chance)
    assert m["mAP"] >= 0.9 and set(m["per_label"]) == set(LABELS)
    assert report["task"] == "multi-label" and report["config"]["monitor"] == "val_micro_f1"
    bundle = json.loads((result.run_dir / "model" / "config.json").read_text())
    assert bundle["task"] == "image-multilabel" and len(bundle["thresholds"]) == 3
    assert bundle["data"]["image_column"] == "path"
    # the one-vs-rest linear probe of efficientnet_lite0's frozen features, thresholds tuned the same way
    assert report["baseline"]["metric"] == "micro_f1" and report["baseline"]["test"]["micro_f1"] > chance
    html = (result.run_dir / "report.html").read_text()
    assert "Per-label metrics (test)" in html and "micro-F1" in html and "Model vs baseline" in html


def test_thresholds_are_tuned_on_validation_and_test_rows_never_change_them(trained):
    root, test, y, result = trained
    other, _ = write_table(root, "other", 30, 7, only_none=True)  # other test rows: every label absent
    again = fit(root, other, "run_other")
    assert again.report["thresholds"] == result.report["thresholds"]
    first = json.loads((result.run_dir / "model" / "config.json").read_text())["thresholds"]
    assert json.loads((again.run_dir / "model" / "config.json").read_text())["thresholds"] == first
    assert again.report["val"]["micro_f1"] == pytest.approx(result.report["val"]["micro_f1"], abs=1e-9)


def test_predict_evaluate_serve_and_onnx_answer_the_same_labels(trained, tmp_path, live_server):
    root, test, y, result = trained
    run = result.run_dir
    images = [str(root / line.split(",")[0]) for line in test.read_text().splitlines()[1:]]
    answers = tuneforge.predict(run, images)
    # the thresholds decide: predict's label sets reproduce the subset accuracy fit scored on test
    right = [set(a["predicted"]) == {c for c, v in zip(LABELS, row) if v} for a, row in zip(answers, y)]
    assert np.mean(right) == pytest.approx(result.report["test"]["subset_accuracy"]) and np.mean(right) >= 0.6
    assert all(a["label"] == "|".join(a["predicted"]) for a in answers)
    assert all({"probability", "threshold", "above"} <= set(t) for t in answers[0]["top"])
    ev = tuneforge.evaluate(run, test, out=tmp_path / "eval", progress=False)
    assert ev["test"]["micro_f1"] == pytest.approx(result.report["test"]["micro_f1"], abs=1e-6)
    assert ev["test"]["n"] == len(y)

    onnx = tmp_path / "onnx"
    tuneforge.export(run, onnx, format="onnx")
    config = json.loads((onnx / "config.json").read_text())
    assert config["onnx"]["max_abs_diff"] < 1e-4 and config["thresholds"] == list(result.report["thresholds"].values())
    task = Predictor(onnx).task
    assert_onnx_answers_as_torch(onnx, [task.prepare(image=f) for f in sorted((root / "img").glob("test_*.png"))[:12]], 3)

    base = live_server(create_app(run / "model", ServeSettings(backend="torch")), ready=True)
    for path, answer in list(zip(images, answers))[:3]:
        reply = httpx.post(f"{base}/v1/predict", files={"file": ("x.png", Path(path).read_bytes(), "image/png")}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["predicted"] == answer["predicted"]
        assert [t["probability"] for t in reply.json()["top"]] == pytest.approx([t["probability"] for t in answer["top"]], abs=1e-5)
    assert "body.predicted" in httpx.get(f"{base}/").text  # the try-it page lists the labels above their thresholds


def test_pipe_and_01_column_layouts_parse_the_same(tmp_path):
    table, y = write_table(tmp_path, "t", 6, 3)
    pipe = read_multilabel_images(table, "path", "labels")
    rows = [line.split(",") for line in table.read_text().splitlines()[1:]]
    wide = tmp_path / "wide.csv"
    wide.write_text("image,red,green,blue\n" + "".join(
        f"{p},{int('red' in l)},{int('green' in l)},{int('blue' in l)}\n" for p, l in rows))
    cols = read_multilabel_images(wide, "image", "label", ["blue", "green", "red"])
    assert pipe.files == cols.files and pipe.classes == cols.classes == LABELS
    assert np.array_equal(pipe.labels.numpy(), y) and np.array_equal(cols.labels.numpy(), y)


def test_what_is_not_supported_is_refused_naming_the_flag_file_or_line(tmp_path):
    table, _ = write_table(tmp_path, "t", 8, 4)
    folders = tmp_path / "folders"
    for c in ("a", "b"):
        (folders / c).mkdir(parents=True)
        draw([], random.Random(0)).save(folders / c / "x.png")
    with pytest.raises(ConfigError, match="--multi-label: .* table"):
        tuneforge.fit(data=str(folders), multi_label=True, model="fast-cnn", out=str(tmp_path / "r"), progress=False)
    with pytest.raises(ConfigError, match="--augment .*mixup"):
        tuneforge.fit(data=str(table), label_column="labels", multi_label=True, model="fast-cnn", augment="flip,mixup=0.2",
                      out=str(tmp_path / "r"), progress=False)
    with pytest.raises(DataError, match="--image-column: .*no column 'pth'"):
        tuneforge.fit(data=str(table), image_column="pth", label_column="labels", multi_label=True, model="fast-cnn",
                      out=str(tmp_path / "r"), progress=False)
    (tmp_path / "img" / "t_2.png").unlink()
    with pytest.raises(DataError, match=r"t.csv line 4: no image file .*t_2.png"):
        tuneforge.fit(data=str(table), label_column="labels", multi_label=True, model="fast-cnn", out=str(tmp_path / "r"),
                      progress=False)
    with pytest.raises(ConfigError, match="--model minilm is not an image model"):
        tuneforge.fit(data=str(table), label_column="labels", multi_label=True, model="minilm", out=str(tmp_path / "r"),
                      progress=False, skip_bad_rows=True)


def test_search_refuses_an_objective_multi_label_fits_do_not_report(trained, tmp_path):
    root, test, y, result = trained
    spec = {"data": str(root / "train.csv"), "image_column": "path", "multi_label": True, "label_column": "labels",
            "model": "fast-cnn", "image_size": 24, "epochs": 1, "baseline": False, "progress": False}
    with pytest.raises(ConfigError, match="--objective accuracy: a multi-label fit does not report it"):
        tuneforge.search(fit=spec, space={"lr": {"choice": [3e-3]}}, out=tmp_path / "s0", trials=1, objective="accuracy")


@pytest.mark.e2e
def test_search_optimises_a_multi_label_metric_of_images(trained, tmp_path):
    root, test, y, result = trained
    spec = {"data": str(root / "train.csv"), "image_column": "path", "multi_label": True, "label_column": "labels",
            "model": "fast-cnn", "image_size": 24, "epochs": 2, "val_fraction": 0.25, "baseline": False, "progress": False}
    found = tuneforge.search(fit=spec, space={"lr": {"choice": [3e-3]}}, out=tmp_path / "s1", trials=1, objective="mAP")
    assert found["objective"] == "mAP" and found["direction"] == "maximize"
    trial = json.loads((Path(found["best"]["run_dir"]) / "report.json").read_text())
    assert trial["task"] == "multi-label" and found["best"]["value"] == pytest.approx(trial["val"]["mAP"])


def test_an_ensemble_of_image_multilabel_runs_averages_their_probabilities(trained, tmp_path):
    root, test, y, result = trained
    other = fit(root, test, "run_seed1", seed=1)  # another split, order and initialisation
    ens = tuneforge.ensemble([result.run_dir, other.run_dir], tmp_path / "ens", weights=[3, 1])
    images = [str(root / line.split(",")[0]) for line in test.read_text().splitlines()[1:13]]
    members = [tuneforge.predict(r, images) for r in (result.run_dir, other.run_dir)]
    got = tuneforge.predict(ens["_dir"], images)
    for a, b, e in zip(*members, got):
        pa, pb, pe = ({t["label"]: t["probability"] for t in x["top"]} for x in (a, b, e))
        for label in LABELS:
            assert pe[label] == pytest.approx(0.75 * pa[label] + 0.25 * pb[label], abs=1e-5)
    ev = tuneforge.evaluate(ens["_dir"], test, out=tmp_path / "eval", progress=False)
    assert ev["test"]["n"] == len(y) and ev["test"]["micro_f1"] > 2 * y.mean() / (1 + y.mean())
