"""Data larger than memory (`--cache disk`): decoded images and cached frozen features in
memory-mapped files that batches gather from, the same batches and weights as the in-memory
path, a cache entry reused, invalidated by content and rebuilt when damaged, and RssAnon that
does not grow with the decoded set."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tuneforge
from tuneforge.core.data import BatchLoader, load_image_folder
from tuneforge.core.data import images as images_mod
from tuneforge.core.data.cache import memoised
from tuneforge.core.data.mapped import choose_store, scratch_tensor
from tuneforge.core.models import create_model
from tuneforge.core.models.base import extract_features


def backing_file(t: torch.Tensor) -> str:
    """The file a tensor's memory is mapped from ('' for anonymous memory), from /proc/self/maps."""
    ptr = t.data_ptr()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi:
                return parts[5].strip() if len(parts) > 5 and parts[5].strip().startswith("/") else ""
    return ""


def make_folder(root: Path, n: int, side: int = 12, seed: int = 0) -> Path:
    """n small generated PNGs in two class folders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(d / f"{i:05d}.png")
    return root


def count_decodes(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = images_mod._decoded

    def counted(jobs, workers):
        calls.append(len(jobs))
        return original(jobs, workers)

    monkeypatch.setattr(images_mod, "_decoded", counted)
    return calls


def test_a_fit_from_mapped_images_trains_on_the_same_batches_to_the_same_weights(cifar3, tmp_path, monkeypatch):
    seen: dict[str, list] = {"memory": [], "disk": []}
    original = BatchLoader.epoch

    def recording(self, epoch=0):
        for x, y in original(self, epoch):
            seen[mode].append((hashlib.sha1(x.numpy().tobytes()).hexdigest(), y.tolist(), backing_file(self.images)))
            yield x, y

    monkeypatch.setattr(BatchLoader, "epoch", recording)
    weights = {}
    for mode in ("memory", "disk"):
        res = tuneforge.fit(data=str(cifar3), model="seed-cnn", epochs=1, batch_size=32, out=str(tmp_path / mode),
                            progress=False, tensorboard=False, threads=2, cache=mode, cache_dir=str(tmp_path / "cache"),
                            baseline=False)
        weights[mode] = {k: v.clone() for k, v in res.model.state_dict().items()}
    assert [s[:2] for s in seen["memory"]] == [s[:2] for s in seen["disk"]] and len(seen["disk"]) > 3
    assert all(s[2] == "" for s in seen["memory"])  # in process memory
    # disk: train and val are the split's rows in an unlinked scratch file, test is the cache entry itself
    files = {s[2] for s in seen["disk"]}
    assert all(f.startswith(str(tmp_path / "cache")) for f in files), files
    assert any(f.endswith(".npy") for f in files) and any("scratch-" in f for f in files)
    for k, v in weights["memory"].items():
        assert torch.equal(v, weights["disk"][k]), k


def test_the_cache_file_is_reused_and_invalidated_when_content_changes(tmp_path, monkeypatch):
    data, cache = make_folder(tmp_path / "data", 24), tmp_path / "cache"
    calls = count_decodes(monkeypatch)
    first = load_image_folder(data, 16, cache_dir=cache, store="disk")
    entries = sorted(cache.glob("*.npy"))
    assert calls == [24] and len(entries) == 1 and backing_file(first.images) == str(entries[0])
    again = load_image_folder(data, 16, cache_dir=cache, store="disk")
    assert calls == [24] and torch.equal(again.images, first.images)  # read from the file, not decoded
    in_memory = load_image_folder(data, 16, cache_dir=cache, store="memory")
    assert calls == [24] and backing_file(in_memory.images) == "" and torch.equal(in_memory.images, first.images)
    # one file's content changes: a new entry, decoded again, with the new pixels
    changed = sorted((data / "a").iterdir())[0]
    Image.fromarray(np.full((12, 12, 3), 200, np.uint8)).save(changed)
    third = load_image_folder(data, 16, cache_dir=cache, store="disk")
    assert calls == [24, 24] and len(list(cache.glob("*.npy"))) == 2
    row = third.paths.index(str(changed))
    assert (third.images[row] == 200).all() and not (first.images[row] == 200).all()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cache_file_is_detected_named_and_rebuilt(tmp_path, monkeypatch, caplog, damage):
    data, cache = make_folder(tmp_path / "data", 24), tmp_path / "cache"
    good = load_image_folder(data, 16, cache_dir=cache, store="disk").images.clone()
    npy = next(cache.glob("*.npy"))
    if damage == "truncate":  # a copy cut short, a full disk
        os.truncate(npy, npy.stat().st_size // 2)
    else:  # same size, other pixels in the first row
        with open(npy, "r+b") as f:
            f.seek(npy.stat().st_size - good.numel())
            f.write(bytes(255 - b for b in good[0].flatten()[:64].tolist()))
    calls = count_decodes(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="tuneforge"):
        rebuilt = load_image_folder(data, 16, cache_dir=cache, store="disk")
    assert calls == [24], "the damaged entry was trusted"
    assert any(str(npy) in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    assert torch.equal(rebuilt.images, good)
    calls.clear()
    assert torch.equal(load_image_folder(data, 16, cache_dir=cache, store="disk").images, good) and calls == []


RSS_CHILD = """
import json, sys
import numpy as np, torch
from tuneforge.core.data import BatchLoader, load_image_folder
from tuneforge.core.data.mapped import rss_anon
data, cache, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
load_image_folder(data, size, cache_dir=cache, workers=1, store="disk")  # the cache entry, decoded once
before = rss_anon()
mapped = load_image_folder(data, size, cache_dir=cache, workers=1, store="disk")
train = mapped.subset(np.arange(0, len(mapped), 2))  # a split: written to a scratch file, not to memory
total = sum(int(x[:, :, 0, 0].sum()) for x, _ in BatchLoader(train.images, train.labels, 32, shuffle=True))
disk = rss_anon() - before
before = rss_anon()
held = load_image_folder(data, size, cache_dir=cache, workers=1, store="memory")
print(json.dumps({"disk": disk, "memory": rss_anon() - before, "total": total,
                  "same": bool(torch.equal(held.images, mapped.images))}))
