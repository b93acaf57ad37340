"""Typed tables read with pyarrow: Parquet files and Hugging Face `datasets` folders.

A `save_to_disk` folder holds dataset_info.json, state.json and data-*.arrow files (Arrow IPC
streams); a DatasetDict folder holds dataset_dict.json and one such folder per split. Rows come
out as the text readers' do (data/text.py `read_rows`): dicts of strings, with their 0-based
row numbers (as `ds[i]` and `df.iloc[i]` count them). A ClassLabel column (from the
features of dataset_info.json, or of the `huggingface` schema metadata `datasets` writes into
Parquet and Arrow files) gives its class names, not its integers. Errors name the file and the
column. pyarrow is imported on first use: reading a CSV does not load it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import DataError

ARROW_SUFFIXES = (".parquet",)
DATASET_FILES = ("state.json", "dataset_info.json")
DICT_FILE = "dataset_dict.json"


def _isdir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def is_dataset_folder(path: str | Path) -> bool:
    """A `Dataset.save_to_disk` folder (one table)."""
    p = Path(path)
    return _isdir(p) and (p / "state.json").is_file() and any(p.glob("data-*.arrow"))


def is_dataset_dict(path: str | Path) -> bool:
    """A `DatasetDict.save_to_disk` folder (one folder per split)."""
    p = Path(path)
    return _isdir(p) and (p / DICT_FILE).is_file()


def is_arrow_table(path: str | Path) -> bool:
    """A Parquet file or a `save_to_disk` folder: a table this module reads."""
    p = Path(path)
    if p.suffix.lower() in ARROW_SUFFIXES:
        try:
            return p.is_file()
        except (OSError, ValueError):
            return False
    return is_dataset_folder(p)


def dict_splits(path: Path) -> list[Path]:
    """The split folders of a DatasetDict folder, in dataset_dict.json's order."""
    try:
        names = json.loads((path / DICT_FILE).read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path / DICT_FILE}: unreadable ({e})") from None
    return [path / n for n in names if is_dataset_folder(path / n)]


def table_folder(path: str | Path) -> Path:
    """The folder that relative paths in a table start from: a file's folder, the folder a
    datasets folder is in (for a split of a DatasetDict, the folder the DatasetDict is in)."""
    p = Path(path)
    if is_dataset_folder(p) and is_dataset_dict(p.parent):
        return p.parent.parent
    return p.parent


def _arrow_files(folder: Path) -> list[Path]:
    """The data files of a save_to_disk folder, as state.json lists them (shards in order)."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        names = [f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        names = sorted(p.name for p in folder.glob("data-*.arrow"))
    return [folder / n for n in names]


def _read_arrow_file(path: Path):
    """One data-*.arrow file: an IPC stream as save_to_disk writes it (or an IPC file)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc
    try:
        with pa.memory_map(str(path)) as src:
            return ipc.open_stream(src).read_all()
    except (pa.ArrowInvalid, OSError) as stream_error:
        try:
            with pa.memory_map(str(path)) as src:
                return ipc.open_file(src).read_all()
        except (pa.ArrowInvalid, OSError):
            raise DataError(f"{path}: not a readable Arrow file ({stream_error})") from None


def _features(table: Any, folder: Path | None) -> dict:
    """The `datasets` features: from the folder's dataset_info.json, else the schema metadata."""
    if folder is not None:
        try:
            feats = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8")).get("features")
            if isinstance(feats, dict):
                return feats
        except (OSError, ValueError):
            pass
    meta = (table.schema.metadata or {}).get(b"huggingface")
    if meta:
        try:
            feats = json.loads(meta).get("info", {}).get("features")
            return feats if isinstance(feats, dict) else {}
        except (ValueError, AttributeError):
            return {}
    return {}


