"""Tasks: what a bundle's `task` field means at inference time.

A task says which inputs a model takes ("image", "text", or both), turns raw inputs (file
bytes, paths, strings) into named arrays exactly as training did, stacks them into a batch, and
wraps the trained module into the graph that both eager PyTorch and ONNX run. The Predictor,
the ONNX exporter and the server only talk to this interface, so a text or multimodal task
plugs in by calling `register_task` with its own class; nothing else changes.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..augment import flip_tta
from ..data.images import _decode_one, decode_image
from ..errors import DataError

TASKS: dict[str, type["Task"]] = {}


def register_task(name: str):
    """Class decorator: `@register_task("text-classification")`."""
    def deco(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASKS[name] = cls
        return cls
    return deco


def task_for(config: dict) -> "Task":
    """The Task of a bundle config; an unknown task is a clear error, not a KeyError."""
    name = config.get("task", "image-classification")
    if name not in TASKS:
        from ..errors import BundleError
        raise BundleError(f"{config.get('_dir', 'bundle')}: task {name!r} is not known to this tuneforge "
                          f"(known: {', '.join(sorted(TASKS))}); upgrade tuneforge")
    return TASKS[name](config)


class Task:
    """Base class. `inputs` names the kinds of input the model takes; `input_names` are the
    graph's tensor inputs, in the order the graph's forward takes them."""

    name = ""
    inputs: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ()

    def __init__(self, config: dict):
        self.config = config
        self.pre: dict = config.get("preprocessing", {})

    def prepare(self, image: bytes | str | Path | np.ndarray | None = None, text: str | None = None) -> dict[str, np.ndarray]:
        """One raw example -> named arrays without a batch axis. Raises DataError with a message
        the server can show when the input cannot be used."""
        raise NotImplementedError

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Examples from `prepare` -> one batch (default: stack; text tasks pad here)."""
        return {k: np.stack([it[k] for it in items]) for k in self.input_names}

    def graph(self, model: nn.Module) -> nn.Module:
        """The module run at inference: named batch arrays (as tensors, positional in
        `input_names` order) -> logits. It holds the preprocessing that is not decoding."""
        raise NotImplementedError

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        """A batch with the right shapes and dtypes, for tracing when no real input is given."""
        raise NotImplementedError

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX axes that vary between calls (the batch axis at least)."""
        return {**{n: {0: "batch"} for n in self.input_names}, "logits": {0: "batch"}}


class ImageGraph(nn.Module):
    """uint8 images (N, 3, H, W) -> logits. Scaling to [0, 1] and the flip TTA the model was
    evaluated with live here (mean/std are buffers of the Classifier itself), so eager PyTorch,
    ONNX Runtime and a production client that only decodes and resizes all compute the same."""

    def __init__(self, model: nn.Module, scale: float, tta: bool):
        super().__init__()
        self.model, self.scale, self.tta = model, float(scale), tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() * self.scale
        logits = self.model(x)
        if self.tta:
            logits = flip_tta(self.model, x, logits)
        return logits


@register_task("image-classification")
class ImageClassification(Task):
    inputs = ("image",)
    input_names = ("images",)

    def prepare(self, image: bytes | str | Path | np.ndarray | None = None, text: str | None = None) -> dict[str, np.ndarray]:
        if image is None:
            raise DataError("this model classifies images: send an image (multipart field 'file')")
        size, resize = self.pre["image_size"], self.pre.get("resize", "crop")
        if isinstance(image, np.ndarray):
            if image.shape != (3, size, size) or image.dtype != np.uint8:
                raise DataError(f"image array must be uint8 (3, {size}, {size}), got {image.dtype} {image.shape}")
            return {"images": image}
        if isinstance(image, (str, Path)):
            arr, reason = _decode_one((str(image), size, resize))  # the training decoder, fast path included
            if arr is None:
                raise DataError(f"{image}: cannot read image ({reason})")
            return {"images": arr}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # PIL path: the same pixels as training's libjpeg-turbo path (tested there).
                return {"images": decode_image(io.BytesIO(image), size, resize)}
        except Exception as e:  # truncated, not an image, decompression bomb...
            from PIL import UnidentifiedImageError
            why = "not an image format PIL reads (JPEG, PNG, WebP, ...)" if isinstance(e, UnidentifiedImageError) \
                else f"{e.__class__.__name__}: {e}"
            raise DataError(f"cannot read the upload as an image ({why})") from None

    def graph(self, model: nn.Module) -> nn.Module:
        return ImageGraph(model, self.pre.get("scale", 1 / 255), self.pre.get("tta") == "flip").eval()

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        s = self.pre["image_size"]
        return {"images": np.random.default_rng(0).integers(0, 256, (n, 3, s, s), dtype=np.uint8)}


def describe(task: Task) -> dict[str, Any]:
    """What the server's page and /v1/info show about a task."""
    return {"task": task.name, "inputs": list(task.inputs)}


