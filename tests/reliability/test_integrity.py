"""Bundle integrity and data checks: bundles are written whole (a full disk leaves the old one
loadable), every file (config.json included) is covered by a verified manifest, weight files
given with --weights / --init fail by flag and file name, and duplicate images across splits or
classes are warned about in the log and the report."""
from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import shutil
from pathlib import Path

import pytest
import torch

import tuneforge
from tuneforge.cli import main
from tuneforge.core import bundle as bundle_mod
from tuneforge.core.bundle import load_bundle, read_bundle_config, save_bundle
from tuneforge.core.models import create_model
from tuneforge.core.models.weights import load_state_dict_file, resolve_init
from tuneforge.deploy.predictor import Predictor
from tuneforge.errors import BundleError, ConfigError, TuneforgeError

CLASSES = ["airplane", "frog", "truck"]


def _meta() -> dict:
    return {"model": "seed-cnn", "model_args": {}, "classes": list(CLASSES),
            "preprocessing": {"image_size": 32, "resize": "crop", "scale": 1 / 255, "tta": None,
                              "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}


def _bundle(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_bundle(path, create_model("seed-cnn", 3, 32, pretrained=False), _meta())


def _contents(folder: Path) -> dict[str, bytes]:
    return {f.relative_to(folder).as_posix(): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


# ---------------------------------------------------------------- 4: whole-bundle writes


def test_export_over_an_existing_bundle_on_a_full_disk_keeps_the_old_bundle(tmp_path, monkeypatch):
    src = _bundle(tmp_path / "src")
    out = tmp_path / "out"
    tuneforge.export(src, out)
    before = _contents(out)
    real_copy = shutil.copy2

    def copy_half_then_full(a, b, *args, **kwargs):  # a full disk in the middle of the weights
        data = Path(a).read_bytes()
        Path(b).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(b))

    monkeypatch.setattr(shutil, "copy2", copy_half_then_full)
    with pytest.raises(TuneforgeError) as e:
        tuneforge.export(_bundle(tmp_path / "src2", seed=1), out)
    monkeypatch.setattr(shutil, "copy2", real_copy)
    msg = str(e.value)
    assert "\n" not in msg and str(out) in msg and "disk full" in msg
    assert _contents(out) == before  # byte for byte the bundle that was there
    load_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src", "src2"]  # no temp folder left


def test_save_bundle_failing_midway_leaves_the_previous_bundle(tmp_path, monkeypatch):
    """fit's own bundle write (run/model) goes through save_bundle: the same guarantee."""
    out = _bundle(tmp_path / "model")
    before = _contents(out)
    real_text, real_bytes = pathlib.Path.write_text, pathlib.Path.write_bytes

    def full(real):
        def write(self, data, *args, **kwargs):
            if self.name == "README.md":  # the last file of a bundle: everything else is written by now
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, data, *args, **kwargs)
        return write

    monkeypatch.setattr(pathlib.Path, "write_text", full(real_text))
    monkeypatch.setattr(pathlib.Path, "write_bytes", full(real_bytes))
    with pytest.raises(TuneforgeError, match=str(out)):
        _bundle(tmp_path / "model", seed=1)
    monkeypatch.undo()
    assert _contents(out) == before
    load_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_bundle_write_never_replaces_a_folder_that_is_not_a_bundle(tmp_path):
    keep = tmp_path / "photos"
    keep.mkdir()
    (keep / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(BundleError, match="not a bundle"):
        _bundle(keep)
    assert (keep / "holiday.jpg").read_bytes() == b"mine"


# ---------------------------------------------------------------- 6: the manifest


def test_every_file_of_a_bundle_is_in_its_verified_manifest(tmp_path):
    out = _bundle(tmp_path / "b")
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "README.md"}
    model, cfg = load_bundle(out)
    assert cfg["classes"] == CLASSES


class _Tokenizer:
    def save(self, folder: Path) -> str:
        (folder / "vocab.json").write_text('{"a": 1}')
        return "vocab.json"


def test_tokenizer_files_are_in_the_manifest_too(tmp_path):
    out = save_bundle(tmp_path / "b", create_model("seed-cnn", 3, 32, pretrained=False), _meta(), tokenizer=_Tokenizer())
    assert "vocab.json" in json.loads((out / "manifest.json").read_text())["files"]
    (out / "vocab.json").write_text('{"a": 2}')
    with pytest.raises(BundleError, match=r"vocab\.json: checksum"):
        load_bundle(out)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _flip_manifest(b: Path) -> None:
    """Record another checksum for config.json in the manifest, leaving its own checksum."""
    doc = json.loads((b / "manifest.json").read_text())
    sha = doc["files"]["config.json"]
    doc["files"]["config.json"] = sha[:-1] + ("0" if sha[-1] != "0" else "1")
    (b / "manifest.json").write_text(json.dumps(doc, indent=1))


@pytest.mark.parametrize("edit, refused", [
    (lambda b: _edit(b / "config.json", '"frog"', '"frok"'), r"config\.json: checksum"),  # a class name
    (lambda b: _edit(b / "config.json", '"image_size": 32', '"image_size": 64'), r"config\.json: checksum"),
    (lambda b: (b / "config.json").write_text(json.dumps(
        {k: v for k, v in json.loads((b / "config.json").read_text()).items() if k not in ("weights_sha256", "files")},
        indent=2)), r"config\.json: checksum"),  # deleting the checksum keys does not turn the check off
    (lambda b: (b / "manifest.json").unlink(), r"manifest\.json: missing.*tuneforge export"),
    (lambda b: _flip_manifest(b), r"manifest\.json: edited"),
    (lambda b: (b / "manifest.json").write_text("{"), r"manifest\.json: damaged"),
    (lambda b: (b / "README.md").write_text("# not the card"), r"README\.md: checksum"),
])
def test_edited_configs_and_manifests_are_refused_by_name(tmp_path, edit, refused):
    out = _bundle(tmp_path / "b")
    edit(out)
    with pytest.raises(BundleError, match=refused):
        load_bundle(out)
    with pytest.raises(BundleError, match=refused.split(":")[0]):
        Predictor(out)


def test_a_resigned_manifest_that_disagrees_with_config_checksums_is_refused(tmp_path):
    """Even a manifest rebuilt after the edit must agree with config.json's own checksums."""
    out = _bundle(tmp_path / "b")
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "weights_sha256": "0" * 64}))
    (out / "manifest.json").write_text(json.dumps(bundle_mod.manifest_doc(out)))
    with pytest.raises(BundleError, match="disagrees"):
        read_bundle_config(out)


