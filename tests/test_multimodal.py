"""Image+text tables and fusion classifiers (issue 6): reader error/skip cases, fusion training on
a small real subset of fashion_products, prediction with one input missing."""
from __future__ import annotations

import json
import torch
import shutil
from pathlib import Path

import pytest

from tuneforge.core.data.multimodal import read_image_text_table
from tuneforge.core.models import create_model
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


# ---------------------------------------------------------------- fusion classifiers

CLASSES = ["Tshirts", "Watches", "Casual Shoes", "Handbags"]


@pytest.fixture(scope="module")
def fashion4(tmp_path_factory) -> Path:
    """4 articleTypes x 30 real fashion_products rows (title + 224px photo), plus 3 rows of a
    rare class (folded into "other" by --min-class-count 5)."""
    import csv
    src = FASHION / "metadata.csv"
    if not src.is_file():
        pytest.fail(f"real test data missing: {src}")
    rows, count = [], {}
    with open(src, newline="") as f:
        for r in csv.DictReader(f):
            c = r["articleType"]
            limit = 3 if c == "Sunglasses" else 30 if c in CLASSES else 0
            if count.get(c, 0) < limit:
                count[c] = count.get(c, 0) + 1
                rows.append(r)
    out = tmp_path_factory.mktemp("fashion4") / "meta.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def _fit(table: Path, out: Path, cache: Path, **kw):
    import tuneforge
    args = dict(data=str(table), image_root=str(FASHION), image_column="image", text_column="productDisplayName",
                label_column="articleType", modalities="image,text", image_size=64, epochs=12, batch_size=16,
                test_fraction=0.3, val_fraction=0.15, min_class_count=5, out=str(out), progress=False,
                tensorboard=False, threads=1, workers=1, cache_dir=str(cache), patience=0, modality_dropout=0.3)
    return tuneforge.fit(**{**args, **kw})


@pytest.fixture(scope="module")
def attention_run(fashion4, tmp_path_factory):
    d = tmp_path_factory.mktemp("mm")
    return _fit(fashion4, d / "attention", d / "cache", fusion="attention")


def test_attention_fusion_learns_and_predicts_with_a_missing_input(attention_run, fashion4):
    from tuneforge.deploy.predictor import Predictor
    rep = attention_run.report
    assert rep["classes"] == sorted(CLASSES + ["other"])  # 3 Sunglasses rows folded into "other"
    split = json.loads((attention_run.run_dir / "split.json").read_text())
    assert split["folded_into_other"] == ["Sunglasses"] and split["seed"] == 0
    assert not set(split["train"]) & set(split["test"]) and len(split["test"]) == rep["test"]["n"]
    assert rep["encoders"]["cached"]["image"][0] == 4  # 64 px -> 2x2 cells for cross-attention
    chance = 1 / 5
    assert rep["test"]["accuracy"] >= 0.75, rep["test"]
    assert rep["test"]["accuracy_without_image"] > chance + 0.3 and rep["test"]["accuracy_without_text"] > chance + 0.3
    # The bundle alone, from raw files: both inputs, image only, text only.
    import csv
    with open(fashion4, newline="") as f:
        by_line = {i: r for i, r in enumerate(csv.DictReader(f), 2)}
    test = [by_line[n] for n in split["test"]]
    p = Predictor(attention_run.run_dir)
    assert p.task.inputs == ("image", "text")
    truth = [r["articleType"] if r["articleType"] in CLASSES else "other" for r in test]
    for use in (("image", "text"), ("image",), ("text",)):
        items = [p.prepare(FASHION / r["image"] if "image" in use else None,
                           r["productDisplayName"] if "text" in use else None) for r in test]
        acc = sum(o["label"] == t for o, t in zip(p.top_k(items, 1), truth)) / len(test)
        assert acc > chance + 0.3, (use, acc)
        if use == ("image", "text"):  # raw files through the bundle = what training measured on cached features
            assert abs(acc - rep["test"]["accuracy"]) < 0.05
    with pytest.raises(DataError, match="send an image"):
        p.prepare(None, "  ")
    # `tuneforge evaluate` on a labelled table with the training columns: the usual report
    import tuneforge
    ev = tuneforge.evaluate(attention_run.run_dir, fashion4, progress=False)
    assert ev["test"]["n"] == 123 and ev["test"]["accuracy"] > 0.8 and Path(ev["html_path"]).is_file()


