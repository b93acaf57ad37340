"""The Python API; the CLI verbs call exactly these functions. A thin facade: `fit` finds the
kind of task (tuneforge/tasks registry), refuses settings that kind never reads, writes the run
folder and hands over to the kind's own fit; evaluate, predict and batch prediction are the
same code for every kind, through the bundle's `Task` (how it reads inputs and data, and how its
outputs are scored) and the Predictor.

    import tuneforge
    run = tuneforge.fit(data="photos/", model="efficientnet_lite0", epochs=5)
    print(run.report["test"]["accuracy"])
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .config import AlignConfig, FitConfig, LrFindConfig, PretrainConfig, SearchConfig, build
from .core.bundle import load_bundle, read_bundle_config
from .core.decision import evaluate_decision
from .core.metrics import classification_metrics, multilabel_metrics
from .core.report import print_summary, write_report
from .core import leaderboard
from .core import run as core_run
from .core.data import frames
from .core.engine import Callback
from .core.fs import storage_errors
from .core.run import setup
from .core.ensemble import is_ensemble
from .deploy.batch import predict_to_file
from .deploy.ensemble import export_ensemble, make_ensemble
from .deploy.export import export_bundle
from .deploy.predictor import open_predictor
from .errors import ConfigError
from .tasks import PLUGINS, plugin_for
from .tasks.launch import launch
from .tasks.registry import Labelled, softmax
from .tasks.align import workflow

__all__ = ["fit", "lr_find", "Callback", "evaluate", "predict", "load", "export", "serve", "batch_predict", "align", "retrieve", "zeroshot",
           "embed", "pretrain", "runs", "search", "FitResult", "ensemble"]


@dataclass
class FitResult(core_run.FitResult):
    """What `fit` returns: `run_dir`, `model` (best weights), `report` (report.json's content),
    `config` (the resolved settings), `history` (one dict of metrics per epoch, as metrics.jsonl),
    and `predict`/`evaluate` on the run's bundle."""

    def predict(self, inputs: Any, top_k: int = 5, batch_size: int = 256) -> list[dict]:
        """Predictions for one input or a list (image paths, texts, ...), as `tuneforge.predict(run_dir, ...)`."""
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        return predict(self.run_dir, list(inputs), top_k, batch_size)

    def evaluate(self, data: str | Path, **options) -> dict:
        """This model's report on labelled `data`, as `tuneforge.evaluate(run_dir, data, ...)` (same keywords)."""
        return evaluate(self.run_dir, data, **options)


def fit(config: FitConfig | None = None, *, callbacks: Iterable[Callback] = (), **kwargs) -> FitResult:
    """Fine-tune (or train) a model; every keyword is a FitConfig field. The data says the kind
    of task (image folders, text or sequence tables, image+text tables): the same engine,
    reports and bundle for each. `data` (and `val`, `test`) may also be a pandas DataFrame (text
    and label columns; image path and label; image path, text and label) or a list of (image
    path, label) pairs: it is written into the run folder's data/ as the files the readers take.
    `callbacks`: your own `tuneforge.Callback`s, run by the training engine after its own.
    `lr="auto"` picks the learning rate by a range test first (see `lr_find`)."""
    result = _fit(config, kwargs, tuple(callbacks))
    return FitResult(**{f.name: getattr(result, f.name) for f in fields(core_run.FitResult)})


def lr_find(config: LrFindConfig | None = None, **kwargs) -> dict:
    """The learning-rate range test on the data, model and optimizer `fit` with the same settings
    would train: the rate grows exponentially from `start_lr` to `end_lr` over `num_steps` steps
    (stopping once the smoothed loss explodes), on a copy of the model. Writes plots/lr_find.png
    and lr_find.json into `out` (default runs/lr-find-MODEL-TIMESTAMP) and returns {"lrs",
    "losses" (smoothed), "raw_losses", "suggested" (steepest descent), "min_lr" (the minimum's
    rate / 10), "plot"}. `fit(lr="auto")` runs the same test and trains with "suggested"."""
    given = {**(config.explicit() if config else {}), **kwargs}
    checked = build(LrFindConfig, given).validate()  # unknown or fit-only settings are refused naming the flag
    options = {k: getattr(checked, k) for k in ("start_lr", "end_lr", "num_steps")}
    settings = {k: v for k, v in given.items() if k.replace("-", "_") not in options}
    return _fit(None, settings, range_test=options)


def _fit(config: FitConfig | None, kwargs: dict, callbacks: tuple = (), range_test: dict | None = None):
    """fit and lr_find: settings, the kind of task, the run folder, the kind's fit (which, with
    `range_test`, stops after the range test: its result is returned)."""
    staged = None
    if any(frames.in_memory(kwargs.get(k)) for k in frames.SPLITS):
        if kwargs.get("resume") or (config is not None and config.resume):
            raise ConfigError("--resume: the run keeps the data it started with (its data/ folder); give resume= "
                              "without data=")
        # written here first (the kind of task is told from the files), moved into the run folder below
        staged = Path(tempfile.mkdtemp(prefix="tuneforge-data-"))
    try:
        if staged is not None:
            kwargs = frames.materialise(kwargs, staged)
        adopt = (lambda run: _adopt(run, staged)) if staged is not None else None
        return launch(config, kwargs, callbacks, range_test, on_open=adopt)
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)