def test_a_bundle_without_manifest_is_refused_but_can_be_re_exported(tmp_path):
    old = _bundle(tmp_path / "old")
    (old / "manifest.json").unlink()  # what every bundle before manifests looks like
    with pytest.raises(BundleError, match="re-export"):
        tuneforge.load(old)
    assert main(["export", str(old), "--out", str(tmp_path / "new")]) == 0
    tuneforge.load(tmp_path / "new")
    cfg = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "weights_sha256"}))
    with pytest.raises(BundleError, match="cannot be verified"):  # nothing to verify it by: not even export
        tuneforge.export(old, tmp_path / "new2")


def test_fit_and_export_write_manifests(seed_run, tmp_path):
    read_bundle_config(seed_run)  # run/model from fit
    out = tmp_path / "e"
    tuneforge.export(seed_run, out)
    assert "config.json" in json.loads((out / "manifest.json").read_text())["files"]


# ---------------------------------------------------------------- 9: weight files


@pytest.mark.parametrize("content", [b"", b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}", b"\xff" * 8 + b"x"])
def test_malformed_safetensors_weights_fail_by_flag_and_file(tmp_path, content):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"--weights: .*bad\.safetensors"):
        create_model("seed-cnn", 3, 32, pretrained=False, weights=str(bad))
    with pytest.raises(ConfigError, match=rf"--init: .*bad\.safetensors"):
        resolve_init(str(bad), "seed-cnn")
    run = tmp_path / "pretrain"
    run.mkdir()
    (run / "backbone.safetensors").write_bytes(content)
    with pytest.raises(ConfigError, match=rf"--init: .*backbone\.safetensors"):
        resolve_init(str(run), "seed-cnn")


