"""Runs, resume and the files a run writes: a resumed run is the run it continues (changed
settings or data are refused before anything is written), every file is written atomically,
a full or read-only disk is a one-line error naming the path, a kill at any moment (even inside
a checkpoint write) is followed by a resume that ends bit for bit where the uninterrupted run
ends, and a single class is no classifier."""
from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tuneforge
from tuneforge.cli import main
from tuneforge.core import fs
from conftest import ctrl_c_in_epoch
from tuneforge.errors import DataError, StorageError

ROOT = Path(__file__).resolve().parents[2]
# seed-cnn, 3 epochs on cifar3: a few seconds; patience 0 so every run trains all epochs
KW = dict(model="seed-cnn", epochs=3, batch_size=32, optimizer="adam", patience=0, progress=False,
          tensorboard=False, threads=1)


def _flags(**kw) -> list[str]:
    out = []
    for k, v in kw.items():
        name = "--" + k.replace("_", "-")
        out += [name] if v is True else [f"--no-{k.replace('_', '-')}"] if v is False else [name, str(v)]
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _weights_equal(a: Path, b: Path) -> None:
    """The final bundle weights and last.pt's model of two run folders are identical."""
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ca = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    cb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    assert [h["train_loss"] for h in ca["engine"]["history"]] == [h["train_loss"] for h in cb["engine"]["history"]]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def full(cifar3, cache, tmp_path_factory) -> Path:
    """The uninterrupted run every resumed run must equal."""
    out = tmp_path_factory.mktemp("full") / "run"
    tuneforge.fit(data=str(cifar3), out=str(out), cache_dir=str(cache), **KW)
    return out


def _cut(data: Path, out: Path, cache: Path, monkeypatch) -> None:
    """The run of `full`, Ctrl-C in its third epoch."""
    restore = ctrl_c_in_epoch(monkeypatch, 2)
    cut = tuneforge.fit(data=str(data), out=str(out), cache_dir=str(cache), **KW)
    restore()
    assert cut.report["epochs_run"] == 2


