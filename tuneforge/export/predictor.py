"""Predictor: a bundle plus exactly the preprocessing it was trained with."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.images import decode_files
from ..augment import flip_tta
from .bundle import load_bundle


class Predictor:
    def __init__(self, bundle: str | Path, threads: int = 0):
        if threads:
            torch.set_num_threads(threads)
        self.model, self.config = load_bundle(bundle)
        self.classes: list[str] = self.config["classes"]
        self.pre = self.config["preprocessing"]

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 (N, 3, H, W) at the bundle's size -> (N, C) class probabilities, with the
        test-time augmentation the model was evaluated with."""
        images = torch.as_tensor(images)
        out = []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].float().div_(255.0)
            logits = self.model(x)
            if self.pre.get("tta") == "flip":
                logits = flip_tta(self.model, x, logits)
            out.append(logits.float().softmax(1))
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def predict_files(self, files: list[Path], top_k: int = 5, batch_size: int = 256) -> list[dict]:
        """One dict per file: {"path", "label", "top": [{"label", "probability"}...]} or
        {"path", "error"} for a file that cannot be read."""
        arr, ok, skipped = decode_files(files, self.pre["image_size"], self.pre.get("resize", "crop"))
        probs = self.probabilities(arr, batch_size)
        k = min(top_k, len(self.classes))
        p, idx = probs.topk(k, dim=1)
        results, j = [], 0
        reasons = {s["path"]: s["reason"] for s in skipped}
        for f, good in zip(files, ok):
            if not good:
                results.append({"path": str(f), "error": reasons[str(f)]})
                continue
            top = [{"label": self.classes[c], "probability": round(float(q), 6)} for q, c in zip(p[j], idx[j])]
            results.append({"path": str(f), "label": top[0]["label"], "top": top})
            j += 1
        return results