class TextGraph(nn.Module):
    """Padded token ids and their mask -> logits: the dict batch a text Classifier takes, as
    positional tensors so the server and the Predictor call it like any other graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model({"input_ids": input_ids, "attention_mask": attention_mask})


@register_task("text-classification")
class TextClassification(Task):
    """Texts through the tokenizer or vocabulary saved in the bundle (`tokenizer` files are
    checksummed with the weights), truncated to the training max length, padded per batch."""

    inputs = ("text",)
    input_names = ("input_ids", "attention_mask")

    def __init__(self, config: dict):
        super().__init__(config)
        from ..fit_text import TextEncoding  # the training-side encoder: same ids, same truncation
        self.encoding = TextEncoding.load(Path(config["_dir"]), self.pre)

    def prepare(self, image: bytes | str | Path | np.ndarray | None = None, text: str | None = None) -> dict[str, np.ndarray]:
        if text is None or not str(text).strip():
            raise DataError('this model classifies text: send JSON {"text": "..."}')
        ids = self.encoding([str(text)])[0] or [self.encoding.pad_id]
        return {"input_ids": np.asarray(ids, dtype=np.int64)}

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        longest = max(len(it["input_ids"]) for it in items)
        ids = np.full((len(items), longest), self.encoding.pad_id, dtype=np.int64)
        mask = np.zeros((len(items), longest), dtype=np.int64)
        for r, it in enumerate(items):
            ids[r, :len(it["input_ids"])] = it["input_ids"]
            mask[r, :len(it["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def graph(self, model: nn.Module) -> nn.Module:
        return TextGraph(model).eval()

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}}

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        return self.collate([self.prepare(text="an example") for _ in range(n)])


class ImageTextGraph(nn.Module):
    """uint8 images, token ids, their mask and which inputs each row has -> logits (fusion
    models, tuneforge/models/fusion.py). Scaling to [0, 1] is inside, as for ImageGraph."""

    def __init__(self, model: nn.Module, scale: float):
        super().__init__()
        self.model, self.scale = model, float(scale)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                has_image: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        return self.model({"images": images.float() * self.scale, "input_ids": input_ids, "attention_mask": attention_mask,
                           "has_image": has_image.float(), "has_text": has_text.float()})


@register_task("image-text-classification")
class ImageTextClassification(Task):
    """An image and/or a text per example (a fusion model predicts from either alone: the
    missing one is flagged by has_image/has_text and replaced by its learned stand-in). The
    image is decoded as ImageClassification does, the text encoded as TextClassification does."""

    input_names = ("images", "input_ids", "attention_mask", "has_image", "has_text")

    def __init__(self, config: dict):
        super().__init__(config)
        self.inputs = tuple(self.pre.get("modalities", ("image", "text")))
        self._image = ImageClassification(config)
        self.encoding = None
        if "text" in self.inputs:
            from ..fit_text import TextEncoding
            self.encoding = TextEncoding.load(Path(config["_dir"]), self.pre)

    def prepare(self, image: bytes | str | Path | np.ndarray | None = None, text: str | None = None) -> dict[str, np.ndarray]:
        text = str(text) if text is not None and str(text).strip() else None
        image = None if "image" not in self.inputs else image
        text = None if "text" not in self.inputs else text
        if image is None and text is None:
            want = " and/or ".join({"image": "an image (multipart field 'file')", "text": "a text (field 'text')"}[m]
                                   for m in self.inputs)
            raise DataError(f"this model classifies {' + '.join(self.inputs)}: send {want}")
        s = self.pre["image_size"]
        out = {"images": self._image.prepare(image)["images"] if image is not None else np.zeros((3, s, s), np.uint8),
               "has_image": np.float32(image is not None), "has_text": np.float32(text is not None)}
        ids = self.encoding([text or ""])[0] if self.encoding else [0]
        out["input_ids"] = np.asarray(ids or [self.encoding.pad_id], dtype=np.int64)
        return out

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        longest = max(len(it["input_ids"]) for it in items)
        pad = self.encoding.pad_id if self.encoding else 0
        ids = np.full((len(items), longest), pad, dtype=np.int64)
        mask = np.zeros((len(items), longest), dtype=np.int64)
        for r, it in enumerate(items):
            ids[r, :len(it["input_ids"])] = it["input_ids"]
            mask[r, :len(it["input_ids"])] = 1
        return {"images": np.stack([it["images"] for it in items]), "input_ids": ids, "attention_mask": mask,
                "has_image": np.array([it["has_image"] for it in items], np.float32),
                "has_text": np.array([it["has_text"] for it in items], np.float32)}

    def graph(self, model: nn.Module) -> nn.Module:
        return ImageTextGraph(model, self.pre.get("scale", 1 / 255)).eval()

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {**super().dynamic_axes(), "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"}}

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        s = self.pre["image_size"]
        img = np.random.default_rng(0).integers(0, 256, (3, s, s), dtype=np.uint8)
        return self.collate([self.prepare(image=img, text="an example") for _ in range(n)])