def test_a_refused_resume_changes_nothing_and_a_plain_resume_still_ends_like_the_full_run(
        full, cifar3, cache, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    shutil.copytree(cifar3, data, symlinks=True)
    run = tmp_path / "cut"
    _cut(data, run, cache, monkeypatch)
    before = _snapshot(run)

    other = tmp_path / "other"  # other images of the same classes
    for c in ("airplane", "frog", "truck"):
        (other / "train" / c).mkdir(parents=True)
        for f in sorted((data / "train" / c).iterdir())[:50]:
            os.symlink(os.readlink(f), other / "train" / c / f.name)
    for flags, named in ((["--model", "fast-cnn"], "--model"), (["--lr", "0.5"], "--lr"), (["--seed", "7"], "--seed"),
                         (["--data", str(other)], "--data"), (["--augment", "none", "--epochs", "5"], "--augment")):
        assert main(["fit", "--resume", str(run), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err and "--epochs" in err, err  # the safe ones are listed
        assert _snapshot(run) == before, flags

    # the same file names with other contents, and a file gone: the data check refuses both
    victim = sorted((data / "train" / "frog").iterdir())[3]
    target = os.readlink(victim)
    victim.unlink()
    assert main(["fit", "--resume", str(run), "--no-progress"]) == 2
    assert victim.name in capsys.readouterr().err and _snapshot(run) == before
    os.symlink(os.readlink(sorted((data / "train" / "truck").iterdir())[0]), victim)
    with pytest.raises(DataError, match="other contents"):
        tuneforge.fit(resume=str(run), progress=False)
    assert _snapshot(run) == before
    victim.unlink()
    os.symlink(target, victim)

    # settings given at the run's own values, or the data path spelled another way, are no change
    resumed = tuneforge.fit(resume=str(run), lr=None, seed=0, data=str(data) + "/", model="seed-cnn", progress=False)
    assert resumed.report["epochs_run"] == 3
    _weights_equal(full, run)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3

    # a resume-safe setting may change, and config.yaml and report.json record it
    more = tuneforge.fit(resume=str(run), epochs=4, patience=5, threads=2, progress=False)
    assert more.report["epochs_run"] == 4
    assert "epochs: 4" in (run / "config.yaml").read_text() and "patience: 5" in (run / "config.yaml").read_text()


def test_resume_safe_settings_are_marked_in_the_config():
    safe = set(tuneforge.core.run.resume_safe(tuneforge.FitConfig))
    assert {"epochs", "patience", "progress", "tensorboard", "threads", "max_minutes", "eval_batch_size"} <= safe
    assert not {"model", "data", "seed", "lr", "optimizer", "batch_size", "augment", "val_fraction", "schedule"} & safe


def test_a_full_disk_is_one_line_naming_the_path_and_leaves_no_temp_file(cifar3, tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"\0" * 1000)  # part of the file reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "run"
    args = ["fit", "--data", str(cifar3), "--out", str(run), *_flags(**{**KW, "epochs": 1})]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "disk full" in err and str(run / "checkpoints" / "last.pt") in err, err
    assert not list(run.rglob("*.tmp")), list(run.rglob("*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)

    real_replace = os.replace

    def read_only(src, dst, *a, **k):
        if str(dst).endswith("report.json"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", read_only)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "read-only" in err and str(run / "report.json") in err, err
    assert not list(run.rglob("*.tmp"))


def test_atomic_write_keeps_the_old_file_and_names_the_error(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    fs.atomic_write_text(path, "old")

    def no_fsync(fd):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(StorageError, match=f"cannot write {path}: permission denied"):
        fs.atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
    monkeypatch.undo()
    with pytest.raises(ValueError):  # not a storage error: raised as it is, temp removed all the same
        fs.atomic_write(path, lambda f: (f.write(b"x"), int("bug")))
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_is_one_line(full, tmp_path, capsys):
    run = tmp_path / "ro"
    shutil.copytree(full, run)
    for p in [run, *run.rglob("*")]:
        if p.is_dir():
            p.chmod(0o555)
    try:
        assert main(["fit", "--resume", str(run), "--epochs", "4", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(run) in err and "permission denied" in err
    finally:
        for p in [run, *run.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing catches it."""


def test_a_kill_inside_the_checkpoint_write_keeps_the_previous_last_pt(full, cifar3, cache, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_replace = os.replace
    seen: dict[str, bytes] = {}

    def killed_on_second_checkpoint(src, dst, *a, **k):
        if Path(dst).name == "last.pt" and Path(dst).exists():
            seen["previous"] = Path(dst).read_bytes()
            seen["temp"] = Path(src).read_bytes()  # the new checkpoint is complete on disk, not yet renamed
            raise Killed
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", killed_on_second_checkpoint)
    with pytest.raises(Killed):
        tuneforge.fit(data=str(cifar3), out=str(run), cache_dir=str(cache), **KW)
    monkeypatch.setattr(os, "replace", real_replace)
    last = run / "checkpoints" / "last.pt"
    assert last.read_bytes() == seen["previous"] and torch.load(last, weights_only=True)["engine"]["epoch"] == 1
    # what SIGKILL leaves (no handler runs): the temp file, here half written
    stale = last.with_name(f".last.pt.{os.getpid() + 1}.tmp")
    stale.write_bytes(seen["temp"][: len(seen["temp"]) // 2])
    tuneforge.fit(resume=str(run), progress=False)
    assert not stale.exists()
    _weights_equal(full, run)


# A process that imports tuneforge once and forks one fit per request: the fault-injection loop
# pays the import (seconds) once, and the fork is killed, not the process holding the imports.
FORKER = r"""
import os, sys
from tuneforge.cli import main
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # fit's summary line must not reach the parent's pipe
        os._exit(main(line.split("\0")))
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("done", flush=True)
"""


@pytest.mark.e2e
def test_a_fit_killed_at_random_moments_resumes_to_the_uninterrupted_result(full, cifar3, cache, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", FORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    rng = random.Random(15)

    def start(out: Path) -> int:
        args = ["fit", "--data", str(cifar3), "--out", str(out), "--cache-dir", str(cache), *_flags(**KW)]
        proc.stdin.write("\0".join(args) + "\n")
        proc.stdin.flush()
        return int(proc.stdout.readline())

    try:
        t0 = time.perf_counter()
        start(tmp_path / "ref")  # the same fit in a forked child, uninterrupted: how long one takes
        assert proc.stdout.readline().strip() == "done"
        duration = time.perf_counter() - t0
        _weights_equal(full, tmp_path / "ref")
        for i in range(5):
            out = tmp_path / f"k{i}"
            pid = start(out)
            time.sleep(rng.uniform(0.0, duration))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it finished first: resuming a finished run must change nothing either
            assert proc.stdout.readline().strip() == "done"
            if (out / "config.yaml").exists():
                tuneforge.fit(resume=str(out), progress=False)
            else:  # killed before the run folder had settings: there is nothing to resume
                tuneforge.fit(data=str(cifar3), out=str(out), cache_dir=str(cache), **KW)
            _weights_equal(full, out)
            assert not [p for p in out.rglob("*.tmp") if p.is_file()], i
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()


def test_a_single_class_is_refused_by_name(cifar3, tmp_path):
    one = tmp_path / "one"
    (one / "train").mkdir(parents=True)
    os.symlink(cifar3 / "train" / "frog", one / "train" / "frog")
    with pytest.raises(DataError, match=r"only one class.*'frog'"):
        tuneforge.fit(data=str(one), out=str(tmp_path / "r"), **{**KW, "epochs": 1})
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"text number {i},spam\n" for i in range(20)))
    with pytest.raises(DataError, match=r"one class \('spam'\)"):
        tuneforge.fit(data=str(table), out=str(tmp_path / "r2"), **{**KW, "model": "lstm", "epochs": 1})