def _adopt(run: core_run.Run, staged: Path) -> None:
    """Move in-memory data written to `staged` into RUN/data and record the new paths in config.yaml
    (rewritten, atomically), so the run folder holds what it was trained on and --resume finds it."""
    target = run.dir / "data"
    with storage_errors(target):
        shutil.move(str(staged), str(target))
        staged.mkdir()  # for the caller's cleanup
    for key in frames.SPLITS:
        setattr(run.cfg, key, frames.relocate(getattr(run.cfg, key), staged, target))
    run.committed = False
    run.commit()


def pretrain(config: PretrainConfig | None = None, **kwargs):
    """Self-supervised pretraining on unlabeled images, or MLM on texts; every keyword is a
    PretrainConfig field. `fit --init RUN` starts from its backbone."""
    return PLUGINS["pretrain"].function("fit")(config, **kwargs)


def align(config: AlignConfig | None = None, **kwargs):
    """Align an image and a text encoder on image-caption pairs; every keyword is an AlignConfig field."""
    return PLUGINS["align"].function("fit")(config, **kwargs)


def search(config: SearchConfig | str | Path | None = None, **kwargs) -> dict:
    """Hyperparameter search (Optuna): every trial an ordinary fit into OUT/trials/NNNN, the best
    trial's bundle copied to OUT/best, OUT/report.html the leaderboard. `config`: the search
    file (its `fit:` and `space:` keys, and any SearchConfig setting) or a SearchConfig; keywords:
    SearchConfig fields, and `fit`/`space` dicts as the file's. Returns the study's report."""
    try:
        run_search = PLUGINS["search"].function("fit")
    except ModuleNotFoundError as e:
        if e.name != "optuna":
            raise
        raise ConfigError("tuneforge search needs Optuna: pip install 'tuneforge[search]'") from None
    return run_search(config, **kwargs)


def retrieve(*args, **kwargs):
    """Text -> images or image -> texts with an aligned pair (tuneforge/tasks/align)."""
    return workflow.retrieve(*args, **kwargs)


def zeroshot(*args, **kwargs):
    """Classify images by class-name prompts with an aligned pair (tuneforge/tasks/align)."""
    return workflow.zeroshot(*args, **kwargs)


def embed(*args, **kwargs):
    """Embeddings of a folder of images with an aligned pair, saved as safetensors."""
    return workflow.embed(*args, **kwargs)


def runs(*dirs: str | Path, sort: str | None = None, top: int | None = None) -> list[dict]:
    """The leaderboard of run folders (`tuneforge runs`): each of `dirs` is a run folder or a folder
    holding run folders (a study's trials, runs/). One dict per run, best first by `sort` (e.g.
    "val_accuracy", "val_macro_f1", "test_rmse"; default val accuracy, else val loss): "run",
    "model", "task", "state" (finished, stopped early, interrupted, failed, unfinished),
    "epochs_run", "wall_s", "settings", and every val/test metric of its report as "val_accuracy"..."""
    return leaderboard.leaderboard(list(dirs), sort, top)