def read_arrow_table(path: Path):
    """The whole table (pyarrow.Table) and its `datasets` features."""
    import pyarrow as pa
    if is_dataset_dict(path) and not is_dataset_folder(path):
        splits = ", ".join(p.name for p in dict_splits(path))
        raise DataError(f"{path}: a DatasetDict folder (splits: {splits}); give one split's folder, "
                        f"e.g. {path / (dict_splits(path) or [Path('test')])[-1].name}")
    if path.suffix.lower() in ARROW_SUFFIXES:
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(str(path))
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
        return table, _features(table, None)
    files = _arrow_files(path)
    if not files:
        raise DataError(f"{path}: a datasets folder without data-*.arrow files")
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: listed in {path / 'state.json'} but missing")
    parts = [_read_arrow_file(f) for f in files]
    try:
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    except pa.ArrowInvalid as e:
        raise DataError(f"{path}: its data files do not share one schema ({e})") from None
    return table, _features(table, path)


def _is_text(t: Any) -> bool:
    import pyarrow as pa
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t) or (
        hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))


def _is_image_struct(t: Any) -> bool:
    import pyarrow as pa
    return pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} == {"bytes", "path"}


def _cell(v: Any) -> str:
    """A value as the CSV readers give it: text; lists and objects as JSON (a sequence column
    reads a JSON list); missing as empty."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(v, default=str)
    return str(v)


def _column_values(path: Path, name: str, column: Any, feature: Any, needed: bool) -> list[str]:
    """One column as strings: class names for a ClassLabel, the path of an Image struct."""
    values = column.to_pylist()
    if _is_image_struct(column.type):
        if needed and any(v and v.get("bytes") for v in values):
            raise DataError(f"{path}: column {name!r} holds the images themselves (bytes, a Hugging Face Image "
                            f"feature); tuneforge reads image paths from a table: save the images as files and "
                            f"give a column of their paths")
        return [_cell(v.get("path") if v else None) for v in values]
    names = feature.get("names") if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" else None
    if names:
        out = []
        for i, v in enumerate(values):
            if v is None or v == -1:  # -1: datasets' "no label"
                out.append("")
            elif isinstance(v, int) and 0 <= v < len(names):
                out.append(str(names[v]))
            else:
                raise DataError(f"{path} row {i}: {v!r} in the ClassLabel column {name!r} is not a class index "
                                f"(0..{len(names) - 1})")
        return out
    return [_cell(v) for v in values]


def read_arrow_rows(path: str | Path, columns: list[str] | None = None, need: tuple[str, ...] = (),
                    text: tuple[str, ...] = ()) -> tuple[list[dict], list[int], list[dict]]:
    """Rows of a Parquet file or datasets folder as dicts of strings, their row numbers, and
    the skipped rows (none: a typed table has no malformed rows). `columns` selects columns by
    name, or renames the table's columns in order when it names as many as there are (as for a
    headerless CSV); `need` must exist; `text` must hold strings."""
    path = Path(path)
    table, features = read_arrow_table(path)
    names = list(table.column_names)
    if columns:
        if set(columns) <= set(names):
            table, names = table.select(columns), list(columns)
        elif len(columns) == len(names):
            features = {new: features.get(old) for old, new in zip(names, columns)}
            table, names = table.rename_columns(columns), list(columns)
        else:
            raise DataError(f"{path}: --columns names {len(columns)} fields ({', '.join(columns)}), the table has "
                            f"{len(names)} ({', '.join(names)})")
    missing = [c for c in need if c not in names]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(names)}); name them with "
                        "--text-column/--label-column (--image-column)")
    for c in text:
        t = table.schema.field(c).type
        if not _is_text(t):
            raise DataError(f"{path}: column {c!r} holds {t}, not text; give the text column with --text-column")
    cols = {n: _column_values(path, n, table.column(n), features.get(n), n in need) for n in names}
    rows = [dict(zip(names, vals)) for vals in zip(*cols.values())] if names else []
    return rows, list(range(len(rows))), []
