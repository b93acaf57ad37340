"""An image fit on NumPy arrays (`--data FILE.npz`, core/data/arrays.py): the same splits,
split.json and duplicate check as class folders, from the file's train/val/test arrays."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ...config import FitConfig
from ...core.data import ImageSet, stratified_split, subsample_per_class, write_manifest
from ...core.data.arrays import array_duplicates, label_names, read_npz, to_image_set
from ...core.data.split import fingerprint
from ...errors import ConfigError, DataError


def _read(cfg: FitConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The file's splits: those `facts` read for this fit (taken, so they are used once), else read now."""
    for name in ("val", "test"):
        if getattr(cfg, name):
            raise ConfigError(f"--{name}: with --data FILE.npz the splits are the file's own val_*/test_* arrays "
                              f"(without val_*, --val-fraction of train is held out)")
    held = cfg.__dict__.pop("arrays_read", None)
    if held is not None and held[0] == cfg.data:
        return held[1]
    return read_npz(cfg.data)


def facts(cfg: FitConfig) -> tuple[Callable[[], list[int]], list[int], bool]:
    """What resolve needs to choose the image size and the small-data defaults: the images'
    shorter sides, the training labels, whether the file has a val split."""
    splits = _read(cfg)
    cfg.arrays_read = (cfg.data, splits)  # for load_splits: one read per fit
    images, labels = splits["train"]
    return (lambda: [min(images.shape[1:3])]), labels.tolist(), "val" in splits


def load_splits(cfg: FitConfig, image_size: int, run_dir: Path, resume: bool = False
                ) -> tuple[ImageSet, ImageSet | None, ImageSet | None, dict]:
    """train/val/test ImageSets from the file (val carved from train, stratified, when it has
    none), split.json (rows as SPLIT[i] of the file) and the duplicate check on the raw pixels."""
    path = Path(cfg.data)
    splits = _read(cfg)
    images, labels = splits["train"]
    classes = label_names(labels, cfg.label_names, f"{path}: train_labels")
    if len(classes) < 2:
        raise DataError(f"{path}: train_labels hold only the label 0; a classifier needs at least 2 classes")
    keep = np.arange(len(labels))
    if cfg.labels_per_class or cfg.limit_per_class:
        keep = subsample_per_class(labels, cfg.labels_per_class or cfg.limit_per_class, cfg.seed)
    raw = {"test": splits.get("test")}
    names = {"test": [f"test[{i}]" for i in range(len(raw["test"][1]))] if raw["test"] else []}
    if "val" in splits:
        raw["val"], names["val"] = splits["val"], [f"val[{i}]" for i in range(len(splits["val"][1]))]
    elif cfg.val_fraction > 0:
        tr, va = stratified_split(labels[keep], cfg.val_fraction, cfg.seed)
        raw["val"], names["val"], keep = (images[keep[va]], labels[keep[va]]), [f"train[{i}]" for i in keep[va]], keep[tr]
    else:
        raw["val"], names["val"] = None, []
    raw["train"], names["train"] = (images[keep], labels[keep]), [f"train[{i}]" for i in keep]
    sets = {}
    for split in ("train", "val", "test"):
        if raw[split] is not None:
            sets[split] = to_image_set(*raw[split], image_size, cfg.resize, classes,
                                       [f"{path.name}:{n}" for n in names[split]], f"{path}: {split}")
    empty = [c for i, c in enumerate(classes) if not (raw["train"][1] == i).any()]
    if empty:
        raise DataError(f"{path}: classes {empty} (labels {[classes.index(c) for c in empty]}) have no training images")
    write_manifest(run_dir / "split.json", classes, names, cfg.seed, resume=resume,
                   source={"kind": "arrays", "file": str(path.resolve())},
                   fingerprint=fingerprint(*(a for pair in raw.values() if pair is not None for a in pair)))
    duplicates = array_duplicates(raw, classes, {k: [f"{path.name}:{n}" for n in v] for k, v in names.items()})
    return sets["train"], sets.get("val"), sets.get("test"), duplicates
