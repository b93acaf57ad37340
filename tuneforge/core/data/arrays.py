"""Images given as NumPy arrays: a `.npz` file in MedMNIST's layout, or arrays passed to `fit`.

    train_images (N, H, W) grey or (N, H, W, C) with C 1, 3 or 4, uint8   train_labels (N,) or (N, 1)
    val_images / val_labels, test_images / test_labels                     (optional)

Labels are class indices 0..K-1 (K-1 the largest in train). Every image becomes RGB uint8 at the
fit's size through the same PIL conversion and resize a decoded image file goes through (a grey
array as a grey PNG would), so `predict` on an image file sees what training saw. The rows are
named `FILE.npz:SPLIT[i]` wherever an image file would be named by its path.
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...errors import DataError
from .duplicates import find_duplicates
from .images import ImageSet, _fit, _to_rgb

SUFFIXES = (".npz",)
SPLITS = ("train", "val", "test")
LAYOUT = "MedMNIST's layout: train_images/train_labels, optional val_* and test_*"


def is_array_file(path: Any) -> bool:
    """Whether `path` names an arrays file (by its suffix; the file is not opened)."""
    return isinstance(path, (str, Path)) and Path(path).suffix.lower() in SUFFIXES


def read_npz(path: str | Path, splits: tuple[str, ...] = SPLITS, required: tuple[str, ...] = ("train",)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images, labels)} for each of `splits` the file holds; a split of `required` it
    lacks, an image array without its labels (or the reverse), a bad shape or a bad label is a
    DataError naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            out = {}
            for split in splits:
                im, lb = f"{split}_images", f"{split}_labels"
                if im not in keys and lb not in keys:
                    if split in required:
                        raise DataError(f"{path}: no {im!r} array (the file holds {', '.join(sorted(keys)) or 'no arrays'}; "
                                        f"expected {LAYOUT})")
                    continue
                missing = lb if im in keys else im
                if missing not in keys:
                    raise DataError(f"{path}: {im if im in keys else lb!r} without {missing!r} ({LAYOUT})")
                out[split] = check_arrays(npz[im], npz[lb], f"{path}: {split}")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read it as a .npz file of arrays ({e.__class__.__name__}: {e})") from None
    return out


def check_arrays(images: Any, labels: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(images as uint8 (N, H, W, C), labels as int64 (N,)) or a DataError saying `what` is wrong."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or min(images.shape[1:3], default=0) < 1:
        raise DataError(f"{what}_images has shape {images.shape}; expected (N, H, W) grey or (N, H, W, C) with C 1, 3 or 4")
    if images.dtype != np.uint8:
        if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
            raise DataError(f"{what}_images has dtype {images.dtype}; expected uint8 pixels 0-255")
        lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise DataError(f"{what}_images holds values {lo:g}..{hi:g}; expected pixels 0-255 (uint8)")
        # floats in [0, 1] are scaled pixels (what ToTensor gives); anything else is 0-255 already
        scale = 255.0 if np.issubdtype(images.dtype, np.floating) and hi <= 1.0 else 1.0
        images = np.round(images.astype(np.float64) * scale).astype(np.uint8)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{what}_labels has shape {labels.shape}; expected ({len(images)},) or ({len(images)}, 1): "
                        f"one class index per image")
    if len(labels) and (not np.issubdtype(labels.dtype, np.number) or (labels < 0).any() or (labels != np.round(labels)).any()):
        raise DataError(f"{what}_labels must be class indices 0, 1, 2, ... (found {labels[:5].tolist()} ...)")
    return images, labels.astype(np.int64)


def label_names(train_labels: np.ndarray, names: str | list[str] | None, what: str) -> list[str]:
    """The classes of labels 0..K-1: `names` (a comma-separated string or a list), else the numbers."""
    k = int(train_labels.max()) + 1 if len(train_labels) else 0
    if names is None:
        return [str(i) for i in range(k)]
    listed = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n) for n in names]
    if len(listed) < k or len(set(listed)) != len(listed) or not all(listed):
        raise DataError(f"--label-names: {len(listed)} names ({', '.join(listed)}) for labels 0..{k - 1} of {what}; "
                        f"give one distinct name per label value, in order")
    return listed


def to_image_set(images: np.ndarray, labels: np.ndarray, size: int, resize: str, classes: list[str], paths: list[str],
                 what: str) -> ImageSet:
    """uint8 (N, H, W, C) -> an ImageSet of RGB uint8 (N, 3, size, size), the rows named by `paths`."""
    unknown = sorted(set(np.unique(labels).tolist()) - set(range(len(classes))))
    if unknown:
        raise DataError(f"{what}_labels: label values {unknown[:5]} are not among the training labels 0..{len(classes) - 1}")
    out = np.empty((len(images), 3, size, size), np.uint8)
    for i, a in enumerate(images):
        im = Image.fromarray(a[..., 0], "L") if a.shape[-1] == 1 else Image.fromarray(a, "RGBA" if a.shape[-1] == 4 else "RGB")
        out[i] = _fit(_to_rgb(im), size, resize)
    return ImageSet(torch.from_numpy(out), torch.from_numpy(labels), list(paths), classes)


def array_duplicates(splits: dict[str, tuple[np.ndarray, np.ndarray] | None], classes: list[str], names: dict[str, list[str]]) -> dict:
    """The duplicate check of image files (core/data/duplicates.py) on the arrays' raw pixels."""
    items = []
    for split, pair in splits.items():
        if pair is None:
            continue
        images, labels = pair
        items += [(split, where, classes[int(l)], hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest())
                  for a, l, where in zip(images, labels, names[split])]
    return find_duplicates(items, "images")


def is_arrays(value: Any) -> bool:
    """In-memory arrays given to `fit`: an (images, labels) pair of arrays, or a dict of
    `train_images`... arrays."""
    if isinstance(value, dict):
        return any(str(k).endswith(("_images", "_labels")) for k in value)
    return (isinstance(value, tuple) and len(value) == 2 and all(hasattr(v, "shape") and hasattr(v, "dtype") for v in value))


def write_npz(path: Path, data: Any, val: Any = None, test: Any = None) -> Path:
    """Arrays given to `fit` (data, and val/test as (images, labels) pairs) -> one .npz in the
    layout `read_npz` takes, checked the way the file would be."""
    arrays: dict[str, np.ndarray] = {}
    if isinstance(data, dict):
        arrays.update({str(k): np.asarray(v) for k, v in data.items()})
    else:
        arrays["train_images"], arrays["train_labels"] = (np.asarray(v) for v in data)
    for split, pair in (("val", val), ("test", test)):
        if pair is None:
            continue
        if not is_arrays(pair) or isinstance(pair, dict):
            raise DataError(f"{split}: give an (images, labels) pair of arrays, as data= is")
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = (np.asarray(v) for v in pair)
    for split in SPLITS:
        if f"{split}_images" in arrays or f"{split}_labels" in arrays or split == "train":
            for key in (f"{split}_images", f"{split}_labels"):
                if key not in arrays:
                    raise DataError(f"data: no {key!r} array ({LAYOUT})")
            check_arrays(arrays[f"{split}_images"], arrays[f"{split}_labels"], f"data: {split}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
