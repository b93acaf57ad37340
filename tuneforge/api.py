"""The Python API; the CLI verbs call exactly these functions. A thin facade: `fit` finds the
kind of task (tuneforge/tasks registry), refuses settings that kind never reads, writes the run
folder and hands over to the kind's own fit; the rest dispatch on a bundle's task.

    import tuneforge
    run = tuneforge.fit(data="photos/", model="efficientnet_lite0", epochs=5)
    print(run.report["test"]["accuracy"])
"""
from __future__ import annotations

import time
from pathlib import Path

from .config import AlignConfig, FitConfig, PretrainConfig, refuse_unread
from .core.bundle import load_bundle, read_bundle_config
from .core.data import list_images, load_image_folder
from .core.metrics import classification_metrics
from .core.models import Classifier
from .core.report import print_summary, write_report
from .core.run import FitResult, open_run, settings as run_settings, setup
from .deploy.predictor import Predictor
from .recipes import RECIPES
from .tasks import PLUGINS, plugin_for

__all__ = ["fit", "evaluate", "predict", "load", "export", "serve", "batch_predict", "align", "retrieve", "zeroshot",
           "embed", "pretrain", "FitResult"]


def fit(config: FitConfig | None = None, **kwargs) -> FitResult:
    """Fine-tune (or train) a model; every keyword is a FitConfig field. The data says the kind
    of task (image folders, text or sequence tables, image+text tables): the same engine,
    reports and bundle for each."""
    cfg, resume_dir = run_settings(FitConfig, config, kwargs)
    plugin = plugin_for(cfg)
    given = {**(config.explicit() if config else {}), **kwargs}
    defaults = {f.name: f.default for f in FitConfig.offered()}
    # a setting given at its default value (a config.yaml of another kind, say) is not refused
    named = {k.replace("-", "_") for k, v in given.items() if v != defaults.get(k.replace("-", "_"))} - {"resume", "out"}
    recipe = set(RECIPES[cfg.recipe].settings) - named if cfg.recipe and not resume_dir else set()
    refuse_unread(cfg, named, plugin.reads(FitConfig), plugin.name, recipe)
    if plugin.resolve:
        plugin.function("resolve")(cfg)
    name = Path(cfg.model[3:]).name if cfg.model.startswith("hf:") else cfg.model  # hf:/path/to/model -> model
    return plugin.function("fit")(cfg, open_run(cfg, resume_dir, name))


def pretrain(config: PretrainConfig | None = None, **kwargs):
    """Self-supervised pretraining on unlabeled images, or MLM on texts; every keyword is a
    PretrainConfig field. `fit --init RUN` starts from its backbone."""
    return PLUGINS["pretrain"].function("fit")(config, **kwargs)


def align(config: AlignConfig | None = None, **kwargs):
    """Align an image and a text encoder on image-caption pairs; every keyword is an AlignConfig field."""
    return PLUGINS["align"].function("fit")(config, **kwargs)


def retrieve(*args, **kwargs):
    """Text -> images or image -> texts with an aligned pair (tuneforge/tasks/align)."""
    from .tasks.align.workflow import retrieve as _retrieve
    return _retrieve(*args, **kwargs)


def zeroshot(*args, **kwargs):
    """Classify images by class-name prompts with an aligned pair (tuneforge/tasks/align)."""
    from .tasks.align.workflow import zeroshot as _zeroshot
    return _zeroshot(*args, **kwargs)


def embed(*args, **kwargs):
    """Embeddings of a folder of images with an aligned pair, saved as safetensors."""
    from .tasks.align.workflow import embed as _embed
    return _embed(*args, **kwargs)


def load(path: str | Path) -> Classifier:
    """The model of a run folder or bundle, in eval mode."""
    return load_bundle(path)[0]