"""


def test_rss_anon_does_not_grow_with_the_mapped_set(tmp_path):
    # 1,200 images at 96 px: 33 MB decoded (tiny files: decoding takes a few seconds). Measured in a
    # fresh process: in a long one, memory freed by earlier tests hides what an allocation adds.
    data, n, size = make_folder(tmp_path / "data", 1200, side=8), 1200, 96
    decoded = n * 3 * size * size
    env = {**os.environ, "PYTHONPATH": str(Path(tuneforge.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(data), str(tmp_path / "cache"), str(size)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["total"] > 0 and got["same"]
    assert got["disk"] < 0.25 * decoded, f"RssAnon grew {got['disk'] / 1e6:.1f} MB for {decoded / 1e6:.1f} MB decoded"
    # the same set in memory does grow by its size: the measure can tell
    assert got["memory"] > 0.8 * decoded, got


def test_cached_features_are_mapped(tmp_path):
    torch.manual_seed(0)
    model = create_model("seed-cnn", 3, 32, pretrained=False)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    plain = extract_features(model, images, 16, mirrored=True)
    mapped = extract_features(model, images, 16, mirrored=True,
                              alloc=lambda shape, dtype: scratch_tensor(shape, dtype, tmp_path))
    assert "scratch-" in backing_file(mapped) and torch.equal(plain, mapped)
    # the content-keyed entry: returned mapped from its .safetensors file, computed or read back
    calls = []
    compute = lambda: calls.append(1) or {"x": plain}
    fresh = memoised(str(tmp_path / "c"), "feats", compute, store="disk")
    entry = tmp_path / "c" / "features" / "feats.safetensors"
    read = memoised(str(tmp_path / "c"), "feats", compute, store="disk")
    assert calls == [1] and backing_file(fresh["x"]) == str(entry) == backing_file(read["x"])
    assert torch.equal(fresh["x"], plain) and torch.equal(read["x"], plain)
    with open(entry, "r+b") as f:  # truncated entry: recomputed, not trusted
        f.truncate(entry.stat().st_size // 2)
    assert torch.equal(memoised(str(tmp_path / "c"), "feats", compute, store="disk")["x"], plain) and calls == [1, 1]


def test_auto_keeps_small_sets_in_memory_and_maps_large_ones():
    assert choose_store(10 << 20) == "memory" and choose_store(1 << 50) == "disk"
    assert choose_store(1 << 50, "memory") == "memory" and choose_store(1, "disk") == "disk"
