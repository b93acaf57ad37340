"""Fuzzing the readers with Hypothesis: text tables (CSV/TSV/JSONL), image+text tables, numeric
sequences, image decoding of random and mutated real JPEG/PNG bytes, and bundle loading of
mutated config.json/manifest.json. Each either succeeds or raises tuneforge's own error
(DataError/ConfigError/BundleError), never anything else, within a deadline per example (and
decoding within a memory bound: no example may grow the process by more than 1 GB)."""
from __future__ import annotations

import io
import json
import os
import resource
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from tuneforge.core.bundle import load_bundle, manifest_doc, save_bundle
from tuneforge.core.data import images as images_mod
from tuneforge.core.data.images import decode_files
from tuneforge.core.data.multimodal import read_image_text_table
from tuneforge.core.data.sequences import read_sequences
from tuneforge.core.data.text import read_rows, read_text_file
from tuneforge.core.models import create_model
from tuneforge.errors import BundleError, ConfigError, DataError


DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", Path(__file__).resolve().parents[2].parent / "shared" / "datasets"))
OURS = (DataError, ConfigError, BundleError)
FUZZ = settings(max_examples=50, deadline=2000, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)  # the same examples every run: a CI failure reproduces locally


@contextmanager
def _file(name: str, data: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        yield p


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- tables

SUFFIX = st.sampled_from(["t.csv", "t.tsv", "t.jsonl", "t.txt", "train"])
CELL = st.text(alphabet=st.characters(codec="utf-8"), max_size=20) | st.sampled_from(
    ['"', '""', "\t", "\r", "\n", "\x00", ",", "{", "[", "null", "1e999", "NaN", "[1,[2]]", "[[1],[1,2]]", "a" * 300])


@st.composite
def tables(draw) -> tuple[str, bytes]:
    """A table file: random bytes, or a header and rows of awkward cells, as CSV/TSV/JSONL."""
    name = draw(SUFFIX)
    if draw(st.booleans()):
        return name, draw(st.binary(max_size=600))
    cols = draw(st.lists(st.sampled_from(["text", "label", "image", "values", "id", "t", "x"]), min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(CELL, min_size=0, max_size=6), max_size=8))
    if name.endswith("jsonl"):
        lines = [json.dumps({c: v for c, v in zip(cols, r)}) if draw(st.booleans()) else json.dumps(r) for r in rows]
        return name, "\n".join(lines).encode("utf-8", "surrogatepass")
    sep = "\t" if name.endswith("tsv") else ","
    text = "\n".join([sep.join(cols)] + [sep.join(r) for r in rows])
    return name, text.encode("utf-8", "surrogatepass")


@FUZZ
@given(tables(), st.booleans())
@example(("t.jsonl", b"[" * 100_000), False)  # deep nesting: RecursionError in json
@example(("t.csv", b"text,label\n\"" + b"a" * 200_000 + b"\",x\n"), False)  # a field over csv's size limit
def test_text_tables_raise_only_our_errors(table, skip):
    name, data = table
    with _file(name, data) as p:
        try:
            read_rows(p, skip_bad_rows=skip)
        except OURS:
            pass
        try:
            read_text_file(p, "text", "label", skip_bad_rows=skip)
        except OURS:
            pass


@FUZZ
@given(tables(), st.booleans(), st.booleans())
@example(("t.csv", b"image,text,label\n" + b"x" * 5000 + b",a cat,c\n"), False, False)  # a file name too long
@example(("t.csv", b"image,text,label\nx\x00y.jpg,a cat,c\n"), False, False)  # NUL in a path
def test_image_text_tables_raise_only_our_errors(table, strict, allow_missing):
    name, data = table
    with _file(name, data) as p:
        try:
            read_image_text_table(p, "image", "text", "label", strict=strict, allow_missing=allow_missing)
        except OURS:
            pass


@FUZZ
@given(tables(), st.booleans(), st.booleans())
@example(("t.jsonl", b'{"id": "a", "label": "x", "v": "1"}\n{"id": "a", "label": "x"}\n'), True, False)  # a row lacking a feature
@example(("t.csv", b"label,values\nx," + b"[" * 100_000 + b"\n"), False, False)  # deep nesting in a cell
def test_numeric_sequences_raise_only_our_errors(table, by_id, regression):
    name, data = table
    with _file(name, data) as p:
        try:
            if by_id:
                read_sequences(p, "label", regression=regression, id_column="id")
            else:
                read_sequences(p, "label", regression=regression, sequence_column="values")
        except OURS:
            pass


# ---------------------------------------------------------------- images


def _real_jpeg() -> bytes:
    folder = DATASETS / "cifar10" / "test" / "frog"
    if not folder.is_dir():
        pytest.fail(f"real test data missing: {folder}")
    return sorted(folder.iterdir())[0].read_bytes()


def _real_png() -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(_real_jpeg())).save(buf, "PNG")
    return buf.getvalue()


