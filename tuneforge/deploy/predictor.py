"""Predictor: a bundle plus exactly the preprocessing it was trained with, run by eager PyTorch
or ONNX Runtime; EnsemblePredictor: the same interface over an ensemble bundle's members
(core/ensemble.py). `predict`, `evaluate`, batch prediction and the server all go through
`open_predictor`, which gives the one a folder needs."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..core.bundle import bundle_file, load_bundle, read_bundle_config
from ..core.device import channels_last, resolve_device
from ..core.ensemble import class_order, is_ensemble, read_ensemble, weighted_mean
from ..errors import BundleError, ConfigError, DataError
from ..tasks.registry import Task, outputs_in_order, softmax, task_for
from .onnx import eager_logits, onnx_providers, run_session, session

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
_softmax = softmax  # the name other modules used


class Predictor:
    """backend: 'torch' (safetensors weights), 'onnx' (model.onnx), 'onnx-int8' (model.int8.onnx)
    or 'auto' (ONNX when the bundle has it, else torch). ONNX backends never build the PyTorch
    model, so they start fast and need only onnxruntime to run. busy_wait: let ONNX Runtime's
    threads spin between operators (best when nothing else needs the cores). max_pixels:
    uploaded images announcing more pixels are refused before decoding (default: the image
    Task's). device: where the model runs ('cpu', 'cuda', 'cuda:N', 'mps' or 'auto': a GPU when
    there is one); the torch backend moves the model there, the ONNX backends ask ONNX Runtime
    for its CUDA provider on a CUDA device (core/device.py refuses a device that is absent)."""

    def __init__(self, bundle: str | Path, threads: int = 0, backend: str = "torch", busy_wait: bool = True,
                 max_pixels: int | None = None, device: str = "cpu"):
        if backend not in BACKENDS:
            raise ConfigError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
        self.device = resolve_device(device)
        config = read_bundle_config(bundle)
        if backend == "auto":
            backend = "onnx" if config.get("onnx") else "torch"
        self.backend = backend
        self.model: torch.nn.Module | None = None
        self._session = None
        if backend == "torch":
            if threads:
                torch.set_num_threads(threads)
            self.model, self.config = load_bundle(bundle)
            # channels-last convolutions: 1.3-1.9x the images/s of eager PyTorch at batch 32 on
            # this CPU (efficientnet_lite0, 64 px; BENCHMARKS.md); 4-D weights only, so text
            # models are untouched
            if channels_last(self.device, True):
                self.model = self.model.to(memory_format=torch.channels_last)
                if hasattr(self.model, "channels_last"):  # image classifiers also lay out their input so
                    self.model.channels_last = True
            self.model = self.model.to(self.device)
        else:
            key = "onnx" if backend == "onnx" else "onnx_int8"
            if not config.get(key):
                raise BundleError(f"{config['_dir']}: the bundle has no {backend} model; export it with "
                                  f"`tuneforge export RUN --format onnx{' --quantize int8' if key == 'onnx_int8' else ''}`")
            self.config = config
            self._session = session(bundle_file(config, config[key]["file"]), threads, busy_wait,
                                    onnx_providers(self.device, explicit=device != "auto"))
        self.task: Task = task_for(self.config)
        if max_pixels is not None:
            # the image Task itself, or the one a multimodal/aligned Task decodes its images with
            for t in (self.task, getattr(self.task, "_image", None)):
                if t is not None and hasattr(t, "max_pixels"):
                    t.max_pixels = max_pixels
        self.classes: list[str] = self.config.get("classes") or []
        self.pre: dict = self.config["preprocessing"]

    @property
    def name(self) -> str:
        return self.config.get("name", self.config["model"])

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """A collated batch (Task.collate) -> the graph's output: (N, C) logits for a classifier,
        (N, 1) for a regressor, (N, E) embeddings for an aligned pair. The torch graph is built
        per call: `evaluate --tta/--no-tta` changes the preprocessing after loading."""
        if self._session is not None:
            return run_session(self._session, batch)
        return eager_logits(self.task.graph(self.model), self.task, batch, self.device)

    def outputs(self, rows: list[dict], batch_size: int = 256) -> np.ndarray:
        """Graph outputs of every row (for `evaluate`), in row order; a row that cannot be used
        is a DataError. Batches are formed in length order (little padding for text) and put
        back in row order."""
        items = [self.prepare(r.get("image"), r.get("text"), r.get("values")) for r in rows]
        return outputs_in_order(self.task, items, self.logits, len(self.classes), batch_size)

    def probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 (N, 3, H, W) at the bundle's size -> (N, C) class probabilities, with the
        test-time augmentation the model was evaluated with."""
        images = np.asarray(images)
        out = [_softmax(self.logits({"images": images[i:i + batch_size]})) for i in range(0, len(images), batch_size)]
        return torch.from_numpy(np.concatenate(out)) if out else torch.zeros(0, len(self.classes))

    def prepare(self, image=None, text: str | None = None, values=None) -> dict[str, np.ndarray]:
        """One raw example (image bytes/path/array, text, or a numeric sequence) -> model inputs;
        DataError if unusable."""
        return self.task.prepare(image=image, text=text, values=values)

    def top_k(self, items: list[dict[str, np.ndarray]], k: int = 5) -> list[dict]:
        """Prepared examples -> one answer each, in one batch: for a classifier
        {"label", "top": [{"label", "probability"}...]}; what else a task answers is its own
        (`Task.results`: a value for a regressor, an embedding for an aligned pair)."""
        if not items:
            return []
        return self.task.results(self.logits(self.task.collate(items)), items, k)

    def predict_files(self, files: list[Path], top_k: int = 5, batch_size: int = 256,
                      on_progress: Callable[[int], None] | None = None) -> list[dict]:
        """One dict per file: {"path", "label", "top"} or {"path", "error"} for a file that cannot
        be read. Works through the files in chunks, so memory stays flat on big folders."""
        return list(self.iter_predict([{"path": str(f), "image": f} for f in files], top_k, batch_size, on_progress))

    def iter_predict(self, rows: Iterable[dict], top_k: int = 5, batch_size: int = 256,
                     on_progress: Callable[[int], None] | None = None) -> Iterable[dict]:
        """Rows with "image" (path/bytes), "text" or "values" plus any id fields -> the same rows,
        without raw pixels, with the task's answer ("label"/"top", ...) or "error", in order."""
        chunk: list[dict] = []

        def flush():
            prepared, good = [], []
            for r in chunk:
                try:
                    prepared.append(self.prepare(r.get("image"), r.get("text"), r.get("values")))
                    good.append(r)
                except DataError as e:
                    r["error"] = str(e)
            results = iter(self.top_k(prepared, top_k))
            for r in chunk:
                # ids stay, raw pixels do not; a path is shown as text
                shown = {k: (str(v) if isinstance(v, Path) else v) for k, v in r.items() if k != "image"}
                yield {**shown, **(next(results) if "error" not in r else {})}
            if on_progress:
                on_progress(len(chunk))

        for row in rows:
            chunk.append(dict(row))
            if len(chunk) == batch_size:
                yield from flush()
                chunk = []
        if chunk:
            yield from flush()


