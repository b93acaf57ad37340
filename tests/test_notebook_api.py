"""The notebook-friendly API: path arguments as str or Path, in-memory data (DataFrames, lists of
(path, label) pairs), user callbacks, the returned run's history/predict/evaluate, and the
learning-rate range test (`lr_find`, `fit(lr="auto")`, `tuneforge lr-find`, `fit --lr auto`), on
small real data (cifar3) and generated texts."""
from __future__ import annotations

import json
import math
import random
import re
import shlex
from pathlib import Path

import pytest
import yaml

import tuneforge
from tuneforge.cli import main
from tuneforge.errors import ConfigError, DataError

QUICK = dict(progress=False, tensorboard=False, threads=2)
IMAGES = dict(model="seed-cnn", batch_size=32, **QUICK)
README = Path(__file__).resolve().parents[1] / "README.md"


def _pairs(root: Path, split: str) -> list[tuple[str, str]]:
    return [(str(f), c.name) for c in sorted((root / split).iterdir()) for f in sorted(c.iterdir())]


def _texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A rule a small GRU learns in one or two epochs: 'zebra' in the text means 'yes'."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        words = [f"w{rng.randrange(30)}" for _ in range(rng.randrange(3, 8))]
        if i % 2:
            words.insert(rng.randrange(len(words)), "zebra")
        texts.append(" ".join(words))
        labels.append("yes" if i % 2 else "no")
    return texts, labels


# ---------------------------------------------------------------- paths as str or Path

def test_path_arguments_take_pathlib_paths(cifar3, tmp_path):
    """init=Path(...) crashed writing config.yaml (yaml RepresenterError) and left an empty folder."""
    first = tuneforge.fit(data=cifar3, epochs=1, out=tmp_path / "first", **IMAGES)
    weights = first.run_dir / "model" / "model.safetensors"
    assert weights.is_file()
    run = tuneforge.fit(data=Path(cifar3), init=weights, out=tmp_path / "second", epochs=1, **IMAGES)
    recorded = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert recorded["init"] == str(weights) and recorded["data"] == str(cifar3) and recorded["out"] == str(tmp_path / "second")
    cfg = tuneforge.FitConfig(data=Path(cifar3), out=tmp_path / "third", epochs=1, **IMAGES)
    assert tuneforge.fit(cfg).config.out == str(tmp_path / "third")


# ---------------------------------------------------------------- in-memory data

def test_list_of_path_label_pairs(cifar3, tmp_path):
    run = tuneforge.fit(data=_pairs(cifar3, "train"), test=_pairs(cifar3, "test"), epochs=3, out=tmp_path / "run",
                        **IMAGES)
    assert run.report["data"]["train"] + run.report["data"]["val"] == 180 and run.report["data"]["test"] == 90
    assert run.report["test"]["accuracy"] > 0.45, run.report["test"]  # chance: 1/3
    recorded = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert recorded["data"] == str(run.run_dir / "data" / "images")  # inside the run folder, as config.yaml says
    assert sorted(p.name for p in (run.run_dir / "data" / "images").iterdir()) == ["test", "train"]
    # --resume finds the data where config.yaml says it is
    more = tuneforge.fit(resume=run.run_dir, epochs=4, **QUICK)
    assert more.report["epochs_run"] == 4