def evaluate(run: str | Path, data: str | Path, out: str | Path | None = None, strict: bool = False,
             cache_dir: str | None = None, batch_size: int = 256, threads: int = 0, progress: bool = True,
             tta: bool | None = None) -> dict:
    """Evaluate a trained model on a class-folder tree (its test/ subfolder if it has one);
    writes report.json/html into `out` (default RUN/eval-FOLDER) and returns the report.
    `tta` overrides the bundle's own test-time augmentation setting. A text model takes a
    labelled file with the columns it was trained on."""
    setup(threads)
    if read_bundle_config(run).get("task") == "image-text-classification":  # a labelled image+text table
        from .tasks.multimodal.evaluate import evaluate_table
        return evaluate_table(run, data, out, batch_size, progress)
    if read_bundle_config(run).get("task") == "text-classification":
        from .tasks.text.evaluate import evaluate_text
        return evaluate_text(run, data, out, batch_size, progress)
    predictor = Predictor(run)
    if tta is not None:
        predictor.pre["tta"] = "flip" if tta else None
    data = Path(data)
    folder = data / "test" if (data / "test").is_dir() else data
    pre = predictor.pre
    split = load_image_folder(folder, pre["image_size"], pre.get("resize", "crop"), classes=predictor.classes,
                              cache_dir=cache_dir, strict=strict)
    t0 = time.perf_counter()
    probs = predictor.probabilities(split.images, batch_size)  # with the bundle's own TTA setting
    logits = probs.clamp_min(1e-12).log()
    report = {"model": predictor.config["model"], "classes": predictor.classes, "tta": predictor.pre.get("tta"),
              "test": classification_metrics(logits, split.labels, predictor.classes),
              "data": {"test": len(split), "folder": str(folder), "skipped": split.skipped},
              "wall_s": round(time.perf_counter() - t0, 2)}
    out = Path(out) if out else Path(predictor.config["_dir"]).parent / f"eval-{folder.resolve().name}"
    out.mkdir(parents=True, exist_ok=True)
    paths = write_report(out, report, None, {"images": split.images.numpy(), "logits": logits.numpy(),
                                             "targets": split.labels.numpy(), "paths": split.paths})
    report["html_path"] = str(paths["html"])
    if progress:
        print_summary(report)
    return report


def predict(run: str | Path, paths: list[str | Path], top_k: int = 5, batch_size: int = 256) -> list[dict]:
    """Top-k labels for image files and folders; unreadable files get {"path", "error"}.
    For a text model: strings, files (one text per line) or '-' (standard input lines),
    each giving {"text", "label", "top"}."""
    if read_bundle_config(run).get("task") == "image-text-classification":  # tables, images and/or texts
        from .tasks.multimodal.evaluate import predict_rows
        return predict_rows(run, [str(p) for p in paths], top_k, batch_size)
    if read_bundle_config(run).get("task") == "text-classification":
        from .tasks.text.evaluate import TextPredictor, read_inputs
        return TextPredictor(run).predict_texts(read_inputs([str(p) for p in paths]), top_k, batch_size)
    predictor = Predictor(run)
    return predictor.predict_files(list_images(paths), top_k, batch_size)


# --- Deployment: export, serve, batch prediction (thin layers over tuneforge.export / tuneforge.serve) ---

def export(run: str | Path, out: str | Path, format: str = "safetensors", quantize: str | None = None,
           data: str | Path | None = None) -> dict:
    """Write a portable bundle of a run folder or bundle into `out`: safetensors weights,
    config.json, model card and, with format='onnx', a model.onnx checked against PyTorch on
    real images (and model.int8.onnx with quantize='int8', its test accuracy change measured).
    `data`: images to check/calibrate/measure with when `run` is not a run folder. Returns the
    bundle's config."""
    from .deploy.export import export_bundle
    setup(0)
    return export_bundle(run, out, format, quantize, data)


def serve(bundle: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          **settings) -> None:
    """Serve a bundle over HTTP until Ctrl-C: POST /v1/predict, /healthz, /readyz, /metrics, the
    try-it page at /. Other keywords: ServeSettings fields (backend, max_batch_size,
    max_wait_ms, max_queue, timeout_ms, max_body_mb, threads, busy_wait)."""
    from .deploy.serve import ServeSettings, run
    read_bundle_config(bundle)  # a wrong path fails here, by name, before a socket is opened
    setup(settings.get("threads", 0))
    run(bundle, ServeSettings(host=host, port=port, token=token, **settings))


def batch_predict(run: str | Path, source: str | Path, output: str | Path, top_k: int = 5, batch_size: int = 64,
                  column: str | None = None, backend: str = "torch", progress: bool = True) -> dict:
    """Predict a folder of images or a table (.csv/.tsv/.jsonl with a path or text column) into
    `output` (.csv or .jsonl), with a progress bar; returns {"rows", "errors", "output"}."""
    from .deploy.batch import predict_to_file
    setup(0)
    return predict_to_file(Predictor(run, backend=backend), source, output, top_k, batch_size, column, progress)
