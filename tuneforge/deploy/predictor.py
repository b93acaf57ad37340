"""Predictor: a bundle plus exactly the preprocessing it was trained with, run by eager PyTorch
or ONNX Runtime. `predict`, `evaluate`, batch prediction and the server all go through it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..errors import BundleError, ConfigError
from ..core.bundle import bundle_file, load_bundle, read_bundle_config
from ..tasks.registry import Task, task_for

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


class Predictor:
    """backend: 'torch' (safetensors weights), 'onnx' (model.onnx), 'onnx-int8' (model.int8.onnx)
    or 'auto' (ONNX when the bundle has it, else torch). ONNX backends never build the PyTorch
    model, so they start fast and need only onnxruntime to run. busy_wait: let ONNX Runtime's
    threads spin between operators (best when nothing else needs the cores)."""

    def __init__(self, bundle: str | Path, threads: int = 0, backend: str = "torch", busy_wait: bool = True):
        if backend not in BACKENDS:
            raise ConfigError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
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
            self.model = self.model.to(memory_format=torch.channels_last)
            if hasattr(self.model, "channels_last"):  # image classifiers also lay out their input so
                self.model.channels_last = True
        else:
            key = "onnx" if backend == "onnx" else "onnx_int8"
            if not config.get(key):
                raise BundleError(f"{config['_dir']}: the bundle has no {backend} model; export it with "
                                  f"`tuneforge export RUN --format onnx{' --quantize int8' if key == 'onnx_int8' else ''}`")
            from .onnx import session
            self.config = config
            self._session = session(bundle_file(config, config[key]["file"]), threads, busy_wait)
        self.task: Task = task_for(self.config)
        self.classes: list[str] = self.config["classes"]
        self.pre: dict = self.config["preprocessing"]

    @property
    def name(self) -> str:
        return self.config.get("name", self.config["model"])

    def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """A collated batch (Task.collate) -> (N, C) logits. The torch graph is built per call:
        `evaluate --tta/--no-tta` changes the preprocessing after loading."""
        if self._session is not None:
            from .onnx import run_session
            return run_session(self._session, batch)
        from .onnx import eager_logits
        return eager_logits(self.task.graph(self.model), self.task, batch)

    def probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 (N, 3, H, W) at the bundle's size -> (N, C) class probabilities, with the
        test-time augmentation the model was evaluated with."""
        images = np.asarray(images)
        out = [_softmax(self.logits({"images": images[i:i + batch_size]})) for i in range(0, len(images), batch_size)]
        return torch.from_numpy(np.concatenate(out)) if out else torch.zeros(0, len(self.classes))

    def prepare(self, image=None, text: str | None = None) -> dict[str, np.ndarray]:
        """One raw example (image bytes/path/array and/or text) -> model inputs; DataError if unusable."""
        return self.task.prepare(image=image, text=text)

    def top_k(self, items: list[dict[str, np.ndarray]], k: int = 5) -> list[dict]:
        """Prepared examples -> [{"label", "top": [{"label", "probability"}...]}] in one batch."""
        if not items:
            return []
        probs = _softmax(self.logits(self.task.collate(items)).astype(np.float64))
        k = max(1, min(k, len(self.classes)))
        idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        out = []
        for p, ix in zip(probs, idx):
            top = [{"label": self.classes[c], "probability": round(float(p[c]), 6)} for c in ix]
            out.append({"label": top[0]["label"], "top": top})
        return out

    def predict_files(self, files: list[Path], top_k: int = 5, batch_size: int = 256,
                      on_progress: Callable[[int], None] | None = None) -> list[dict]:
        """One dict per file: {"path", "label", "top"} or {"path", "error"} for a file that cannot
        be read. Works through the files in chunks, so memory stays flat on big folders."""
        return list(self.iter_predict([{"path": str(f), "image": f} for f in files], top_k, batch_size, on_progress))

    def iter_predict(self, rows: Iterable[dict], top_k: int = 5, batch_size: int = 256,
                     on_progress: Callable[[int], None] | None = None) -> Iterable[dict]:
        """Rows with "image" (path/bytes) and/or "text" plus any id fields -> the same rows, without
        the raw input, with "label"/"top" or "error", in order."""
        from ..errors import DataError
        chunk: list[dict] = []

        def flush():
            prepared, good = [], []
            for r in chunk:
                try:
                    prepared.append(self.prepare(r.get("image"), r.get("text")))
                    good.append(r)
                except DataError as e:
                    r["error"] = str(e)
            results = iter(self.top_k(prepared, top_k))
            for r in chunk:
                shown = {k: v for k, v in r.items() if k != "image"}  # ids stay, raw pixels do not
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