def test_image_dataframe(cifar3, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(_pairs(cifar3, "train"), columns=["path", "label"])
    run = tuneforge.fit(data=frame, epochs=1, out=tmp_path / "run", **IMAGES)
    assert run.report["classes"] == ["airplane", "frog", "truck"] and run.config.data.startswith(str(run.run_dir))


def test_text_dataframe_with_val_and_test(tmp_path):
    pd = pytest.importorskip("pandas")
    frames = {}
    for split, (n, seed) in {"data": (400, 0), "val": (60, 1), "test": (100, 2)}.items():
        texts, labels = _texts(n, seed)
        frames[split] = pd.DataFrame({"review": texts, "label": labels})
    run = tuneforge.fit(**frames, text_column="review", model="gru", epochs=6, batch_size=32, embed_dim=32,
                        hidden_size=32, num_layers=1, lr=3e-3, patience=0, out=tmp_path / "run", **QUICK)
    assert run.report["data"]["train"] == 400 and run.report["test"]["n"] == 100
    assert run.report["test"]["accuracy"] >= 0.8, run.report["test"]  # chance: 0.5
    assert [p["label"] for p in run.predict(["w1 w2 zebra w3", "w1 w2 w3 w4 w5"], top_k=1)] == ["yes", "no"]
    assert (run.run_dir / "data" / "train.csv").is_file()


def test_image_text_dataframe(cifar3, tmp_path):
    pd = pytest.importorskip("pandas")
    rows = [(p, f"a photo of something {i % 7}", label) for i, (p, label) in enumerate(_pairs(cifar3, "train"))]
    frame = pd.DataFrame(rows, columns=["path", "text", "label"])
    run = tuneforge.fit(data=frame, image_model="seed-cnn", modalities="image", image_size=32, epochs=1, lr="auto",
                        batch_size=32, out=tmp_path / "run", cache_dir=str(tmp_path / "cache"), **QUICK)
    assert run.report["classes"] == ["airplane", "frog", "truck"] and math.isfinite(run.report["lr_auto"]["suggested"])
    assert run.config.image_column == "path" and run.config.text_column == "text"


def test_dataframe_without_a_label_column_is_refused(tmp_path):
    pd = pytest.importorskip("pandas")
    with pytest.raises(DataError, match="no label column 'label'"):
        tuneforge.fit(data=pd.DataFrame({"text": ["a", "b"], "y": [0, 1]}), out=tmp_path / "r", **QUICK)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- callbacks, history, predict, evaluate

class Recorder(tuneforge.Callback):
    """Records the epochs it sees and stops training after epoch 2."""

    def __init__(self):
        self.started, self.epochs, self.ended = False, [], False

    def on_fit_start(self, engine):
        self.started = True

    def on_epoch_end(self, engine, record):
        self.epochs.append(record["epoch"])
        if record["epoch"] == 2:
            engine.request_stop("two epochs are enough")

    def on_fit_end(self, engine):
        self.ended = True


def test_callback_stops_after_epoch_2_and_run_has_history_predict_evaluate(cifar3, tmp_path):
    recorder = Recorder()
    run = tuneforge.fit(data=cifar3, epochs=6, out=tmp_path / "run", callbacks=[recorder], **IMAGES)
    assert recorder.started and recorder.ended and recorder.epochs == [1, 2]
    assert run.report["stopped_because"] == "two epochs are enough"
    assert [h["epoch"] for h in run.history] == [1, 2] and all("val_accuracy" in h for h in run.history)
    assert run.history == [json.loads(l) for l in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    image = next((cifar3 / "test" / "frog").iterdir())
    one, = run.predict(image)
    assert one["label"] in ("airplane", "frog", "truck") and one["path"] == str(image)
    assert run.predict([image, image], top_k=1) == tuneforge.predict(run.run_dir, [image, image], top_k=1)
    report = run.evaluate(cifar3, progress=False)
    assert report["test"]["n"] == 90
    assert report["test"] == tuneforge.evaluate(run.run_dir, cifar3, progress=False)["test"]


# ---------------------------------------------------------------- learning-rate range test

def test_lr_find_suggests_a_rate_within_the_range(cifar3, tmp_path):
    result = tuneforge.lr_find(data=cifar3, out=tmp_path / "lr", **IMAGES)
    lrs, losses = result["lrs"], result["losses"]
    assert 10 <= len(lrs) <= 100 and len(losses) == len(lrs)
    assert lrs[0] == pytest.approx(1e-7) and all(b > a for a, b in zip(lrs, lrs[1:])) and lrs[-1] <= 10
    assert math.isfinite(result["suggested"]) and lrs[0] <= result["suggested"] <= lrs[-1]
    assert Path(result["plot"]).is_file() and Path(result["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "lr" / "lr_find.json").read_text())["suggested"] == result["suggested"]
    with pytest.raises(ConfigError, match="--epochs"):
        tuneforge.lr_find(data=cifar3, epochs=3, **IMAGES)


def test_lr_find_leaves_the_fit_unchanged(cifar3, tmp_path):
    """The range test trains copies: a fit after it (same process, same settings) is the fit without it."""
    plain = tuneforge.fit(data=cifar3, epochs=1, lr=1e-3, out=tmp_path / "plain", **IMAGES)
    tuneforge.lr_find(data=cifar3, out=tmp_path / "lr", num_steps=20, **IMAGES)
    again = tuneforge.fit(data=cifar3, epochs=1, lr=1e-3, out=tmp_path / "again", **IMAGES)
    assert again.history[0]["train_loss"] == plain.history[0]["train_loss"]


def test_fit_lr_auto_trains_above_chance_and_records_the_rate(cifar3, tmp_path, capsys):
    out = tmp_path / "auto"
    assert main(["fit", "--data", str(cifar3), "--model", "seed-cnn", "--lr", "auto", "--epochs", "4",
                 "--batch-size", "32", "--out", str(out), "--no-progress", "--no-tensorboard", "--threads", "2"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["test_accuracy"] > 0.45, printed  # chance: 1/3
    report = json.loads((out / "report.json").read_text())
    lr = report["lr_auto"]["suggested"]
    assert math.isfinite(lr) and 1e-7 <= lr <= 10 and (out / "plots" / "lr_find.png").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == "auto"
    history = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[0]["lr"] <= lr  # the cosine schedule's peak is the chosen rate


def test_lr_auto_is_kept_on_resume(cifar3, tmp_path):
    first = tuneforge.fit(data=cifar3, lr="auto", epochs=1, out=tmp_path / "run", **IMAGES)
    lr = first.report["lr_auto"]["suggested"]
    more = tuneforge.fit(resume=tmp_path / "run", epochs=2, **QUICK)
    assert more.report["lr_auto"]["suggested"] == lr and len(more.history) == 2


def test_cli_lr_find_and_bad_lr_word(cifar3, tmp_path, capsys):
    assert main(["lr-find", "--data", str(cifar3), "--model", "seed-cnn", "--batch-size", "32", "--num-steps", "30",
                 "--out", str(tmp_path / "lr"), "--no-progress", "--threads", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] <= 30 and Path(printed["plot"]).is_file() and math.isfinite(printed["suggested"])
    assert main(["fit", "--data", str(cifar3), "--lr", "fast", "--out", str(tmp_path / "bad")]) == 2
    assert "--lr must be a number > 0 or 'auto', got 'fast'" in capsys.readouterr().err


# ---------------------------------------------------------------- the README's Python API section, run literally

def _readme_snippets() -> tuple[list[str], list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("<!-- notebook-api -->"):text.index("<!-- /notebook-api -->")]
    shell = [l for block in re.findall(r"```bash\n(.*?)```", section, re.S) for l in block.splitlines() if l.strip()]
    return re.findall(r"```python\n(.*?)```", section, re.S), shell


def test_readme_notebook_snippets_run(cifar3, tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)
    # the snippets' data: photos/ (class folders: cifar3) and reviews.csv (generated texts)
    texts, labels = _texts(200)
    (tmp_path / "reviews.csv").write_text("review,sentiment\n" + "".join(f"{t},{l}\n" for t, l in zip(texts, labels)))
    (tmp_path / "photos").symlink_to(cifar3)
    code, shell = _readme_snippets()
    assert len(code) == 4 and len(shell) == 2
    scope: dict = {}
    for block in code:
        exec(compile(block, "README.md", "exec"), scope)
    assert math.isfinite(scope["run"].report["lr_auto"]["suggested"])
    for line in shell:
        words = shlex.split(line)
        assert words[0] == "tuneforge" and main(words[1:]) == 0, line
    assert (tmp_path / "runs" / "lr-cli" / "plots" / "lr_find.png").is_file()
    assert (tmp_path / "runs" / "auto-cli" / "report.json").is_file()
