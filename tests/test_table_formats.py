"""Parquet files and Hugging Face `datasets` folders (`save_to_disk`) read wherever a CSV is
(issue 17): the same SST-2 slice as CSV, Parquet and a datasets folder trains `--model tfidf`
(deterministic) to the same split and the same accuracy; ClassLabel integers come through as
their names; a DatasetDict folder gives train/val/test; evaluate, predict and batch read Parquet;
bad inputs are refused naming the file and the column."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tuneforge
from conftest import DATASETS
from tuneforge.cli import main
from tuneforge.core.data.multimodal import read_image_text_table
from tuneforge.core.data.text import read_text_file
from tuneforge.core.data.unlabeled import load_unlabeled_texts
from tuneforge.errors import DataError

QUICK = dict(progress=False, tensorboard=False, threads=2, model="tfidf")
NAMES = ["negative", "positive"]
FEATURES = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)})


def _sst2(name: str, n: int) -> dict[str, list]:
    path = DATASETS / "sst2" / name
    if not path.is_file():
        pytest.fail(f"real test data missing: {path} (set TUNEFORGE_DATASETS to the datasets folder)")
    rows = [line.rstrip("\n").rpartition("\t") for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    return {"sentence": [t.strip() for t, _, _ in rows], "label": [int(y) for _, _, y in rows]}


def _write_csv(path: Path, d: dict[str, list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        w.writerows([t, NAMES[y]] for t, y in zip(d["sentence"], d["label"]))
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """1,200 SST-2 training sentences and 300 test ones, labels as names (CSV) or as ClassLabel
    integers (Parquet written by `datasets`, and a save_to_disk folder); and a DatasetDict."""
    root = tmp_path_factory.mktemp("tables")
    train, test = _sst2("sentiment-train", 1200), _sst2("sentiment-test", 300)
    out: dict[str, dict[str, Path]] = {"csv": {}, "parquet": {}, "hf": {}}
    for split, d in (("train", train), ("test", test)):
        ds = datasets.Dataset.from_dict(d, features=FEATURES)
        out["csv"][split] = _write_csv(root / f"{split}.csv", d)
        ds.to_parquet(str(root / f"{split}.parquet"))
        out["parquet"][split] = root / f"{split}.parquet"
        ds.save_to_disk(str(root / f"{split}-hf"))
        out["hf"][split] = root / f"{split}-hf"
    dev = datasets.Dataset.from_dict(_sst2("sentiment-dev", 200), features=FEATURES)
    datasets.DatasetDict(train=datasets.Dataset.from_dict(train, features=FEATURES), validation=dev,
                         test=datasets.Dataset.from_dict(test, features=FEATURES)).save_to_disk(str(root / "dd"))
    out["dict"] = {"root": root / "dd"}
    return out


@pytest.fixture(scope="module")
def runs(tables, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("runs")
    return {fmt: tuneforge.fit(data=str(tables[fmt]["train"]), test=str(tables[fmt]["test"]), text_column="sentence",
                               out=str(out / fmt), **QUICK) for fmt in ("csv", "parquet", "hf")}


def test_csv_parquet_and_datasets_folder_train_to_the_same_split_and_accuracy(runs):
    splits = {fmt: json.loads((r.run_dir / "split.json").read_text()) for fmt, r in runs.items()}
    # CSV rows are named by line (the header is line 1), typed tables by 0-based row, as ds[i]
    as_rows = {n: [line - 2 for line in splits["csv"][n]] for n in ("train", "val", "test")}
    for fmt in ("parquet", "hf"):
        assert {n: splits[fmt][n] for n in as_rows} == as_rows, fmt
        assert splits[fmt]["fingerprint"] == splits["csv"]["fingerprint"]  # the same texts and labels
    reports = {fmt: r.report for fmt, r in runs.items()}
    for fmt in ("parquet", "hf"):
        assert reports[fmt]["classes"] == NAMES  # ClassLabel integers came through as their names
        for split in ("val", "test"):
            assert reports[fmt][split]["accuracy"] == reports["csv"][split]["accuracy"]
            assert reports[fmt][split]["n"] == reports["csv"][split]["n"]
    assert reports["csv"]["test"]["n"] == 300 and reports["csv"]["test"]["accuracy"] > 0.6  # chance: ~0.5


def test_a_datasetdict_folder_gives_train_val_and_test(tables, tmp_path):
    run = tuneforge.fit(data=str(tables["dict"]["root"]), text_column="sentence", out=str(tmp_path / "dd"), **QUICK)
    split = json.loads((run.run_dir / "split.json").read_text())
    root = tables["dict"]["root"]
    assert split["roots"] == {"train": str(root / "train"), "val": str(root / "validation"), "test": str(root / "test")}
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (1200, 200, 300)
    assert run.report["val"]["n"] == 200 and run.report["classes"] == NAMES


def test_evaluate_predict_and_batch_read_parquet_and_datasets_folders(runs, tables, tmp_path, capsys):
    run = runs["csv"].run_dir
    fitted = runs["csv"].report["test"]["accuracy"]
    for fmt in ("parquet", "hf"):
        assert tuneforge.evaluate(run, tables[fmt]["test"], out=tmp_path / f"eval-{fmt}")["test"]["accuracy"] == fitted
    answers = tuneforge.predict(run, [tables["parquet"]["test"]])
    assert len(answers) == 300 and {a["label"] for a in answers} <= set(NAMES)
    out = tmp_path / "batch.csv"
    assert main(["batch", str(run), str(tables["parquet"]["test"]), "--output", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out, newline="", encoding="utf-8")))
    assert len(rows) == 300 and [r["label"] for r in rows] == [a["label"] for a in answers]
    assert rows[0]["sentence"] and rows[0]["label"] in NAMES  # the table's own columns kept beside the answer
    assert sum(r["label"] == NAMES[y] for r, y in zip(rows, _sst2("sentiment-test", 300)["label"])) / 300 == fitted


def test_cli_flags_read_typed_tables(tables, tmp_path, capsys):
    """--text-column/--label-column and --columns (renaming a typed table's columns in order)."""
    t = pa.table({"review": ["good fun", "bad", "great", "awful"] * 10, "stars": [1, 0, 1, 0] * 10})
    pq.write_table(t, tmp_path / "t.parquet")
    assert main(["fit", "--data", str(tmp_path / "t.parquet"), "--text-column", "review", "--label-column", "stars",
                 "--model", "tfidf", "--out", str(tmp_path / "a"), "--no-progress", "--threads", "2"]) == 0
    assert json.loads((tmp_path / "a" / "report.json").read_text())["classes"] == ["0", "1"]  # plain ints: as text
    assert main(["fit", "--data", str(tmp_path / "t.parquet"), "--columns", "text,label", "--model", "tfidf",
                 "--out", str(tmp_path / "b"), "--no-progress", "--threads", "2"]) == 0
    s = read_text_file(tmp_path / "t.parquet", "text", "label", ["text", "label"])
    assert s.texts[:2] == ["good fun", "bad"] and s.lines[:2] == [0, 1]


def test_bad_inputs_name_the_file_and_the_column(tables, tmp_path):
    pq_path = tables["parquet"]["train"]
    with pytest.raises(DataError, match=rf"{pq_path}: no column 'text' \(columns: sentence, label\)"):
        read_text_file(pq_path, "text", "label")
    with pytest.raises(DataError, match=rf"{pq_path}: column 'label' holds int64, not text"):
        read_text_file(pq_path, "label", "sentence")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=rf"{bad}: not a readable Parquet file"):
        read_text_file(bad, "text", "label")
    hf = tmp_path / "hf"
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]}).save_to_disk(str(hf))
    next(hf.glob("data-*.arrow")).write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"data-00000-of-00001\.arrow: not a readable Arrow file"):
        read_text_file(hf, "text", "label")
    with pytest.raises(DataError, match=r"a DatasetDict folder \(splits: train, validation, test\); give one split"):
        read_text_file(tables["dict"]["root"], "sentence", "label")
    with pytest.raises(DataError, match=r"--columns names 3 fields \(a, b, c\), the table has 2"):
        read_text_file(pq_path, "a", "b", ["a", "b", "c"])
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": ["fine", "ok"], "label": ["x", None]}), empty)
    with pytest.raises(DataError, match=rf"{empty} row 1: empty label in column 'label'"):
        read_text_file(empty, "text", "label")