def test_a_truncated_safetensors_file_and_a_non_state_dict_fail_by_name(tmp_path):
    from safetensors.torch import save_file
    good = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(1000)}, str(good))
    trunc = tmp_path / "t.safetensors"
    trunc.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=r"--init: .*t\.safetensors"):
        resolve_init(str(trunc), "seed-cnn")
    pt = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], pt)
    with pytest.raises(ConfigError, match=r"--weights: .*list\.pt.*not a state dict"):
        load_state_dict_file(pt)


def test_fit_init_with_a_damaged_file_is_a_one_line_error_naming_init(cifar3, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    code = main(["fit", "--data", str(cifar3), "--model", "seed-cnn", "--init", str(bad), "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--no-progress", "--cache-dir", ""])
    err = capsys.readouterr().err
    assert code == 2 and "--init" in err and "bad.safetensors" in err and "Traceback" not in err


# ---------------------------------------------------------------- 10: duplicates


def test_duplicates_across_splits_and_classes_are_warned_in_log_and_report(cifar3, tmp_path, caplog):
    data = tmp_path / "data"
    for split in ("train", "test"):
        for c in CLASSES:
            (data / split / c).mkdir(parents=True)
            for f in sorted((cifar3 / split / c).iterdir())[:12]:
                shutil.copy(f, data / split / c / f.name)
    leaked = sorted((data / "test" / "frog").iterdir())[:2]
    for f in leaked:  # two test images copied into train
        shutil.copy(f, data / "train" / "frog" / f"copy_{f.name}")
    twice = sorted((data / "train" / "truck").iterdir())[0]
    shutil.copy(twice, data / "train" / "airplane" / f"also_{twice.name}")  # one image under two classes
    with caplog.at_level(logging.WARNING, logger="tuneforge"):
        tuneforge.fit(data=str(data), model="seed-cnn", epochs=1, batch_size=16, out=str(tmp_path / "run"),
                      progress=False, tensorboard=False, threads=2, cache_dir="")
    dup = json.loads((tmp_path / "run" / "report.json").read_text())["data"]["duplicates"]
    assert dup["across_splits"]["count"] == 2 and dup["across_splits"]["pairs"] == {"test/train": 2}
    assert dup["across_classes"]["count"] == 1 and dup["across_classes"]["pairs"] == {"airplane/truck": 1}
    assert any(f"copy_{leaked[0].name}" in p for e in dup["across_splits"]["examples"] for p in e)
    assert any("more than one split" in r.getMessage() for r in caplog.records)
    assert any("more than one class" in r.getMessage() for r in caplog.records)
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Duplicates" in html and f"also_{twice.name}" in html


def test_content_hashes_equal_the_decode_cache_key_hashes(tmp_path):
    import hashlib
    from tuneforge.core.data.images import content_hashes
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert content_hashes([f]) == [hashlib.sha1(b"abc").hexdigest()]
    f.write_bytes(b"abcd")  # changed: hashed again, not remembered
    assert content_hashes([f]) == [hashlib.sha1(b"abcd").hexdigest()]


def test_a_killed_bundle_writers_temp_folder_is_removed_by_the_next_write(seed_run, tmp_path):
    """A writer killed mid-write leaves `.NAME.PID.XXXX.tmp`; the next write into the same place
    removes it when that process is gone, and leaves a live writer's folder alone."""
    import subprocess
    import sys

    import tuneforge
    out = tmp_path / "bundle"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".bundle.{int(dead.stdout)}.abcd1234.tmp"
    live = tmp_path / f".bundle.{os.getpid()}.efgh5678.tmp"
    for d in (stale, live):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half")
    tuneforge.export(seed_run, out)
    assert not stale.exists() and live.exists()
    assert (out / "manifest.json").is_file()
