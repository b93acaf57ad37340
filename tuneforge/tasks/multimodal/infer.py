"""Image + text classification at inference: an image and/or a text per example, from
arguments, tables with the training columns, or labelled tables."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.data.images import is_image
from ...core.data.multimodal import read_image_text_table
from ...core.data.tables import table_folder
from ...core.data.text import is_table
from ...core.tokenizer import TextEncoding
from ...errors import ConfigError, DataError
from ..image.infer import ImageClassification
from ..registry import Labelled, Task, read_table, register_task, resolve
from ..text.infer import pad_ids

OTHER = "other"  # the class rare labels were folded into at fit (tasks/multimodal/fit.py)


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

    def prepare(self, image: bytes | str | Path | np.ndarray | None = None, text: str | None = None,
                values=None) -> dict[str, np.ndarray]:
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
        return {"images": np.stack([it["images"] for it in items]),
                **pad_ids(items, self.encoding.pad_id if self.encoding else 0),
                "has_image": np.array([it["has_image"] for it in items], np.float32),
                "has_text": np.array([it["has_text"] for it in items], np.float32)}

    def length(self, item: dict[str, np.ndarray]) -> int:
        return len(item["input_ids"])

    def graph(self, model: nn.Module) -> nn.Module:
        return ImageTextGraph(model, self.pre.get("scale", 1 / 255)).eval()

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {**super().dynamic_axes(), "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"}}

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        s = self.pre["image_size"]
        img = np.random.default_rng(0).integers(0, 256, (3, s, s), dtype=np.uint8)
        return self.collate([self.prepare(image=img, text="an example") for _ in range(n)])

    def _table(self, path: str | Path, labels: bool = False):
        d = self.data
        return read_image_text_table(path, d["image_column"], d["text_column"], d["label_column"] if labels else None,
                                     d.get("image_root") or None, allow_missing=True, encoding=d.get("encoding", "utf-8"))

    def rows(self, items: list[str]) -> list[dict]:
        """Each item is a table (CSV/TSV/JSONL/Parquet or a datasets folder, with the columns the model was trained on: one
        prediction per row, either input may be empty), an image file (image only), or any
        other string (text only)."""
        rows: list[dict] = []
        for it in map(str, items):
            p = Path(it)
            if is_table(p):
                t = self._table(p)
                rows += [{"row": f"{p}:{n}", "image": img, "text": txt} for img, txt, n in zip(t.images, t.texts, t.rows)]
            elif os.path.isfile(it) and is_image(p):
                rows.append({"path": it, "image": p})
            else:
                rows.append({"text": it})
        return rows

    def table_rows(self, path: Path, column: str | None = None) -> list[dict]:
        """Every row of a table with the training columns: the image (relative to the training
        image root, else the table's folder) and the text, either may be empty; the table's
        fields stay as ids."""
        if column:
            raise ConfigError(f"--column: an image+text model reads the columns it was trained on "
                              f"({self.data['image_column']!r} and {self.data['text_column']!r}); leave out --column")
        d = self.data
        rows = read_table(path, d.get("encoding", "utf-8"))
        missing = [c for c in (d["image_column"], d["text_column"]) if c not in rows[0]]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(rows[0])}); the model was trained "
                            f"on {d['image_column']!r} and {d['text_column']!r}")
        base = Path(d["image_root"]) if d.get("image_root") else table_folder(path)
        return [{**r, "image": resolve(r[d["image_column"]].strip(), base) if r[d["image_column"]].strip() else None,
                 "text": r[d["text_column"]] if r[d["text_column"]].strip() else None} for r in rows]

    def labelled(self, data: str | Path, **options) -> Labelled:
        """A labelled table with the columns the model was trained on; rows with one input
        missing are kept (the model predicts from the other), labels the model lacks are counted
        and left out (or count as "other" when rare labels were folded into it at fit)."""
        t = self._table(data, labels=True)
        classes = self.classes
        labels = [l if l in classes else (OTHER if OTHER in classes else l) for l in t.labels]
        keep = [i for i, l in enumerate(labels) if l in classes]
        if not keep:
            raise DataError(f"{data}: no rows with a label the model knows ({', '.join(classes[:10])}, ...)")
        return Labelled([{"image": t.images[i], "text": t.texts[i]} for i in keep],
                        np.array([classes.index(labels[i]) for i in keep]),
                        {"test": len(keep), "file": str(data), "skipped": t.skipped, "unknown_labels": len(labels) - len(keep)},
                        {"texts": [t.texts[i] or "" for i in keep], "paths": [f"{data}:{t.rows[i]}" for i in keep]},
                        Path(data).stem, {"task": self.name})
