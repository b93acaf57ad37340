"""Unlabeled image folders: every image under a root, at any depth, labels (folder names) ignored.

Decoding goes through the same content-keyed disk cache as class folders (`images.decode_cached`),
so `cifar10/train` used as the unlabeled pool of a semi-supervised run costs nothing to decode
when a labelled run has already read it. `UnlabeledLoader` (self-supervised pretraining) and
`SemiLoader` (labelled + unlabeled batches) gather batches from the in-memory tensors in an
order that is a function of (seed, epoch) only, like `BatchLoader`: that is what keeps
`--resume` exact."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from ...errors import DataError
from .images import decode_cached, is_image
from .order import epoch_stream
from .tables import is_arrow_table
from .text import _decode_lines, read_rows


@dataclass
class UnlabeledSet:
    """Decoded images (N, 3, H, W) uint8 and their paths; `skipped` lists unreadable files."""

    images: torch.Tensor
    paths: list[str]
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def scan_unlabeled(root: str | Path, flag: str = "--unlabeled") -> list[Path]:
    """All image files under `root` (nested folders allowed, hidden ones skipped), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{flag}: no such folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image(p)
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{flag}: {root} holds no images (looked in all subfolders for "
                        f"{', '.join(sorted({'.jpg', '.png', '.webp', '.bmp'}))} ...)")
    return files


def load_unlabeled(root: str | Path, size: int, resize: str = "crop", cache_dir: str | None = None,
                   workers: int = 0, strict: bool = False, exclude: set[str] | None = None,
                   forbid: set[str] | None = None, flag: str = "--unlabeled", store: str = "auto") -> UnlabeledSet:
    """Decode every image under `root`. `exclude`: resolved paths left out of the pool (the
    validation images carved out of a train folder that is also the unlabeled folder: model
    selection must not see them in training). `forbid`: resolved paths whose presence is an
    error naming one (test images: a model must never train on them, even unlabeled, and
    silently dropping them would hide a mistaken folder). `store`: where the pixels live
    (images.decode_cached)."""
    files = scan_unlabeled(root, flag)
    resolved = [str(f.resolve()) for f in files] if exclude or forbid else []
    if forbid:
        clash = [f for f, r in zip(files, resolved) if r in forbid]
        if clash:
            raise DataError(f"{flag}: {root} contains {len(clash)} test image(s), e.g. {clash[0]}; "
                            "point it at images that are not evaluated on (e.g. the train folder)")
    if exclude:
        files = [f for f, r in zip(files, resolved) if r not in exclude]
        if not files:
            raise DataError(f"{flag}: every image under {root} is a validation image")
    arr, ok, skipped = decode_cached(files, size, resize, cache_dir, workers, strict, store)
    if not ok.any():
        raise DataError(f"{flag}: none of the {len(files)} images under {root} could be read")
    return UnlabeledSet(torch.from_numpy(arr), [str(f) for f, g in zip(files, ok) if g], skipped)


@dataclass
class UnlabeledTexts:
    """Texts of an unlabeled table or .txt file, `lines[i]` the line text i came from."""

    texts: list[str]
    lines: list[int]
    path: str
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def load_unlabeled_texts(path: str | Path, text_column: str | None = None, columns: list[str] | None = None,
                         encoding: str = "utf-8", skip_bad_rows: bool = False, flag: str = "--unlabeled") -> UnlabeledTexts:
    """Unlabeled text: a .txt file holds one text per line, whatever the labelled data's columns
    (a labelled table's `--text-column`/`--columns` do not apply to it); a CSV/TSV/JSONL table (the
    labelled readers' formats, header or `columns`) gives its `text_column` (default 'text'), any
    label column ignored. Errors name the flag, the file and the line or column; empty texts are left out."""
    p = Path(path)
    if not p.is_file() and not is_arrow_table(p):
        raise DataError(f"{flag}: no such file: {p} (a CSV/TSV/JSONL/Parquet table or datasets folder with a text "
                        "column, or a .txt file with one text per line)")
    skipped: list[dict] = []
    if p.suffix.lower() == ".txt":
        pairs = [(no, t.strip()) for no, t in _decode_lines(p, encoding, skip_bad_rows, skipped)]
    else:
        col = text_column or "text"
        try:
            rows, nos, skipped = read_rows(p, columns, encoding, skip_bad_rows, need=(col,), text=(col,))
        except DataError as e:
            raise DataError(f"{flag}: {e}") from None
        pairs = [(no, r[col].strip()) for r, no in zip(rows, nos)]
    pairs = [(no, t) for no, t in pairs if t]
    if not pairs:
        why = f" ({len(skipped)} rows skipped, first: line {skipped[0]['line']}, {skipped[0]['reason']})" if skipped else ""
        raise DataError(f"{flag}: {p} holds no (non-empty) texts{why}")
    return UnlabeledTexts([t for _, t in pairs], [no for no, _ in pairs], str(p), skipped)