def load(path: str | Path) -> torch.nn.Module:
    """The model of a run folder or bundle, in eval mode (a Classifier; an aligned pair for
    an `align` run). An ensemble bundle has no one module: `predict`/`evaluate` take it, and
    each of its members/I folders loads here."""
    if is_ensemble(path):
        raise ConfigError(f"{path}: an ensemble bundle has no single model to load; use tuneforge.predict/evaluate "
                          f"on it, or load one of its members ({Path(path) / 'members' / '0'})")
    return load_bundle(path)[0]


def ensemble(members: Iterable[str | Path], out: str | Path, weights: Iterable[float] | None = None,
             val: str | Path | None = None, batch_size: int = 256, device: str = "auto") -> dict:
    """Write an ensemble bundle into `out` from two or more run folders or bundles of the same
    kind (classifiers with the same classes, in any order; multi-label classifiers; regressors):
    the weighted mean of their probabilities (values for regressors). `weights`: one per member
    (normalised; default equal); `val`: a labelled validation table to choose them on instead
    (never the test set). Every verb that takes a bundle takes the ensemble. Returns its config."""
    return make_ensemble(list(members), out, None if weights is None else list(weights), val, batch_size, device)


def _classification(outputs: np.ndarray, targets: np.ndarray, task, labelled: Labelled) -> tuple[dict, dict]:
    # log-probabilities, not raw logits: the loss and the report's confidences are the
    # model's probabilities whatever the backend
    logits = torch.from_numpy(softmax(outputs.astype(np.float64)).astype(np.float32)).clamp_min(1e-12).log()
    return (classification_metrics(logits, torch.from_numpy(targets).long(), task.classes),
            {**labelled.examples, "logits": logits.numpy(), "targets": targets})


def _regression(outputs: np.ndarray, targets: np.ndarray, task, labelled: Labelled) -> tuple[dict, None]:
    pred = task.values(outputs)
    err = pred - targets.astype(np.float64)
    std = task.target[1] or 1.0
    # "loss" as fit reports it: the MSE on the standardised target
    t = targets.astype(np.float64)
    return {"n": int(len(err)), "rmse": float(np.sqrt((err ** 2).mean())), "mae": float(np.abs(err).mean()),
            "loss": float(((err / std) ** 2).mean()), "r2": float(1 - (err ** 2).sum() / max(((t - t.mean()) ** 2).sum(), 1e-12)),
            # a forecast: MAE over the naive forecast's MAE on the training period (tasks/forecast)
            **({"mase": float(np.abs(err).mean() / task.mase_scale)} if getattr(task, "mase_scale", None) else {})}, None


def _retrieval(outputs: np.ndarray, targets: np.ndarray, task, labelled: Labelled) -> tuple[dict, None]:
    images = targets < 0
    return workflow.retrieval_metrics(torch.from_numpy(outputs[images]), torch.from_numpy(outputs[~images]),
                             torch.from_numpy(targets[~images]).long()), None


def _multilabel(outputs: np.ndarray, targets: np.ndarray, task, labelled: Labelled) -> tuple[dict, None]:
    # the graph answers probabilities; their logits give the metrics' loss as fit reports it
    p = np.clip(outputs.astype(np.float64), 1e-12, 1 - 1e-12)
    return multilabel_metrics(np.log(p) - np.log1p(-p), targets, task.classes, list(task.thresholds)), None


# How `evaluate` scores a task's outputs against its targets, by `Task.score`.
SCORES = {"classification": _classification, "regression": _regression, "retrieval": _retrieval,
          "multilabel": _multilabel}


