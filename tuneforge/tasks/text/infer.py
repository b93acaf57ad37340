"""Text classification at inference: the bundle's tokenizer or vocabulary, truncated to the
training max length, padded per batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.tokenizer import TextEncoding
from ...errors import DataError
from ..registry import Task, register_task


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
