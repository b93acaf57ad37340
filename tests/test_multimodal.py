"""Image+text tables and fusion classifiers (issue 6): reader error/skip cases, fusion training on
a small real subset of fashion_products, prediction with one input missing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuneforge.data.multimodal import read_image_text_table
from tuneforge.errors import DataError

from conftest import DATASETS

FASHION = DATASETS / "fashion_products"


@pytest.fixture
def table(tmp_path) -> Path:
    """A CSV with real fashion images: row 3 names a missing file, row 4 has an empty title."""
    src = FASHION / "images"
    if not src.is_dir():
        pytest.fail(f"real test data missing: {src}")
    (tmp_path / "img").mkdir()
    names = sorted(p.name for p in src.iterdir())[:3]
    for n in names:
        shutil.copy(src / n, tmp_path / "img" / n)
    lines = ["image,title,label",
             f"img/{names[0]},Blue shirt,Shirts",
             "img/nope.jpg,Red watch,Watches",
             f"img/{names[1]},,Shirts",
             f"img/{names[2]},\"Black, leather belt\",Belts"]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "t.csv"


def test_reader_skips_and_counts(table):
    t = read_image_text_table(table, "image", "title", "label")
    assert t.rows == [2, 5]
    assert t.skipped == {"missing image": 1, "empty text": 1}
    assert t.texts == ["Blue shirt", "Black, leather belt"] and t.labels == ["Shirts", "Belts"]
    assert all(p.is_absolute() and p.is_file() for p in t.images)


def test_reader_strict_names_file_and_line(table):
    with pytest.raises(DataError, match=r"t\.csv line 3: image file not found"):
        read_image_text_table(table, "image", "title", "label", strict=True)
    rows = table.read_text().splitlines()
    table.write_text("\n".join([rows[0], rows[1], rows[3]]) + "\n")
    with pytest.raises(DataError, match=r"t\.csv line 3: empty text in column 'title'"):
        read_image_text_table(table, "image", "title", "label", strict=True)


def test_reader_allow_missing_keeps_one_modality(table):
    t = read_image_text_table(table, "image", "title", "label", allow_missing=True)
    assert t.rows == [2, 3, 4, 5] and t.skipped == {}
    assert t.images[1] is None and t.texts[1] == "Red watch"
    assert t.images[2] is not None and t.texts[2] is None
    # a row with neither input is skipped even then
    table.write_text(table.read_text() + "img/gone.jpg,,Belts\n")
    t = read_image_text_table(table, "image", "title", "label", allow_missing=True)
    assert t.skipped == {"no image and no text": 1} and len(t) == 4


def test_reader_image_root_jsonl_and_errors(table, tmp_path):
    root = tmp_path / "img"
    name = sorted(p.name for p in root.iterdir())[0]
    j = tmp_path / "sub" / "t.jsonl"
    j.parent.mkdir()
    j.write_text(json.dumps({"image": name, "text": "a shirt"}) + "\n" + "{not json\n"
                 + json.dumps({"image": name, "text": "  "}) + "\n")
    t = read_image_text_table(j, "image", "text", image_root=root)
    assert t.labels is None and t.rows == [1] and t.images == [(root / name).resolve()]
    assert t.skipped == {"bad row": 1, "empty text": 1}
    with pytest.raises(DataError, match=r"t\.jsonl line 2: not valid JSON"):
        read_image_text_table(j, "image", "text", image_root=root, strict=True)
    with pytest.raises(DataError, match="no column 'caption'"):
        read_image_text_table(table, "image", "caption")
    with pytest.raises(DataError, match="--image-root"):
        read_image_text_table(table, "image", "title", image_root=tmp_path / "missing")
    # relative to the table's folder by default: from sub/, the paths don't resolve
    with pytest.raises(DataError, match=r"no usable rows \(skipped: bad row 1, missing image 2\)"):
        read_image_text_table(j, "image", "text")
