"""Image classification at inference: decode and resize as training did, uint8 pixels into
a graph that holds scaling, normalisation and flip TTA."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError
import torch
from torch import nn

from ...core.augment import flip_tta
from ...core.data.arrays import is_array_file, read_npz, to_image_set
from ...core.data.images import TooManyPixels, _decode_one, decode_image, list_images, load_image_folder
from ...errors import DataError
from ..registry import Labelled, Task, register_task


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
    # Uploaded bytes announcing more pixels than this are refused from their header, undecoded
    # (TooManyPixels): PIL only warns below 179 megapixels, and the warning is silenced here.
    # The server sets its --max-pixels (Predictor(max_pixels=...)).
    max_pixels: int | None = 40_000_000

    def prepare(self, image: bytes | str | Path | np.ndarray | None = None, text: str | None = None,
                values=None) -> dict[str, np.ndarray]:
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
                return {"images": decode_image(io.BytesIO(image), size, resize, self.max_pixels)}
        except TooManyPixels as e:
            raise TooManyPixels(f"cannot use the upload: {e}") from None
        except Exception as e:  # truncated, not an image, decompression bomb...
            why = "not an image format PIL reads (JPEG, PNG, WebP, ...)" if isinstance(e, UnidentifiedImageError) \
                else f"{e.__class__.__name__}: {e}"
            raise DataError(f"cannot read the upload as an image ({why})") from None

    def graph(self, model: nn.Module) -> nn.Module:
        return ImageGraph(model, self.pre.get("scale", 1 / 255), self.pre.get("tta") == "flip").eval()

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        s = self.pre["image_size"]
        return {"images": np.random.default_rng(0).integers(0, 256, (n, 3, s, s), dtype=np.uint8)}

    def rows(self, items: list[str]) -> list[dict]:
        """Image files and folders (recursively)."""
        return [{"path": str(f), "image": f} for f in list_images(items)]

    def labelled(self, data: str | Path, strict: bool = False, cache_dir: str | None = None, **options) -> Labelled:
        """A class-folder tree (its test/ subfolder if it has one), decoded by the training
        decoder and its cache; the rows are the decoded pixels."""
        data = Path(data)
        if is_array_file(data):
            return self._labelled_arrays(data)
        folder = data / "test" if (data / "test").is_dir() else data
        split = load_image_folder(folder, self.pre["image_size"], self.pre.get("resize", "crop"), classes=self.classes,
                                  cache_dir=cache_dir, strict=strict)
        images = split.images.numpy()
        return Labelled([{"image": a} for a in images], split.labels.numpy(),
                        {"test": len(split), "folder": str(folder), "skipped": split.skipped},
                        {"images": images, "paths": split.paths}, folder.resolve().name,
                        {"tta": self.pre.get("tta")})

    def _labelled_arrays(self, path: Path) -> Labelled:
        """A .npz file's test_* arrays (core/data/arrays.py), resized as training did."""
        images, labels = read_npz(path, ("test",), required=("test",))["test"]
        paths = [f"{path.name}:test[{i}]" for i in range(len(labels))]
        split = to_image_set(images, labels, self.pre["image_size"], self.pre.get("resize", "crop"), self.classes, paths,
                             f"{path}: test")
        pixels = split.images.numpy()
        return Labelled([{"image": a} for a in pixels], split.labels.numpy(), {"test": len(split), "file": str(path)},
                        {"images": pixels, "paths": paths}, path.stem, {"tta": self.pre.get("tta")})