class EnsembleTask(Task):
    """The Task of an ensemble: a prepared example holds every member's own prepared example
    (members may differ in preprocessing: a TF-IDF member beside a MiniLM one), a batch every
    member's own batch. What the outputs mean, how tables and labelled data are read, is the
    first member's Task (`base`, built without its binary decision threshold and, for
    multi-label, with the ensemble's thresholds): the ensemble's outputs are in its format."""

    def __init__(self, base: Task, members: list[Task]):
        super().__init__(base.config)
        self.base, self.members = base, members
        self.name, self.inputs, self.score = base.name, base.inputs, base.score

    def __getattr__(self, name: str):
        # everything not about running the members (rows, labelled, results, values, target,
        # thresholds ...) is the first member's
        if name in ("base", "members"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def prepare(self, image=None, text: str | None = None, values=None) -> dict:
        return {"members": [t.prepare(image=image, text=text, values=values) for t in self.members]}

    def collate(self, items: list[dict]) -> dict:
        return {"members": [t.collate([it["members"][i] for it in items]) for i, t in enumerate(self.members)]}

    def length(self, item: dict) -> int:
        return max(t.length(it) for t, it in zip(self.members, item["members"]))

    def results(self, outputs: np.ndarray, items: list[dict], k: int = 5) -> list[dict]:
        return self.base.results(outputs, items, k)

    def rows(self, items: list[str]) -> list[dict]:
        return self.base.rows(items)

    def table_rows(self, path: Path, column: str | None = None) -> list[dict]:
        return self.base.table_rows(path, column)

    def folder_rows(self, path: Path) -> list[dict]:
        return self.base.folder_rows(path)

    def labelled(self, data: str | Path, **options):
        """The first member's labelled rows; image rows it decoded at its own size are given to
        members that decode at another size as their files instead (each member decodes them as
        it was trained)."""
        got = self.base.labelled(data, **options)
        decoded = bool(got.rows) and isinstance(got.rows[0].get("image"), np.ndarray)
        size = lambda t: (t.pre.get("image_size"), t.pre.get("resize", "crop"))  # noqa: E731
        if decoded and any(size(t) != size(self.base) for t in self.members):
            paths = got.examples.get("paths") or []
            if len(paths) != len(got.rows) or not all(Path(p).is_file() for p in paths):
                raise DataError(f"{data}: the ensemble's members decode images at different sizes; evaluate it on "
                                "class folders (their files are decoded by each member)")
            got.rows = [{**r, "image": Path(p)} for r, p in zip(got.rows, paths)]
        return got


class EnsemblePredictor(Predictor):
    """An ensemble bundle with the Predictor's interface: each member runs as its own Predictor
    (same backend, threads and device), and `logits` combines their outputs with the ensemble's
    weights into the first member's output format, so the Task's results and `evaluate`'s scores
    read the combination: the log of the weighted mean probabilities for a classifier (softmax
    gives the mean back), the weighted mean probabilities for multi-label (its graph answers
    probabilities), the weighted mean value standardised by the first member's target scaling
    for a regressor. backend 'auto' lets each member choose."""

    def __init__(self, bundle: str | Path, threads: int = 0, backend: str = "torch", busy_wait: bool = True,
                 max_pixels: int | None = None, device: str = "cpu"):
        self.config = read_ensemble(bundle)
        self.members = [Predictor(m["dir"], threads, backend, busy_wait, max_pixels, device)
                        for m in self.config["members"]]
        self.weights = np.asarray(self.config["weights"], np.float64)
        self.combine: str = self.config["combine"]
        self.device = self.members[0].device
        self.backend = "+".join(dict.fromkeys(m.backend for m in self.members))
        self.model, self._session = None, None
        self.classes = list(self.config.get("classes") or [])
        self.orders = [class_order(self.classes, m.classes) for m in self.members] if self.classes else None
        first = dict(self.members[0].config)
        first.pop("decision", None)  # a member's recall threshold was chosen for its own probabilities
        if self.combine == "multilabel":
            first["thresholds"] = weighted_mean(
                [np.asarray(m.task.thresholds, np.float64)[o] for m, o in zip(self.members, self.orders)],
                self.weights).tolist()
            first["classes"] = self.classes
        self.task = EnsembleTask(task_for(first), [m.task for m in self.members])
        self.pre = {}

    def parts(self, batch: dict) -> list[np.ndarray]:
        """Each member's contribution on a batch: class probabilities in the ensemble's class
        order, or values in the target's units."""
        out = []
        for i, (m, b) in enumerate(zip(self.members, batch["members"])):
            raw = m.logits(b)
            if self.combine == "regression":
                out.append(m.task.values(raw))
            elif self.combine == "multilabel":
                out.append(raw.astype(np.float64)[:, self.orders[i]])
            else:
                out.append(softmax(raw.astype(np.float64))[:, self.orders[i]])
        return out

    def logits(self, batch: dict) -> np.ndarray:
        """Every member's outputs, combined by weight, in the first member's output format."""
        return self.combined(weighted_mean(self.parts(batch), self.weights))

    def probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities of uint8 (N, 3, H, W) images when every member decodes at that size."""
        images = np.asarray(images)
        items = [self.prepare(image=im) for im in images]  # a member of another size refuses the array, by size
        out = [softmax(self.logits(self.task.collate(items[i:i + batch_size]))) for i in range(0, len(items), batch_size)]
        return torch.from_numpy(np.concatenate(out)) if out else torch.zeros(0, len(self.classes))

    def combined(self, mean: np.ndarray) -> np.ndarray:
        """A weighted mean (of `parts`) as the graph output the ensemble's Task reads."""
        if self.combine == "regression":
            scale_mean, std = self.task.target
            return ((mean - scale_mean) / (std or 1.0)).astype(np.float32)[:, None]
        if self.combine == "multilabel":
            return mean.astype(np.float32)
        return np.log(np.clip(mean, 1e-30, None))


def open_predictor(bundle: str | Path, **options) -> Predictor:
    """The Predictor of a bundle or run folder, or the EnsemblePredictor of an ensemble bundle
    (same keywords)."""
    return (EnsemblePredictor if is_ensemble(bundle) else Predictor)(bundle, **options)
