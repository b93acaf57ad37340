"""Image regression at inference (`image-regression`): images decoded and resized as training
did into the image graph; the one output is scaled back to the target's units
(preprocessing.target: the training mean and std)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.data.images import decode_cached
from ...core.data.targets import read_image_table
from ...errors import DataError
from ..image.infer import ImageClassification
from ..registry import Labelled, register_task


@register_task("image-regression")
class ImageRegression(ImageClassification):
    """A number per image."""

    score = "regression"

    def __init__(self, config: dict):
        super().__init__(config)
        self.target = tuple(self.pre.get("target", (0.0, 1.0)))

    def values(self, outputs: np.ndarray) -> np.ndarray:
        mean, std = self.target
        return outputs.reshape(len(outputs), -1)[:, 0].astype(np.float64) * std + mean

    def results(self, outputs: np.ndarray, items: list[dict[str, np.ndarray]], k: int = 5) -> list[dict]:
        return [{"value": round(float(v), 6)} for v in self.values(outputs)]

    def labelled(self, data: str | Path, strict: bool = False, cache_dir: str | None = None, **options) -> Labelled:
        """A table of image paths and numbers in the training layout."""
        if not Path(data).is_file():
            raise DataError(f"{data}: an image-regression model is evaluated on a table (image paths and "
                            f"{self.data.get('label_column', 'label')!r})")
        files, y = read_image_table(data, self.data.get("label_column", "label"), self.data.get("encoding", "utf-8"))
        arr, ok, bad = decode_cached(files, self.pre["image_size"], self.pre.get("resize", "crop"), cache_dir, strict=strict)
        paths = [str(f) for f, g in zip(files, ok) if g]
        return Labelled([{"image": a} for a in arr], y[ok], {"test": len(paths), "file": str(data), "skipped": bad},
                        {"images": arr, "paths": paths}, Path(data).name)