def evaluate(run: str | Path, data: str | Path, out: str | Path | None = None, strict: bool = False,
             cache_dir: str | None = None, batch_size: int = 256, threads: int = 0, progress: bool = True,
             tta: bool | None = None, device: str = "auto") -> dict:
    """Evaluate a trained model on labelled data read as its task reads it: an image model on a
    class-folder tree (its test/ subfolder if it has one), a text, sequence or image+text model
    on a table with the columns it was trained on, an aligned pair on a caption table
    (Recall@k both ways). Writes report.json/html into `out` (default RUN/eval-DATA) and
    returns the report. `tta` overrides an image model's own test-time augmentation. `device`:
    where the model runs (auto: a GPU when present)."""
    setup(threads)
    predictor = open_predictor(run, device=device)
    if tta is not None:
        for p in getattr(predictor, "members", [predictor]):  # an ensemble's members each
            p.pre["tta"] = "flip" if tta else None
    task = predictor.task
    labelled = task.labelled(data, strict=strict, cache_dir=cache_dir)
    t0 = time.perf_counter()
    outputs = predictor.outputs(labelled.rows, batch_size)
    metrics, examples = SCORES[task.score](outputs, labelled.targets, task, labelled)
    report = {"model": predictor.config["model"], "classes": predictor.classes, **labelled.report, "test": metrics,
              "data": labelled.info, "wall_s": round(time.perf_counter() - t0, 2)}
    if predictor.config.get("decision") and task.score == "classification":  # fit --target-recall's threshold
        report["decision"] = evaluate_decision(predictor.config["decision"], outputs, labelled.targets)
    out = Path(out) if out else Path(predictor.config["_dir"]).parent / f"eval-{labelled.name}"
    paths = write_report(out, report, None, examples)
    report["html_path"] = str(paths["html"])
    if progress:
        print_summary(report)
    return report


def predict(run: str | Path, paths: Iterable[str | Path] = (), top_k: int = 5, batch_size: int = 256,
            texts: Iterable[str] = (), device: str = "auto") -> list[dict]:
    """One answer per input, read as the model's task reads `predict`'s arguments: image files
    and folders ({"path", "label", "top"}, or {"path", "error"} for an unreadable file); texts,
    files of one text per line or '-' (standard input) ({"text", "label", "top"}); numeric
    sequences (JSON lists, or tables in the training layout; a regressor answers {"value"});
    image+text tables, images or texts; an aligned pair's images and texts ({"embedding"}).
    `texts` are classified as they are, never read as file names (after `paths`' answers).
    `device`: where the model runs (auto: a GPU when present)."""
    predictor = open_predictor(run, device=device)
    texts = list(texts or ())
    if texts and "text" not in predictor.task.inputs:
        raise ConfigError(f"--text: {run} is a {predictor.task.name} model and reads "
                          f"{' and '.join(predictor.task.inputs)}, not text")
    rows = predictor.task.rows([str(p) for p in paths]) if paths else []
    rows += [{"text": t} for t in texts]
    return list(predictor.iter_predict(rows, top_k, batch_size))


# --- Deployment: export, serve, batch prediction (thin layers over tuneforge.export / tuneforge.serve) ---

def export(run: str | Path, out: str | Path, format: str = "safetensors", quantize: str | None = None,
           data: str | Path | None = None) -> dict:
    """Write a portable bundle of a run folder or bundle into `out`: safetensors weights,
    config.json, model card and, with format='onnx', a model.onnx checked against PyTorch on
    real images (and model.int8.onnx with quantize='int8', its test accuracy change measured).
    `data`: images to check/calibrate/measure with when `run` is not a run folder. Returns the
    bundle's config."""
    setup(0)
    if is_ensemble(run):
        return export_ensemble(run, out, format, quantize, data)
    return export_bundle(run, out, format, quantize, data)


def serve(bundle: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          **settings) -> None:
    """Serve a bundle over HTTP until Ctrl-C: POST /v1/predict, /healthz, /readyz, /metrics, the
    try-it page at /. Other keywords: ServeSettings fields (backend, max_batch_size,
    max_wait_ms, max_queue, timeout_ms, max_body_mb, max_pixels, decode_threads, threads, busy_wait,
    token_file, device; the token may also come from $TUNEFORGE_TOKEN)."""
    from .deploy.serve import ServeSettings, run
    if not is_ensemble(bundle):
        read_bundle_config(bundle)  # a wrong path fails here, by name, before a socket is opened
    setup(settings.get("threads", 0))
    run(bundle, ServeSettings(host=host, port=port, token=token, **settings))


def batch_predict(run: str | Path, source: str | Path, output: str | Path, top_k: int = 5, batch_size: int = 64,
                  column: str | None = None, backend: str = "torch", progress: bool = True, device: str = "auto") -> dict:
    """Predict a folder of images or a table (.csv/.tsv/.jsonl with a path or text column) into
    `output` (.csv or .jsonl), with a progress bar; returns {"rows", "errors", "output"}."""
    setup(0)
    return predict_to_file(open_predictor(run, backend=backend, device=device), source, output, top_k, batch_size, column, progress)
