"""An aligned image-text pair (`image-text-alignment`, from `tuneforge align`) at inference: one
image or one text per example, embedded into the shared space (L2-normalised). `predict`,
`batch` and `serve` answer embeddings; `evaluate` scores Recall@k both ways on a caption table;
`export` writes the pair as safetensors and, with --format onnx, one graph that embeds either.
Matching texts against images is `tuneforge retrieve`; classifying images by class names is
`tuneforge zeroshot`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...config import read_yaml
from ...core.data.images import is_image, list_images
from ...core.data.multimodal import read_image_text_table
from ...core.tokenizer import TextEncoding
from ...errors import DataError
from ..image.infer import ImageClassification
from ..registry import Labelled, Task, read_table, register_task, resolve
from ..text.infer import pad_ids, read_lines

TWO_INPUTS = ("an aligned pair embeds one image or one text per example, not both; to rank images for a text or "
              "texts for an image use `tuneforge retrieve`, to classify images by class names `tuneforge zeroshot`")


class AlignedGraph(nn.Module):
    """uint8 images, token ids and their mask, and which of the two each row is -> that row's
    embedding. Scaling to [0, 1] and the encoder's normalisation are inside, as for ImageGraph."""

    def __init__(self, pair: nn.Module, scale: float):
        super().__init__()
        self.pair, self.scale = pair, float(scale)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                has_image: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            # One static graph: both encoders on every row, each row keeps its own input's
            # embedding (a data-dependent subset would not trace into ONNX).
            img = self.pair.encode_image(images.float() * self.scale)
            txt = self.pair.encode_text({"input_ids": input_ids, "attention_mask": attention_mask})
            return has_image[:, None] * img + has_text[:, None] * txt
        # Eagerly, each encoder runs only on its own rows: a batch of texts costs no image encoder.
        out = torch.zeros(len(images), self.pair.heads.image_proj[-1].out_features)
        rows = has_image.nonzero()[:, 0]
        if len(rows):
            out[rows] = self.pair.encode_image(images[rows].float() * self.scale)
        rows = has_text.nonzero()[:, 0]
        if len(rows):
            out[rows] = self.pair.encode_text({"input_ids": input_ids[rows], "attention_mask": attention_mask[rows]})
        return out


def _layout(config: dict) -> dict[str, Any]:
    """The caption table's columns: the bundle's `data`, else the run's config.yaml, else the
    defaults of `tuneforge align` (image, caption)."""
    d = {"image_column": "image", "text_column": "caption", "image_root": None, **(config.get("data") or {})}
    settings = Path(config["_dir"]).parent / "config.yaml"
    if "image_column" not in (config.get("data") or {}) and settings.is_file():
        cfg = read_yaml(settings)
        d.update({k: cfg[k] for k in ("image_column", "text_column", "image_root", "encoding") if cfg.get(k) is not None})
    return d


