"""Labelled text from CSV, TSV (with a header, or headerless with `columns`) and JSONL files,
and from Parquet files and Hugging Face `datasets` folders (read by data/tables.py).

Every row is checked: a byte that is not valid in the declared encoding, a row with the wrong
number of fields, a missing column or an empty label is a DataError naming the file and line,
or, with `skip_bad_rows`, a skipped row that is counted and listed (file, line, reason).
UTF-8 with a byte-order mark is read as UTF-8."""
from __future__ import annotations

import codecs
import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError, DataError
from .split import stratified_split
from .tables import is_arrow_table, is_dataset_dict, read_arrow_rows

log = logging.getLogger("tuneforge")

TEXT_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                 ".json": "jsonl", ".parquet": "parquet"}
csv.field_size_limit(1 << 28)


@dataclass
class TextSet:
    """Texts with class indices into `classes`; `lines[i]` is row i's line in `path`."""
    texts: list[str]
    labels: torch.Tensor
    classes: list[str]
    path: str = ""
    lines: list[int] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)  # label -> rows whose label train lacks

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> "TextSet":
        idx = [int(i) for i in idx]
        return TextSet([self.texts[i] for i in idx], self.labels[idx], self.classes, self.path,
                       [self.lines[i] for i in idx] if self.lines else [], list(self.skipped))


def is_table(path: str | Path) -> bool:
    """A file of a table format (by suffix) or a datasets folder: what `batch`, `predict` and
    `evaluate` read as rows rather than as a folder or lines."""
    p = Path(path)
    try:
        if p.is_file():
            return p.suffix.lower() in TEXT_SUFFIXES
    except (OSError, ValueError):  # a long text given where a path may be
        return False
    return is_arrow_table(p) or is_dataset_dict(p)


def at(path: str | Path, no: int) -> str:
    """Where a row is, for messages: a text file's line, a typed table's 0-based row."""
    return f"{path} {'row' if is_arrow_table(path) else 'line'} {no}"


def text_format(path: Path) -> str:
    """csv / tsv / jsonl from the suffix; files without one (SST-2's) are sniffed."""
    fmt = TEXT_SUFFIXES.get(path.suffix.lower())
    if fmt:
        return fmt
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    if head.startswith(b"{"):
        return "jsonl"
    return "tsv" if b"\t" in head.split(b"\n", 1)[0] else "csv"


def _decode_lines(path: Path, encoding: str, skip: bool, skipped: list[dict]) -> list[tuple[int, str]]:
    """(line number, text) per physical line; a bad byte names its line (or skips it)."""
    raw = path.read_bytes()
    enc = encoding.lower().replace("_", "-")
    if enc in ("utf-8", "utf8") and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"--encoding: unknown encoding {encoding!r}") from None
    out = []
    for no, line in enumerate(raw.splitlines(keepends=True), 1):
        try:
            text = line.decode(encoding)
        except UnicodeDecodeError as e:
            reason = f"byte 0x{line[e.start]:02x} at column {e.start + 1} is not valid {encoding}"
            if not skip:
                raise DataError(f"{path} line {no}: {reason} (give --encoding, or --skip-bad-rows)") from None
            skipped.append({"path": str(path), "line": no, "reason": reason})
            continue
        out.append((no, text))
    return out


class _Lines:
    """Feeds decoded lines to csv.reader while remembering the line each row started on."""

    def __init__(self, lines: list[tuple[int, str]]):
        self.lines, self.i, self.current = lines, 0, 0
        self.start: int | None = None  # first line of the row being read; reset by the caller

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.i >= len(self.lines):
            raise StopIteration
        self.current, text = self.lines[self.i]
        if self.start is None:
            self.start = self.current
        self.i += 1
        return text