def test_image_text_tables_from_parquet_and_datasets_folders(tmp_path, caplog):
    """Image paths relative to the table's folder (a datasets folder's: the folder it is in);
    Image structs holding paths are read, ones holding the images' bytes refused naming the column."""
    src = DATASETS / "cifar10" / "test" / "cat"
    jpgs = sorted(src.iterdir())[:3]
    (tmp_path / "img").mkdir()
    for f in jpgs:
        (tmp_path / "img" / f.name).symlink_to(f)
    data = {"path": [f"img/{f.name}" for f in jpgs] + ["img/missing.jpg"], "caption": ["a cat"] * 4,
            "label": ["cat"] * 4}
    pq.write_table(pa.table(data), tmp_path / "t.parquet")
    datasets.Dataset.from_dict(data).save_to_disk(str(tmp_path / "hf"))
    for table in (tmp_path / "t.parquet", tmp_path / "hf"):
        with caplog.at_level(logging.WARNING, "tuneforge"):
            t = read_image_text_table(table, "path", "caption", "label")
        assert t.images == [(tmp_path / "img" / f.name).resolve() for f in jpgs] and t.rows == [0, 1, 2]
        assert t.skipped == {"missing image": 1} and "(first: row 3: image file not found" in caplog.text
        caplog.clear()
    pq.write_table(pa.table({**data, "caption": [1, 2, 3, 4]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=rf"{tmp_path / 'n.parquet'}: column 'caption' holds int64, not text"):
        read_image_text_table(tmp_path / "n.parquet", "path", "caption", "label")
    structs = pa.array([{"bytes": None, "path": f"img/{f.name}"} for f in jpgs],
                       pa.struct([("bytes", pa.binary()), ("path", pa.string())]))  # an Image feature of paths only
    pq.write_table(pa.table({"image": structs, "caption": ["a cat"] * 3}), tmp_path / "s.parquet")
    assert read_image_text_table(tmp_path / "s.parquet", "image", "caption").images == t.images
    embedded = datasets.Dataset.from_dict({"image": [str(f) for f in jpgs], "caption": ["a cat"] * 3})
    embedded.cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "bytes"))
    with pytest.raises(DataError, match=r"bytes: column 'image' holds the images themselves \(bytes"):
        read_image_text_table(tmp_path / "bytes", "image", "caption")


def test_unlabeled_texts_from_a_datasets_folder(tables):
    """`--unlabeled` (semi-supervised text) reads the same tables; a non-text column is refused by flag and name."""
    u = load_unlabeled_texts(tables["hf"]["test"], "sentence")
    assert len(u.texts) == 300 and u.texts[0] == _sst2("sentiment-test", 1)["sentence"][0]
    with pytest.raises(DataError, match=r"--unlabeled: .*column 'label' holds int64, not text"):
        load_unlabeled_texts(tables["hf"]["test"], "label")