@st.composite
def mutated(draw, source: bytes) -> bytes:
    """A real file with bytes flipped, a run of bytes overwritten, and/or truncated."""
    data = bytearray(source)
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):  # overwrite a run early in the file (headers: sizes, markers)
        i = draw(st.integers(0, min(400, len(data) - 1)))
        run = draw(st.binary(min_size=1, max_size=8))
        data[i:i + len(run)] = run
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _huge_jpeg() -> bytes:
    """The real JPEG with its frame header announcing 60000x60000 pixels (about 600 bytes)."""
    data = bytearray(_real_jpeg())
    i = 2
    while data[i + 1] not in images_mod._SOF_MARKERS:
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    data[i + 5:i + 9] = (60000).to_bytes(2, "big") * 2
    return bytes(data)


def _decodes_or_refuses(name: str, data: bytes) -> None:
    before = _rss_mb()
    with _file(name, data) as p:
        arr, ok, skipped = decode_files([p], 32, "crop")  # unreadable files are skipped, never raised
        assert arr.shape == (int(ok.sum()), 3, 32, 32) and len(skipped) == int((~ok).sum())
        try:
            decode_files([p], 32, "squash", strict=True)
        except DataError:
            pass
    assert _rss_mb() - before < 1024


@FUZZ
@given(st.sampled_from(["a.jpg", "a.png", "a.gif", "a.webp"]), st.binary(max_size=400))
def test_random_bytes_as_images_are_skipped_or_refused(name, data):
    _decodes_or_refuses(name, data)


@FUZZ
@given(st.data())
@example(None)
def test_mutated_real_jpegs_and_pngs_are_decoded_or_refused(data):
    if data is None:  # the explicit example: a header announcing 3.6 gigapixels
        _decodes_or_refuses("bomb.jpg", _huge_jpeg())
        return
    kind = data.draw(st.sampled_from(["jpg", "png"]))
    source = _real_jpeg() if kind == "jpg" else _real_png()
    _decodes_or_refuses(f"a.{kind}", data.draw(mutated(source)))


def test_a_jpeg_announcing_gigapixels_is_never_given_to_libjpeg(monkeypatch, tmp_path):
    """The fast JPEG path reads the size from the header first: torchvision would allocate
    10.8 GB for this 600-byte file before finding out it is short."""
    import torchvision.io
    called = []
    monkeypatch.setattr(torchvision.io, "decode_jpeg", lambda *a, **k: called.append(1) or torch.zeros(3, 1, 1))
    p = tmp_path / "bomb.jpg"
    p.write_bytes(_huge_jpeg())
    arr, ok, skipped = decode_files([p], 32)
    assert not called and not ok.any() and "pixels" in skipped[0]["reason"]


# ---------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    meta = {"model": "seed-cnn", "model_args": {}, "classes": ["a", "b"],
            "preprocessing": {"image_size": 32, "resize": "crop", "scale": 1 / 255, "tta": None,
                              "mean": [0.5] * 3, "std": [0.25] * 3}}
    return save_bundle(tmp_path_factory.mktemp("fuzz") / "b", create_model("seed-cnn", 2, 32, pretrained=False), meta)


@contextmanager
def _copy(bundle: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(shutil.copytree(bundle, Path(d) / "b"))


def _flip(data: bytes, draw) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(out) - 1))
        out[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return bytes(out)


@FUZZ
@given(st.data(), st.sampled_from(["config.json", "manifest.json"]))
def test_mutated_config_or_manifest_bytes_are_refused_as_bundle_errors(bundle_dir, data, name):
    with _copy(bundle_dir) as b:
        (b / name).write_bytes(_flip((b / name).read_bytes(), data.draw))
        try:
            load_bundle(b)
        except BundleError:
            pass


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8)


@FUZZ
@given(st.sampled_from(["model", "model_args", "classes", "preprocessing", "task", "format_version", "files",
                        "weights_sha256"]), JSON, st.booleans())
def test_a_config_with_wrong_values_and_a_matching_manifest_is_a_bundle_error(bundle_dir, key, value, legacy):
    """Even a config.json whose manifest was rebuilt to match (or an old bundle without one,
    as export reads it) must fail as a BundleError when its values make no sense."""
    with _copy(bundle_dir) as b:
        cfg = json.loads((b / "config.json").read_text())
        cfg[key] = value
        (b / "config.json").write_text(json.dumps(cfg))
        if legacy:
            (b / "manifest.json").unlink()
        else:
            (b / "manifest.json").write_text(json.dumps(manifest_doc(b)))
        try:
            load_bundle(b, legacy=legacy)
        except BundleError:
            pass