def read_rows(path: str | Path, columns: list[str] | None = None, encoding: str = "utf-8",
              skip_bad_rows: bool = False, need: tuple[str, ...] = (),
              text: tuple[str, ...] = ()) -> tuple[list[dict], list[int], list[dict]]:
    """Rows of a CSV/TSV/JSONL/Parquet file or datasets folder as dicts, their line (row)
    numbers, and the skipped rows. `columns` names the fields of a headerless CSV/TSV; `need`
    are columns that must exist; `text` columns must hold strings (checked where a table has
    types: Parquet, datasets)."""
    path = Path(path)
    if is_arrow_table(path) or is_dataset_dict(path):
        return read_arrow_rows(path, columns, need, text)
    if not path.is_file():
        raise DataError(f"--data: no such file: {path}")
    fmt = text_format(path)
    skipped: list[dict] = []
    lines = _decode_lines(path, encoding, skip_bad_rows, skipped)
    rows, nos = [], []

    def bad(no: int, reason: str) -> None:
        if not skip_bad_rows:
            raise DataError(f"{path} line {no}: {reason} (fix the file, or give --skip-bad-rows)")
        skipped.append({"path": str(path), "line": no, "reason": reason})

    if fmt == "jsonl":
        for no, text in lines:
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                bad(no, f"not valid JSON ({e.msg})")
                continue
            except RecursionError:  # "[[[[..." 1000 deep: json recurses per level
                bad(no, "not valid JSON (nested too deeply)")
                continue
            if not isinstance(obj, dict):
                bad(no, f"expected a JSON object, got {type(obj).__name__}")
                continue
            missing = [c for c in need if c not in obj]
            if missing:
                if not rows and not nos:  # the first record decides: a wrong --text-column is a setting error
                    raise DataError(f"{path} line {no}: no column {missing[0]!r} (fields: {', '.join(map(str, obj))})")
                bad(no, f"no field {missing[0]!r}")
                continue
            rows.append({k: ("" if v is None else str(v)) for k, v in obj.items()})
            nos.append(no)
        return rows, nos, skipped

    src = _Lines(lines)
    if fmt == "tsv":
        reader = csv.reader(src, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(src)
    header = list(columns) if columns else None
    for row in reader:
        no, src.start = src.start or src.current, None
        if header is None:
            header = [h.strip() for h in row]
            missing = [c for c in need if c not in header]
            if missing:
                raise DataError(f"{path}: no column {missing[0]!r} in the header (columns: {', '.join(header)}); "
                                "name them with --text-column/--label-column, or --columns for a headerless file")
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            bad(no, f"expected {len(header)} fields ({', '.join(header)}), got {len(row)}")
            continue
        rows.append(dict(zip(header, row)))
        nos.append(no)
    if header is None:
        raise DataError(f"{path}: the file is empty")
    missing = [c for c in need if c not in header]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(header)})")
    return rows, nos, skipped