def relpaths(paths: list[str], root: str | Path) -> list[str]:
    return [os.path.relpath(p, root) for p in paths]


class UnlabeledLoader:
    """(images,) batches for self-supervised strategies; drops the last partial batch (contrastive
    losses want full, equal batches). An epoch is one pass over the images."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0):
        if len(images) < 2:
            raise DataError("self-supervised training needs at least 2 images")
        self.images, self.batch_size, self.seed = images, min(batch_size, len(images)), seed

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    @property
    def num_samples(self) -> int:
        return len(self) * self.batch_size

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor]]:
        order = epoch_stream(len(self.images), len(self) * self.batch_size, self.seed, epoch, 1)
        for i in range(len(self)):
            yield (self.images[order[i * self.batch_size:(i + 1) * self.batch_size]],)


class SemiLoader:
    """((labelled images, unlabeled images), labels) batches: `batch_size` labelled and
    `mu * batch_size` unlabeled per step (FixMatch's ratio). An epoch is `steps` steps, by
    default one pass over the labelled set (ceil(labelled / batch_size)): the labelled images
    are what a semi-supervised fit is about, and an epoch that follows the unlabeled pool
    instead is one step for 300 unlabeled images (too few to learn anything, with no hint why)
    and thousands of labelled passes for 50,000. The unlabeled pool is drawn `mu * batch_size`
    a step, reshuffled whenever it runs out (so a small pool is seen several times per epoch,
    a large one in part); with an explicit `steps` the labelled set cycles the same way. The
    epoch length also sets how often validation, checkpoints and the time limit are looked at."""

    def __init__(self, images: torch.Tensor | list, labels: torch.Tensor, unlabeled: torch.Tensor | list, batch_size: int,
                 mu: int = 7, steps: int | None = None, seed: int = 0,
                 collate: Callable[[list, torch.Tensor], dict] | None = None):
        self.images, self.labels, self.unlabeled = images, labels, unlabeled
        self.batch_size, self.mu, self.seed = batch_size, mu, seed
        self.steps = steps or max(1, -(-len(labels) // batch_size))
        # Text: `images`/`unlabeled` are lists of token-id lists and `collate` pads the rows it is
        # given into a dict batch (input_ids, attention_mask); tensors are simply indexed.
        self.collate = collate
        self.warnings: list[str] = []  # about this setup, said by core.run.train_model (the fit sets them)

    def __len__(self) -> int:
        return self.steps

    @property
    def num_samples(self) -> int:
        return self.steps * self.batch_size

    def epoch(self, epoch: int = 0) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        b, bu = self.batch_size, self.mu * self.batch_size
        lab = epoch_stream(len(self.labels), self.steps * b, self.seed, epoch, 2)
        unl = epoch_stream(len(self.unlabeled), self.steps * bu, self.seed, epoch, 3)
        take = (lambda xs, idx: xs[idx]) if self.collate is None else self.collate
        for i in range(self.steps):
            li = lab[i * b:(i + 1) * b]
            yield (take(self.images, li), take(self.unlabeled, unl[i * bu:(i + 1) * bu])), self.labels[li]