def test_fusion_bundle_exports_to_onnx_with_missing_inputs(attention_run, fashion4, tmp_path):
    import csv
    import tuneforge
    from tuneforge.deploy.predictor import Predictor
    info = tuneforge.export(attention_run.run_dir, tmp_path / "onnx", format="onnx", data=str(fashion4))
    assert info["onnx"]["max_abs_diff"] < 1e-4
    with open(fashion4, newline="") as f:
        rows = list(csv.DictReader(f))[:6]
    eager, onnx = (Predictor(tmp_path / "onnx", backend=b) for b in ("torch", "onnx"))
    for use in (("image", "text"), ("image",), ("text",)):
        items = lambda p: [p.prepare(FASHION / r["image"] if "image" in use else None,
                                     r["productDisplayName"] if "text" in use else None) for r in rows]
        a, b = eager.top_k(items(eager), 2), onnx.top_k(items(onnx), 2)
        assert [x["label"] for x in a] == [x["label"] for x in b], use
        assert all(abs(x["top"][0]["probability"] - y["top"][0]["probability"]) < 1e-4 for x, y in zip(a, b)), use
    with pytest.raises(Exception, match="calibrated on images"):
        tuneforge.export(attention_run.run_dir, tmp_path / "q", format="onnx", quantize="int8", data=str(fashion4))


def test_gated_late_and_single_modality_baselines(fashion4, tmp_path):
    cache = tmp_path / "cache"
    runs = {name: _fit(fashion4, tmp_path / name, cache, epochs=8, **kw).report for name, kw in {
        "late": {"fusion": "late"}, "gated": {"fusion": "gated"}, "text": {"modalities": "text"},
        "image": {"modalities": "image"}}.items()}
    for name, rep in runs.items():
        assert rep["test"]["accuracy"] >= 0.6, (name, rep["test"])
        hist = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"], name
    assert runs["text"]["modalities"] == ["text"] and "accuracy_without_image" not in runs["text"]["test"]
    # the baselines read the same rows: the same test split
    assert runs["text"]["test"]["n"] == runs["image"]["test"]["n"] == runs["late"]["test"]["n"]


def test_partly_trained_encoder_with_its_own_learning_rate(fashion4, tmp_path):
    """--image-freeze 5: the last image stages train (no cache) at --image-lr, the text encoder
    stays frozen (cached); the first stages do not move."""
    from tuneforge.core.models.fusion import FusionClassifier
    import tuneforge
    r = _fit(fashion4, tmp_path / "partial", tmp_path / "cache", fusion="late", image_freeze="5", epochs=1,
             image_lr=3e-4, lr=1e-3)
    assert r.report["encoders"]["cached"] == {"text": [1, 384]}
    model: FusionClassifier = r.model
    fresh = create_model("fusion", 5, 64, True, fusion="late")
    stages_now, stages_before = model.backbone.image.stages(), fresh.backbone.image.stages()
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    import torch
    assert same(stages_now[0], stages_before[0]) and not same(stages_now[-1], stages_before[-1])
    ck = torch.load(tmp_path / "partial" / "checkpoints" / "last.pt", weights_only=False)
    lrs = sorted({g["initial_lr"] for g in ck["optimizer"]["param_groups"]})
    assert lrs == [3e-4, 1e-3]


def test_serve_takes_image_and_text(attention_run, live_server):
    import httpx
    from tuneforge.deploy.serve.app import create_app
    url = live_server(create_app(attention_run.run_dir / "model"), ready=True)
    info = httpx.get(url + "/v1/info").json()
    assert info["task"] == "image-text-classification" and info["inputs"] == ["image", "text"]
    img = sorted((FASHION / "images").iterdir())[0].read_bytes()
    both = httpx.post(url + "/v1/predict", files={"file": ("a.jpg", img, "image/jpeg")},
                      data={"text": "Titan Men Black Dial Watch"})
    text_only = httpx.post(url + "/v1/predict", json={"text": "Nike Men Black Casual Shoes"})
    assert both.status_code == 200 and text_only.status_code == 200, (both.text, text_only.text)
    assert text_only.json()["label"] == "Casual Shoes"