@register_task("image-text-alignment")
class ImageTextAlignment(Task):
    inputs = ("image", "text")
    input_names = ("images", "input_ids", "attention_mask", "has_image", "has_text")
    output_name = "embeddings"
    score = "retrieval"

    def __init__(self, config: dict):
        super().__init__(config)
        self._image = ImageClassification(config)
        self.encoding = TextEncoding.load(Path(config["_dir"]), self.pre)
        self.layout = _layout(config)

    def prepare(self, image: bytes | str | Path | np.ndarray | None = None, text: str | None = None,
                values=None) -> dict[str, np.ndarray]:
        text = str(text) if text is not None and str(text).strip() else None
        if image is not None and text is not None:
            raise DataError(TWO_INPUTS)
        if image is None and text is None:
            raise DataError("this aligned pair embeds an image (multipart field 'file') or a text (field 'text')")
        s = self.pre["image_size"]
        ids = self.encoding([text])[0] if text is not None else [self.encoding.pad_id]
        return {"images": self._image.prepare(image)["images"] if image is not None else np.zeros((3, s, s), np.uint8),
                "input_ids": np.asarray(ids, dtype=np.int64),
                "has_image": np.float32(image is not None), "has_text": np.float32(text is not None)}

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {"images": np.stack([it["images"] for it in items]), **pad_ids(items, self.encoding.pad_id),
                "has_image": np.array([it["has_image"] for it in items], np.float32),
                "has_text": np.array([it["has_text"] for it in items], np.float32)}

    def length(self, item: dict[str, np.ndarray]) -> int:
        # images first, then texts by length: each batch runs (mostly) one encoder
        return len(item["input_ids"]) if item["has_text"] else 0

    def graph(self, model: nn.Module) -> nn.Module:
        return AlignedGraph(model, self.pre.get("scale", 1 / 255)).eval()

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {**super().dynamic_axes(), "input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        s = self.pre["image_size"]
        img = np.random.default_rng(0).integers(0, 256, (3, s, s), dtype=np.uint8)
        return self.collate([self.prepare(image=img) if i % 2 == 0 else self.prepare(text="an example") for i in range(n)])

    def results(self, outputs: np.ndarray, items: list[dict[str, np.ndarray]], k: int = 5) -> list[dict]:
        return [{"input": "image" if it["has_image"] else "text", "embedding": [round(float(v), 6) for v in e]}
                for e, it in zip(outputs, items)]

    # --- arguments and tables ---

    def rows(self, items: list[str]) -> list[dict]:
        """Image files and folders -> images; other files (one text per line), '-' (standard
        input lines) and strings -> texts; in argument order."""
        out: list[dict] = []
        for it in map(str, items):
            p = Path(it)
            if os.path.isdir(it) or (os.path.isfile(it) and is_image(p)):  # os.path: a long text is no path
                out += [{"path": str(f), "image": f} for f in list_images([p])]
            else:
                out += [{"text": t} for t in read_lines([it], self.layout.get("encoding", "utf-8"))]
        return out

    def table_rows(self, path: Path, column: str | None = None) -> list[dict]:
        """A caption table: each row's image and its text, one embedding each (`column`: only
        that column's), the table's fields kept as ids."""
        d = self.layout
        rows = read_table(path, d.get("encoding", "utf-8"))
        cols = [column] if column else [c for c in (d["image_column"], d["text_column"]) if c in rows[0]]
        if not cols or cols[0] not in rows[0]:
            raise DataError(f"{path}: no column {' or '.join(repr(c) for c in cols or (d['image_column'], d['text_column']))}"
                            f" (columns: {', '.join(rows[0])}); choose one with --column")
        base = Path(d["image_root"]) if d.get("image_root") else path.parent
        out: list[dict] = []
        for r in rows:
            for c in cols:
                if c == d["image_column"]:
                    out.append({**r, "input_column": c, "image": resolve(r[c].strip(), base)})
                else:
                    out.append({**r, "input_column": c, "image": None, "text": r[c]})  # not the image field of the table
        return out

    def labelled(self, data: str | Path, **options) -> Labelled:
        """A caption table (image, caption; several captions may share an image): every unique
        image and every caption, for Recall@k both ways. Targets: -1 on image rows, the index of
        the caption's image (among the image rows) on text rows."""
        d = self.layout
        t = read_image_text_table(data, d["image_column"], d["text_column"], image_root=d.get("image_root"),
                                  encoding=d.get("encoding", "utf-8"))
        images = list(dict.fromkeys(t.images))
        index = {p: i for i, p in enumerate(images)}
        rows = [{"path": str(p), "image": p} for p in images] + [{"text": x} for x in t.texts]
        targets = np.array([-1] * len(images) + [index[p] for p in t.images])
        return Labelled(rows, targets, {"test": len(t), "images": len(images), "file": str(data), "skipped": t.skipped},
                        {}, Path(data).stem, {"task": self.name})
