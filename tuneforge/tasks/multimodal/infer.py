"""Image + text classification at inference: an image and/or a text per example."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.tokenizer import TextEncoding
from ...errors import DataError
from ..image.infer import ImageClassification
from ..registry import Task, register_task


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