def _sorted_labels(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(labels)


def read_text_file(path: str | Path, text_column: str, label_column: str, columns: list[str] | None = None,
                   encoding: str = "utf-8", skip_bad_rows: bool = False, classes: list[str] | None = None) -> TextSet:
    """A labelled text file. With `classes` given (val/test), labels that train lacks are
    counted in `unknown` and their rows left out (the caller reports them)."""
    rows, nos, skipped = read_rows(path, columns, encoding, skip_bad_rows, need=(text_column, label_column),
                                   text=(text_column,))
    texts, labels, lines = [], [], []
    for row, no in zip(rows, nos):
        label = row[label_column].strip()
        if not label:
            if not skip_bad_rows:
                raise DataError(f"{at(path, no)}: empty label in column {label_column!r} (fix the file, or give --skip-bad-rows)")
            skipped.append({"path": str(path), "line": no, "reason": f"empty label in column {label_column!r}"})
            continue
        texts.append(row[text_column])
        labels.append(label)
        lines.append(no)
    if skipped:
        log.warning("%s: skipped %d bad rows (first: %s, %s)", path, len(skipped), at(path, skipped[0]["line"]),
                    skipped[0]["reason"])
    unknown: dict[str, int] = {}
    if classes is None:
        classes = _sorted_labels(set(labels))
    else:
        index = set(classes)
        keep = [i for i, l in enumerate(labels) if l in index]
        for l in labels:
            if l not in index:
                unknown[l] = unknown.get(l, 0) + 1
        if unknown:
            log.warning("%s: %d rows have labels the training data lacks, left out of the metrics: %s", path,
                        sum(unknown.values()), ", ".join(f"{k!r} ({v})" for k, v in sorted(unknown.items())))
        texts, labels, lines = [texts[i] for i in keep], [labels[i] for i in keep], [lines[i] for i in keep]
    if not texts:
        raise DataError(f"{path}: no labelled rows")
    index = {c: i for i, c in enumerate(classes)}
    return TextSet(texts, torch.tensor([index[l] for l in labels], dtype=torch.long), classes, str(path), lines,
                   skipped, unknown)


_SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation", "dev"), "test": ("test",)}


def find_text_splits(folder: Path) -> dict[str, Path]:
    """train/val/test files of a folder, by name: train.csv, dev.tsv, sentiment-test,
    train-00000-of-00001.parquet, ...; or datasets folders (a DatasetDict's train/,
    validation/, test/)."""
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not (f.is_file() or is_arrow_table(f)):
            continue
        if f.is_file() and f.suffix.lower() not in TEXT_SUFFIXES and f.suffix:
            continue
        words = set(re.split(r"[^a-z]+", (f.stem if f.is_file() else f.name).lower()))
        for split, names in _SPLIT_NAMES.items():
            if words & set(names) and split not in found:
                found[split] = f
    if "train" not in found:
        raise DataError(f"--data: {folder} has no training file (a CSV/TSV/JSONL/Parquet file or a datasets "
                        "folder with 'train' in its name)")
    return found


def is_text_data(data: str | None, text_column: str | None) -> bool:
    """A file, a datasets folder (one table or a DatasetDict), or any data once --text-column is given."""
    if text_column:
        return True
    if data is None:
        return False
    p = Path(data)
    return (p.is_file() and (p.suffix.lower() in TEXT_SUFFIXES or not p.suffix)) or is_arrow_table(p) or \
        is_dataset_dict(p)


# ---------------------------------------------------------------- vocabularies (from-scratch models)

PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s")


def split_tokens(text: str, level: str, lower: bool = True) -> list[str]:
    text = text.lower() if lower else text
    if level == "char":
        return [c for c in text if not c.isspace()]
    if level == "char2":  # characters and character bigrams (good for Chinese without segmentation)
        chars = [c for c in text if not c.isspace()]
        return chars + [a + b for a, b in zip(chars, chars[1:])]
    return _WORD.findall(text)


class Vocab:
    """Token -> id for word- or character-level models, built from training texts, saved as JSON."""

    def __init__(self, tokens: list[str], level: str = "word", lower: bool = True):
        self.tokens, self.level, self.lower = tokens, level, lower
        self.index = {t: i for i, t in enumerate(tokens)}
        self.pad_id, self.unk_id, self.cls_id = self.index[PAD], self.index[UNK], self.index[CLS]

    @classmethod
    def build(cls, texts: list[str], level: str = "word", max_size: int = 50_000, min_freq: int = 1,
              lower: bool = True) -> "Vocab":
        counts: dict[str, int] = {}
        for t in texts:
            for tok in split_tokens(t, level, lower):
                counts[tok] = counts.get(tok, 0) + 1
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls([PAD, UNK, CLS] + kept[:max(0, max_size - 3)], level, lower)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Ids per text, truncated to max_length; at least one (unknown) token each."""
        get, unk = self.index.get, self.unk_id
        out = []
        for t in texts:
            ids = [get(tok, unk) for tok in self._first_tokens(t, max_length)][:max_length]
            out.append(ids or [unk])
        return out

    def _first_tokens(self, text: str, n: int) -> list[str]:
        """The first n (or more) tokens of split_tokens(text), found in a growing prefix: a 10 MB
        text costs what its first few kilobytes do (split whole, it held the server ~1 s). A
        prefix gives exactly the whole text's first tokens when it holds more than n of them
        (the token cut at its end comes later) and lower-casing it changes no character before
        the cut: only a capital sigma's lower case looks ahead, so the prefix must end at a
        space or hold no sigma. Otherwise the whole text is split, as before."""
        size = max(1024, 16 * n)
        while size < len(text):
            space = _SPACE.search(text, size, size + 65536)
            cut = space.start() if space else size
            head = text[:cut]
            if space is None and self.lower and "\u03a3" in head:
                break
            toks = split_tokens(head, self.level, self.lower)
            # char2 puts all characters before the bigrams: enough characters alone are needed
            primary = (len(toks) + 1) // 2 if self.level == "char2" else len(toks)
            if primary > n:
                return toks
            size *= 4
        return split_tokens(text, self.level, self.lower)

    def to_json(self) -> dict:
        return {"level": self.level, "lower": self.lower, "tokens": self.tokens}

    @classmethod
    def from_json(cls, doc: dict) -> "Vocab":
        return cls(doc["tokens"], doc["level"], doc.get("lower", True))


def stratified_text_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return stratified_split(labels.numpy(), fraction, seed)
