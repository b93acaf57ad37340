"""NumPy arrays as image data (`fit --data FILE.npz` in MedMNIST's layout, `fit(data=(X, y))`) and
the decision threshold chosen on validation for a stated recall (`--target-recall CLASS=R`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import tuneforge
from conftest import DATASETS
from tuneforge.cli import main
from tuneforge.core.data.arrays import read_npz
from tuneforge.core.decision import fit_decision
from tuneforge.errors import ConfigError, DataError

PNEUMONIA = DATASETS / "medmnist" / "pneumoniamnist.npz"
FAST = dict(progress=False, tensorboard=False, threads=2, cache_dir="", baseline=False)


def _slice(labels: np.ndarray, per_class: int, start: int = 0) -> np.ndarray:
    """The first `per_class` indices of each class from `start` on, in file order."""
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[start:start + per_class] for c in np.unique(labels)]))


def pneumonia_slice(path, train: int = 150, val: int = 60, test: int = 60, test_start: int = 0):
    """A balanced slice of PneumoniaMNIST (28x28 grey, labels (N, 1)) written in its own layout."""
    src = np.load(PNEUMONIA)
    out = {}
    for split, n, start in (("train", train, 0), ("val", val, 0), ("test", test, test_start)):
        idx = _slice(src[f"{split}_labels"][:, 0], n, start)
        out[f"{split}_images"], out[f"{split}_labels"] = src[f"{split}_images"][idx], src[f"{split}_labels"][idx]
    np.savez(path, **out)
    return path


def stripes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey 24x24 images: class 1 has a bright bottom half, class 0 a bright top half (+ noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 90, (n, 24, 24))
    x[y == 0, :12] += 150
    x[y == 1, 12:] += 150
    return x.astype(np.uint8), y


def test_npz_fit_learns_pneumonia_and_evaluate_scores_its_test_arrays(tmp_path):
    data = pneumonia_slice(tmp_path / "pneumonia.npz", train=100, val=40, test=50)
    r = tuneforge.fit(data=str(data), model="fast-cnn", epochs=3, batch_size=32, label_names="normal,pneumonia",
                      out=str(tmp_path / "run"), **FAST)
    assert r.report["classes"] == ["normal", "pneumonia"]
    assert r.report["data"]["train"] == 200 and r.report["data"]["test"] == 100
    assert r.report["test"]["accuracy"] >= 0.75  # balanced: chance is 0.5
    split = json.loads((r.run_dir / "split.json").read_text())
    assert split["source"]["kind"] == "arrays" and split["val"][0] == "val[0]" and len(split["train"]) == 200
    # evaluate reads the file's test_* arrays the way fit did: the same accuracy
    ev = tuneforge.evaluate(r.run_dir, data, progress=False)
    assert ev["test"]["n"] == 100 and ev["test"]["accuracy"] == pytest.approx(r.report["test"]["accuracy"])


def test_fit_from_arrays_in_python(tmp_path):
    x, y = stripes(240, 0)
    xt, yt = stripes(80, 1)
    rgb = np.repeat(xt[..., None], 3, axis=-1)  # (N, H, W, 3) is read as well as (N, H, W)
    r = tuneforge.fit(data=(x, y.reshape(-1, 1)), test=(rgb, yt), model="fast-cnn", epochs=3, batch_size=32,
                      out=str(tmp_path / "run"), **FAST)
    assert r.report["test"]["accuracy"] >= 0.9
    assert (r.run_dir / "data" / "arrays.npz").is_file()  # the run folder holds what it was trained on
    assert r.report["data"]["val"] == 24  # no val arrays: --val-fraction of train, stratified
    # predict on an image file: the grey PNG of a test array is read as the array was
    Image.fromarray(xt[0], "L").save(tmp_path / "one.png")
    assert tuneforge.predict(r.run_dir, [tmp_path / "one.png"])[0]["label"] == str(yt[0])


@pytest.mark.parametrize("arrays, message", [
    ({"train_images": np.zeros((4, 8, 8), np.uint8)}, "'train_images' without 'train_labels'"),
    ({"val_images": np.zeros((4, 8, 8), np.uint8), "val_labels": np.zeros(4)}, "no 'train_images' array"),
    ({"train_images": np.zeros((4, 8, 8, 5), np.uint8), "train_labels": np.zeros(4)}, "train_images has shape (4, 8, 8, 5)"),
    ({"train_images": np.zeros((4, 8, 8), np.uint8), "train_labels": np.zeros(3)}, "train_labels has shape (3,)"),
    ({"train_images": np.zeros((4, 8, 8), np.uint8), "train_labels": np.array([0, 1, -1, 0])}, "class indices"),
    ({"train_images": np.full((4, 8, 8), 300.0), "train_labels": np.zeros(4)}, "values 300..300"),
])
def test_bad_npz_is_refused_naming_the_file_and_key(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as e:
        read_npz(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_npz_cli_errors(tmp_path, capsys, cifar3):
    (tmp_path / "junk.npz").write_text("not a zip")
    assert main(["fit", "--data", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "r1")]) == 2
    assert "junk.npz: cannot read it as a .npz file" in capsys.readouterr().err
    x, y = stripes(40, 0)
    np.savez(tmp_path / "ok.npz", train_images=x, train_labels=y)
    assert main(["fit", "--data", str(tmp_path / "ok.npz"), "--test", str(tmp_path / "ok.npz"), "--out", str(tmp_path / "r2")]) == 2
    assert "--test: with --data FILE.npz the splits are the file's own" in capsys.readouterr().err
    assert main(["fit", "--data", str(tmp_path / "ok.npz"), "--label-names", "a", "--model", "fast-cnn",
                 "--out", str(tmp_path / "r3")]) == 2
    assert "--label-names: 1 names (a) for labels 0..1" in capsys.readouterr().err
    assert main(["fit", "--data", str(tmp_path / "ok.npz"), "--target-recall", "2=0.9", "--model", "fast-cnn",
                 "--out", str(tmp_path / "r4")]) == 2
    assert "--target-recall: no class '2' (the classes: 0, 1)" in capsys.readouterr().err
    assert main(["fit", "--data", str(cifar3), "--label-names", "a,b,c", "--out", str(tmp_path / "r5")]) == 2
    assert "--label-names names the label values of arrays" in capsys.readouterr().err


def test_threshold_is_chosen_on_validation_alone():
    rng = np.random.default_rng(0)
    val_t = rng.integers(0, 2, 400)
    val_logits = np.stack([np.zeros(400), rng.normal(val_t * 1.5, 1.0)], 1)
    test_t = rng.integers(0, 2, 300)
    test_logits = np.stack([np.zeros(300), rng.normal(test_t * 1.5, 1.0)], 1)
    d = fit_decision("yes=0.9", ["no", "yes"], (val_logits, val_t), {"test": (test_logits, test_t)})
    assert d["val"]["sensitivity"] >= 0.9
    # the highest such threshold: one step up loses recall on val
    p = 1 / (1 + np.exp(-val_logits[:, 1]))
    above = np.sort(p[val_t == 1])
    higher = above[above > d["threshold"]][0]
    assert ((p >= higher) & (val_t == 1)).sum() / (val_t == 1).sum() < 0.9
    other = fit_decision("yes=0.9", ["no", "yes"], (val_logits, val_t), {"test": (-test_logits, 1 - test_t)})
    assert other["threshold"] == d["threshold"] and other["test"] != d["test"]
    with pytest.raises(ConfigError, match="binary"):
        fit_decision("yes=0.9", ["no", "yes", "maybe"], (np.zeros((3, 3)), np.zeros(3)))


def test_target_recall_fit_stores_the_threshold_and_predict_uses_it(tmp_path):
    """Two fits that differ only in their test arrays choose the same threshold; it reaches the
    recall on validation, and predict's labels follow it rather than the argmax."""
    runs = []
    for i, start in enumerate((0, 60)):
        data = pneumonia_slice(tmp_path / f"p{i}.npz", train=60, val=60, test=40, test_start=start)
        runs.append(tuneforge.fit(data=str(data), model="fast-cnn", epochs=2, batch_size=32, target_recall="1=0.97",
                                  out=str(tmp_path / f"run{i}"), **FAST))
    a, b = (r.report["decision"] for r in runs)
    assert a["threshold"] == b["threshold"] and a["test"] != b["test"]
    assert a["val"]["sensitivity"] >= 0.97
    config = json.loads((runs[0].run_dir / "model" / "config.json").read_text())
    assert config["decision"] == {"class": "1", "index": 1, "threshold": a["threshold"], "target_recall": 0.97}
    test = np.load(tmp_path / "p0.npz")
    files = []
    for j, img in enumerate(test["test_images"]):
        files.append(tmp_path / f"t{j}.png")
        Image.fromarray(img, "L").save(files[-1])
    answers = tuneforge.predict(runs[0].run_dir, files)
    probs = np.array([next(t["probability"] for t in ans["top"] if t["label"] == "1") for ans in answers])
    assert [ans["label"] for ans in answers] == ["1" if p >= a["threshold"] else "0" for p in probs]
    called = np.array([ans["label"] == "1" for ans in answers])
    truth = test["test_labels"][:, 0] == 1
    assert (called & truth).sum() / truth.sum() == pytest.approx(a["test"]["sensitivity"])
    ev = tuneforge.evaluate(runs[0].run_dir, tmp_path / "p0.npz", progress=False)
    assert ev["decision"]["test"]["sensitivity"] == pytest.approx(a["test"]["sensitivity"])


def test_target_recall_on_a_text_classifier(text_table, tmp_path):
    """The same threshold for a text model: chosen on its val table, applied by predict."""
    data = text_table(val_rows=32)
    quick = dict(progress=False, tensorboard=False, threads=2, baseline=False)
    r = tuneforge.fit(data=str(data), model="gru", embed_dim=16, hidden_size=16, num_layers=1, epochs=3, batch_size=8,
                      target_recall="p=0.9", out=str(tmp_path / "run"), **quick)
    d = r.report["decision"]
    assert d["class"] == "p" and d["val"]["sensitivity"] >= 0.9 and d["val"]["n"] == 32
    answers = tuneforge.predict(r.run_dir, texts=["good thing 3", "bad thing 5"])
    for ans in answers:
        p = next(t["probability"] for t in ans["top"] if t["label"] == "p")
        assert ans["label"] == ("p" if p >= d["threshold"] else "n")
    with pytest.raises(ConfigError, match="--target-recall: no class 'x'"):
        tuneforge.fit(data=str(data), model="gru", epochs=1, target_recall="x=0.9", out=str(tmp_path / "r2"), **quick)
