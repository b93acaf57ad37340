"""Image + text tables: a CSV/TSV/JSONL/Parquet file or a Hugging Face `datasets` folder
(`save_to_disk`) with an image-path column, a text column and
(optionally) a label column, as in `tuneforge fit --data metadata.csv --image-column image
--text-column productDisplayName --label-column articleType --modalities image,text`.

The rows are read by `data/text.py` (same formats, encodings and file:line errors; a typed
table's rows are numbered from 0, as `ds[i]`). An image column of Hugging Face Image structs is
read for their paths; one holding the images' bytes is refused, naming the column. Each row is
then checked here: an image file that does not exist, an empty text or an empty label is either
skipped and counted by reason (the default) or, with `strict=True`, a DataError naming the file
and the line. With `allow_missing=True` a fusion model that can predict from one input keeps a
row that lacks one modality (None in its place), but never a row that lacks both.
Whether an existing image file decodes is checked later, where it is decoded (data/images.py)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ...errors import DataError
from .tables import is_arrow_table, table_folder
from .text import read_rows

log = logging.getLogger("tuneforge")

# skip reasons (the keys of ImageTextTable.skipped)
MISSING_IMAGE, EMPTY_TEXT, EMPTY_LABEL, NO_INPUT, BAD_ROW = (
    "missing image", "empty text", "empty label", "no image and no text", "bad row")


@dataclass
class ImageTextTable:
    images: list[Path | None]   # resolved paths; None where the row has no usable image (allowed rows only)
    texts: list[str | None]     # None where the row has no text
    labels: list[str] | None    # None when no label column was asked for
    rows: list[int]             # line numbers in the source file (0-based rows of a typed table), for messages
    skipped: dict[str, int]     # reason -> rows skipped (e.g. "missing image", "empty text")

    def __len__(self) -> int:
        return len(self.rows)


def _resolve(value: str, base: Path) -> Path:
    p = Path(value)
    p = p if p.is_absolute() else base / p
    try:
        return p.resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a name too long, a symlink loop: no such file
        return p


def _is_file(path: Path) -> bool:
    """Path.is_file, False also for a path no file can have (a NUL byte, a name too long)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def read_image_text_table(path: str | Path, image_column: str, text_column: str,
                          label_column: str | None = None, image_root: str | Path | None = None,
                          strict: bool = False, allow_missing: bool = False,
                          encoding: str = "utf-8") -> ImageTextTable:
    """The usable rows of an image+text table. Image paths are relative to `image_root`, or to
    the table's own folder when it is not given (for a datasets folder: the folder it is in);
    absolute paths are taken as they are."""
    path = Path(path)
    need = (image_column, text_column) + ((label_column,) if label_column else ())
    # A malformed row (bad byte, ragged, bad JSON) follows the same skip/strict choice as the
    # row checks below: one flag, one behaviour.
    raw, nos, bad = read_rows(path, None, encoding, skip_bad_rows=not strict, need=need, text=(text_column,))
    if image_root is not None:
        base = Path(image_root)
        if not base.is_dir():
            raise DataError(f"--image-root: no such folder: {base}")
    else:
        base = table_folder(path)
    unit = "row" if is_arrow_table(path) else "line"
    skipped: dict[str, int] = {BAD_ROW: len(bad)} if bad else {}
    first: dict[str, str] = {}  # reason -> "line N (detail)" of its first occurrence, for the log

    def skip(no: int, reason: str, detail: str) -> None:
        if strict:
            raise DataError(f"{path} {unit} {no}: {detail} (fix the file, or leave out --strict to skip such rows)")
        skipped[reason] = skipped.get(reason, 0) + 1
        first.setdefault(reason, f"{unit} {no}: {detail}")

    images: list[Path | None] = []
    texts: list[str | None] = []
    labels: list[str] | None = [] if label_column else None
    rows: list[int] = []
    lacking = {"image": 0, "text": 0}
    for row, no in zip(raw, nos):
        label = row[label_column].strip() if label_column else None
        if label_column and not label:
            skip(no, EMPTY_LABEL, f"empty label in column {label_column!r}")
            continue
        value = row[image_column].strip()
        image = _resolve(value, base) if value else None
        image_problem = None
        if image is None:
            image_problem = f"empty image path in column {image_column!r}"
        elif not _is_file(image):
            image_problem = f"image file not found: {image}"
        text = row[text_column]
        text = text if text.strip() else None
        if image_problem and text is None:
            skip(no, NO_INPUT if allow_missing else MISSING_IMAGE, f"{image_problem}, and empty text in column {text_column!r}")
            continue
        if image_problem:
            if not allow_missing:
                skip(no, MISSING_IMAGE, image_problem)
                continue
            image, lacking["image"] = None, lacking["image"] + 1
        if text is None:
            if not allow_missing:
                skip(no, EMPTY_TEXT, f"empty text in column {text_column!r}")
                continue
            lacking["text"] += 1
        images.append(image)
        texts.append(text)
        if labels is not None:
            labels.append(label)
        rows.append(no)
    for reason, n in skipped.items():
        where = first.get(reason) or (f"line {bad[0]['line']}: {bad[0]['reason']}" if reason == BAD_ROW else "")
        log.warning("%s: skipped %d rows: %s (first: %s)", path, n, reason, where)
    if any(lacking.values()):
        log.info("%s: %d rows without an image, %d without a text (kept: the model predicts from the other input)",
                 path, lacking["image"], lacking["text"])
    if not rows:
        raise DataError(f"{path}: no usable rows (skipped: "
                        f"{', '.join(f'{k} {v}' for k, v in skipped.items()) or 'none; the file has no data rows'})")
    return ImageTextTable(images, texts, labels, rows, skipped)
