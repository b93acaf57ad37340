"""The classic text model (`text-tfidf` bundles, tasks/text/classic.py) at inference, without
scikit-learn: a text becomes the column ids of its known terms and their sublinear term
frequencies (core/models/tfidf.py `TfidfFeaturizer`, from the bundle's vocabulary JSON), padded
per batch to the most terms; the graph does idf, the L2 norm and the linear map. Texts come in
as for any text bundle (arguments, files, standard input, tables; `text` in the server's JSON)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...core.bundle import bundle_file
from ...core.models.tfidf import TfidfFeaturizer
from ...errors import DataError
from ..registry import Task, register_task
from .infer import TextClassification


class TfidfGraph(nn.Module):
    """Padded (batch, terms) term ids and tf (0 in the padding) -> logits. The padding adds 0 to
    every sum, so the answer is the module's on the unpadded bag; the bag offsets are computed
    from the tensors (no Python sizes), so the batch and terms axes stay dynamic in ONNX."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, term_ids: torch.Tensor, tf: torch.Tensor) -> torch.Tensor:
        per_text = torch.ones_like(term_ids).sum(1)
        offsets = torch.cumsum(per_text, 0) - per_text
        return self.model(term_ids.reshape(-1), offsets, tf.reshape(-1))


@register_task("text-tfidf")
class TfidfText(TextClassification):
    """A text through the bundle's TF-IDF vocabulary (checksummed with the weights)."""

    input_names = ("term_ids", "tf")

    def __init__(self, config: dict):
        Task.__init__(self, config)
        self.featurizer = TfidfFeaturizer.load(bundle_file(config, self.pre["tokenizer"]))

    def prepare(self, image=None, text: str | None = None, values=None) -> dict[str, np.ndarray]:
        if text is None or not str(text).strip():
            raise DataError('this model classifies text: send JSON {"text": "..."}')
        ids, tf = self.featurizer.encode(str(text))
        return {"term_ids": ids, "tf": tf}

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        width = max([1, *(len(it["term_ids"]) for it in items)])  # a text with no known term is all padding
        ids = np.zeros((len(items), width), np.int64)
        tf = np.zeros((len(items), width), np.float32)
        for i, it in enumerate(items):
            ids[i, :len(it["term_ids"])], tf[i, :len(it["tf"])] = it["term_ids"], it["tf"]
        return {"term_ids": ids, "tf": tf}

    def length(self, item: dict[str, np.ndarray]) -> int:
        return len(item["term_ids"])

    def graph(self, model: nn.Module) -> nn.Module:
        return TfidfGraph(model).eval()

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"term_ids": {0: "batch", 1: "terms"}, "tf": {0: "batch", 1: "terms"}, "logits": {0: "batch"}}
