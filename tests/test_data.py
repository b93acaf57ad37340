"""Tests for tuneforge.data: decoding odd image kinds, class-folder scanning, corrupt files,
the on-disk decode cache, class remapping, stratified splits and the batch loader.

Every image is generated here (PIL/numpy, in tmp_path); nothing is read from shared data.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

import tuneforge.core.data.images as images_mod
from tuneforge.core.data import BatchLoader, ImageSet, decode_image, list_images, load_image_folder, scan_class_folders, stratified_split, subsample_per_class, write_manifest
from tuneforge.core.data.images import decode_cached, decode_files
from tuneforge.errors import DataError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
ORIENTATION = 0x0112


# ----------------------------------------------------------------------------- helpers

def solid(h: int, w: int, colour) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[...] = colour
    return a


def save(path: Path, img: Image.Image | np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    img.save(path, **kw)
    return path


def px(arr: np.ndarray, y: int, x: int) -> tuple[int, ...]:
    """RGB of a decoded (3, H, W) array at row y, column x."""
    return tuple(int(v) for v in arr[:, y, x])


def close(a, b, tol: int = 12) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def half_red_half_blue(h: int, w: int) -> np.ndarray:
    a = solid(h, w, RED)
    a[:, w // 2:] = BLUE
    return a


def make_tree(root: Path, spec: dict[str, list[tuple[str, tuple[int, int, int]]]], size: int = 8) -> Path:
    """root/<class>/<name> as solid-colour PNGs (or JPEGs by extension)."""
    for cls, files in spec.items():
        for name, colour in files:
            save(root / cls / name, solid(size, size, colour), **({"quality": 95} if name.endswith(".jpg") else {}))
    return root


def mean_colour(chw: np.ndarray | torch.Tensor) -> tuple[int, int, int]:
    a = np.asarray(chw, dtype=np.float64)
    return tuple(int(round(v)) for v in a.reshape(3, -1).mean(1))


class DecodeSpy:
    """Wraps images.decode_files; counts calls; can be told to refuse."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.refuse = False
        self._orig = images_mod.decode_files
        monkeypatch.setattr(images_mod, "decode_files", self)

    def __call__(self, *a, **kw):
        if self.refuse:
            raise AssertionError("decode_files called although the cache should have answered")
        self.calls += 1
        return self._orig(*a, **kw)


# ----------------------------------------------------------------------------- 1. odd kinds

S = 16


def test_greyscale_L_becomes_rgb_with_equal_channels(tmp_path):
    a = (np.arange(S * S).reshape(S, S) % 256).astype(np.uint8)
    d = decode_image(save(tmp_path / "g.png", Image.fromarray(a, "L")), S)
    assert d.dtype == np.uint8 and d.shape == (3, S, S)
    assert (d[0] == d[1]).all() and (d[1] == d[2]).all()
    np.testing.assert_array_equal(d[0], a)


def test_rgba_transparent_region_composited_on_white(tmp_path):
    a = np.zeros((S, S, 4), np.uint8)
    a[:, : S // 2] = (0, 255, 0, 0)        # fully transparent, hidden colour green
    a[:, S // 2:] = (200, 10, 30, 255)     # opaque
    d = decode_image(save(tmp_path / "a.png", Image.fromarray(a, "RGBA")), S)
    assert d.dtype == np.uint8 and d.shape == (3, S, S)
    assert (d[:, :, : S // 2] == 255).all()
    assert (d[:, :, S // 2:] == np.array([200, 10, 30], np.uint8)[:, None, None]).all()


def test_rgba_half_transparent_blends_with_white(tmp_path):
    a = np.zeros((S, S, 4), np.uint8)
    a[...] = (0, 0, 0, 128)
    d = decode_image(save(tmp_path / "h.png", Image.fromarray(a, "RGBA")), S)
    assert close(px(d, 3, 3), (127, 127, 127), tol=2)


def _palette_image(transparent: bool) -> Image.Image:
    idx = np.zeros((S, S), np.uint8)
    idx[:, S // 2:] = 1
    im = Image.fromarray(idx, "P")
    pal = [0, 255, 0, 10, 20, 200] + [0, 0, 0] * 254   # 0: green, 1: dark blue
    im.putpalette(pal)
    if transparent:
        im.info["transparency"] = 0
    return im


@pytest.mark.parametrize("ext", ["png", "gif"])
@pytest.mark.parametrize("transparent", [False, True])
def test_palette_P_with_and_without_transparency(tmp_path, ext, transparent):
    im = _palette_image(transparent)
    path = tmp_path / f"p.{ext}"
    save(path, im, **({"transparency": 0} if transparent else {}))
    with Image.open(path) as chk:
        assert chk.mode == "P"
    d = decode_image(path, S)
    assert d.dtype == np.uint8 and d.shape == (3, S, S)
    left = WHITE if transparent else GREEN
    assert (d[:, :, : S // 2] == np.array(left, np.uint8)[:, None, None]).all()
    assert (d[:, :, S // 2:] == np.array([10, 20, 200], np.uint8)[:, None, None]).all()


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_transparency_key_on_grey_and_rgb_png_goes_to_white(tmp_path, mode):
    # tRNS chunk on a non-palette PNG: pixels of the key colour are transparent.
    key, other = (7, (9, 9, 9)) if mode == "L" else ((1, 2, 3), (9, 90, 200))
    im = Image.new(mode, (S, S), key)
    for x in range(S // 2, S):
        for y in range(S):
            im.putpixel((x, y), other if mode == "RGB" else other[0])
    path = save(tmp_path / "t.png", im, transparency=key)
    with Image.open(path) as chk:
        assert chk.mode == mode and "transparency" in chk.info
    d = decode_image(path, S)
    assert (d[:, :, : S // 2] == 255).all()
    expect = other if mode == "RGB" else (other[0],) * 3
    assert (d[:, :, S // 2:] == np.array(expect, np.uint8)[:, None, None]).all()


def test_cmyk_jpeg_becomes_right_rgb(tmp_path):
    im = Image.new("CMYK", (32, 32), (0, 255, 255, 0))          # red in CMYK
    for x in range(16, 32):
        for y in range(32):
            im.putpixel((x, y), (255, 255, 0, 0))               # blue in CMYK
    path = save(tmp_path / "c.jpg", im, quality=95)
    with Image.open(path) as chk:
        assert chk.mode == "CMYK"
    d = decode_image(path, 32)
    assert d.dtype == np.uint8 and d.shape == (3, 32, 32)
    assert close(px(d, 16, 4), RED) and close(px(d, 16, 28), BLUE)


def test_16bit_grey_png_uses_full_range(tmp_path):
    a = np.linspace(0, 65535, S * S).reshape(S, S).astype(np.uint16)
    path = save(tmp_path / "g16.png", Image.fromarray(a))
    with Image.open(path) as chk:
        assert chk.mode.startswith("I")
    d = decode_image(path, S)
    assert d.dtype == np.uint8 and d.shape == (3, S, S)
    assert (d[0] == d[1]).all() and (d[1] == d[2]).all()
    assert d[:, 0, 0].tolist() == [0, 0, 0]            # darkest
    assert d[:, -1, -1].tolist() == [255, 255, 255]    # brightest
    assert len(np.unique(d[0])) > 200                  # spread, not clipped to all-255
    assert (np.diff(d[0].ravel().astype(int)) >= 0).all()  # order preserved


def test_16bit_grey_narrow_range_is_stretched(tmp_path):
    a = np.linspace(1000, 3000, S * S).reshape(S, S).astype(np.uint16)  # all > 255
    d = decode_image(save(tmp_path / "n16.png", Image.fromarray(a)), S)
    assert d.min() == 0 and d.max() == 255
    assert len(np.unique(d[0])) > 200


@pytest.mark.parametrize("orientation, top, bottom", [(6, RED, BLUE), (8, BLUE, RED)])
@pytest.mark.parametrize("w, h, size", [(60, 30, 20), (800, 600, 32)])  # second one takes the draft path
def test_exif_rotated_jpeg_is_rotated(tmp_path, orientation, top, bottom, w, h, size):
    im = Image.fromarray(half_red_half_blue(h, w))   # left red, right blue as stored
    exif = im.getexif()
    exif[ORIENTATION] = orientation
    path = save(tmp_path / f"e{orientation}.jpg", im, exif=exif, quality=95)
    d = decode_image(path, size, resize="squash")
    assert d.shape == (3, size, size)
    q = size // 4
    # After rotation the halves are top / bottom; each row is one colour.
    assert close(px(d, q, q), top) and close(px(d, q, size - q), top)
    assert close(px(d, size - q, q), bottom) and close(px(d, size - q, size - q), bottom)


def test_large_jpeg_at_small_size_uses_draft_and_keeps_colours(tmp_path, monkeypatch):
    a = solid(600, 800, RED)
    a[:300, 400:] = GREEN
    a[300:, :400] = BLUE
    a[300:, 400:] = (250, 250, 20)
    path = save(tmp_path / "big.jpg", a, quality=95)
    drafts = []
    orig = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        drafts.append(size)
        return orig(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    for resize in ("squash", "crop"):
        d = decode_image(path, 32, resize=resize)
        assert d.dtype == np.uint8 and d.shape == (3, 32, 32)
        assert close(px(d, 4, 4), RED) and close(px(d, 4, 27), GREEN)
        assert close(px(d, 27, 4), BLUE) and close(px(d, 27, 27), (250, 250, 20))
    assert drafts, "large JPEG was not decoded through libjpeg's draft (reduced-scale) path"


def test_png_already_at_target_size_is_unchanged(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (S, S, 3), dtype=np.uint8)
    path = save(tmp_path / "x.png", a)
    for resize in ("crop", "squash"):
        np.testing.assert_array_equal(decode_image(path, S, resize), a.transpose(2, 0, 1))


# ----------------------------------------------------------------------------- 2. crop vs squash

def _bands(h: int, w: int, axis: int) -> np.ndarray:
    """Three equal bands red / green / blue along `axis` (1: columns, 0: rows)."""
    a = np.zeros((h, w, 3), np.uint8)
    n = a.shape[axis] // 3
    for i, c in enumerate((RED, GREEN, BLUE)):
        sl = [slice(None), slice(None)]
        sl[axis] = slice(i * n, (i + 1) * n)
        a[tuple(sl)] = c
    return a


def test_crop_takes_centre_of_wide_image(tmp_path):
    path = save(tmp_path / "wide.png", _bands(30, 60, axis=1))  # bands of 20 columns
    d = decode_image(path, 30, resize="crop")
    assert d.shape == (3, 30, 30)
    # Shorter side already 30 -> no scaling, centre crop = source columns 15..44.
    expect = _bands(30, 60, axis=1)[:, 15:45].transpose(2, 0, 1)
    np.testing.assert_array_equal(d, expect)
    assert px(d, 10, 0) == RED and px(d, 10, 4) == RED
    assert px(d, 10, 5) == GREEN and px(d, 10, 24) == GREEN
    assert px(d, 10, 25) == BLUE and px(d, 10, 29) == BLUE


def test_squash_keeps_all_three_bands_equal_width(tmp_path):
    path = save(tmp_path / "wide.png", _bands(30, 60, axis=1))
    d = decode_image(path, 30, resize="squash")
    assert d.shape == (3, 30, 30)
    for y in (0, 15, 29):
        assert close(px(d, y, 4), RED, 2) and close(px(d, y, 15), GREEN, 2) and close(px(d, y, 25), BLUE, 2)
    # Each band ~ a third of the width (10 columns), boundaries blended at most one column each side.
    assert 8 <= int((d[0, 15] > 200).sum()) <= 11
    assert 8 <= int((d[2, 15] > 200).sum()) <= 11


def test_crop_scales_shorter_side_of_tall_image(tmp_path):
    path = save(tmp_path / "tall.png", _bands(120, 60, axis=0))  # 60 wide, bands of 40 rows
    d = decode_image(path, 30, resize="crop")
    # Scaled to 30x60, centre crop keeps rows 15..44 of the scaled image: a quarter red at the
    # top, green in the middle, blue at the bottom.
    assert d.shape == (3, 30, 30)
    assert close(px(d, 1, 15), RED, 2) and close(px(d, 15, 15), GREEN, 2) and close(px(d, 28, 15), BLUE, 2)
    d2 = decode_image(path, 30, resize="squash")
    assert close(px(d2, 4, 15), RED, 2) and close(px(d2, 15, 15), GREEN, 2) and close(px(d2, 25, 15), BLUE, 2)


# ----------------------------------------------------------------------------- 3. scanning

def test_scan_class_folders_sorted_and_ignores_junk(tmp_path):
    root = tmp_path / "data"
    for cls in ("zebra", "apple", "mango"):
        save(root / cls / "1.png", solid(4, 4, RED))
        save(root / cls / "2.JPG", solid(4, 4, RED))
        (root / cls / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (root / cls / "notes.txt").write_text("hello")
        save(root / cls / ".hidden.png", solid(4, 4, RED))
    save(root / "apple" / "sub" / "3.png", solid(4, 4, RED))   # nested images count
    (root / ".DS_Store").write_bytes(b"x")
    (root / "README.txt").write_text("x")
    save(root / ".thumbs" / "t.png", solid(4, 4, RED))           # hidden folder is not a class
    classes, items = scan_class_folders(root)
    assert classes == ["apple", "mango", "zebra"]
    got = {(p.relative_to(root).as_posix(), label) for p, label in items}
    assert got == {("apple/1.png", 0), ("apple/2.JPG", 0), ("apple/sub/3.png", 0),
                   ("mango/1.png", 1), ("mango/2.JPG", 1), ("zebra/1.png", 2), ("zebra/2.JPG", 2)}
    assert all(isinstance(p, Path) for p, _ in items)


def test_scan_empty_class_folder_is_named(tmp_path):
    root = tmp_path / "data"
    save(root / "a" / "1.png", solid(4, 4, RED))
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    (root / "empty" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataError) as e:
        scan_class_folders(root)
    assert str(root / "empty") in str(e.value)


def test_scan_root_without_class_folders_is_named(tmp_path):
    root = tmp_path / "flat"
    save(root / "1.png", solid(4, 4, RED))
    with pytest.raises(DataError) as e:
        scan_class_folders(root)
    assert str(root) in str(e.value) and "class" in str(e.value)


def test_scan_missing_root(tmp_path):
    with pytest.raises(DataError) as e:
        scan_class_folders(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)
    with pytest.raises(DataError):
        load_image_folder(tmp_path / "nope", 8, cache_dir="")


def test_list_images_expands_folders_and_rejects_missing(tmp_path):
    f1 = save(tmp_path / "d" / "b.png", solid(4, 4, RED))
    f0 = save(tmp_path / "d" / "a" / "a.jpg", solid(4, 4, RED))
    (tmp_path / "d" / "notes.txt").write_text("x")
    single = save(tmp_path / "one.png", solid(4, 4, RED))
    assert list_images([tmp_path / "d", single]) == [f0, f1, single]
    with pytest.raises(DataError, match="nope"):
        list_images([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        list_images([tmp_path / "empty"])


# ----------------------------------------------------------------------------- 4. corrupt files

@pytest.fixture
def corrupt_tree(tmp_path):
    root = tmp_path / "data"
    good = [save(root / "a" / "good1.png", solid(8, 8, RED)),
            save(root / "a" / "good2.jpg", solid(8, 8, GREEN), quality=95),
            save(root / "b" / "good3.png", solid(8, 8, BLUE))]
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    trunc = save(root / "a" / "trunc.jpg", noise, quality=95)
    data = trunc.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    junk = root / "b" / "junk.jpg"
    junk.write_bytes(np.random.default_rng(2).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return root, good, trunc, junk


@pytest.mark.parametrize("cache", ["", "dir"], ids=["nocache", "cache"])
def test_corrupt_files_are_skipped_and_named(corrupt_tree, caplog, tmp_path, cache):
    root, good, trunc, junk = corrupt_tree
    cache_dir = "" if cache == "" else tmp_path / "c"
    caplog.set_level(logging.WARNING, logger="tuneforge")
    for _ in range(2 if cache else 1):     # with a cache the second run answers from it
        caplog.clear()
        ds = load_image_folder(root, 8, cache_dir=cache_dir, workers=1)
        assert len(ds) == 3 and ds.images.shape == (3, 3, 8, 8) and ds.images.dtype == torch.uint8
        assert ds.paths == [str(p) for p in good]
        assert ds.labels.tolist() == [0, 0, 1]
        assert [mean_colour(x) for x in ds.images[[0, 2]]] == [RED, BLUE]
        assert close(mean_colour(ds.images[1]), GREEN, 6)
        assert sorted(s["path"] for s in ds.skipped) == sorted([str(trunc), str(junk)])
        assert all(s["reason"] for s in ds.skipped)
        logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "tuneforge")
        assert str(trunc) in logged and str(junk) in logged


def test_corrupt_file_strict_raises_naming_it(corrupt_tree, tmp_path):
    root, good, trunc, junk = corrupt_tree
    with pytest.raises(DataError) as e:
        load_image_folder(root, 8, cache_dir="", strict=True)
    assert str(trunc) in str(e.value)   # first bad file in sorted order
    # strict also holds when the answer comes from the cache
    load_image_folder(root, 8, cache_dir=tmp_path / "c")
    with pytest.raises(DataError) as e:
        load_image_folder(root, 8, cache_dir=tmp_path / "c", strict=True)
    assert str(trunc) in str(e.value)


def test_only_junk_strict_names_random_bytes_file(tmp_path):
    root = tmp_path / "data"
    save(root / "a" / "ok.png", solid(8, 8, RED))
    junk = root / "a" / "zz.jpg"
    junk.write_bytes(os.urandom(500))
    with pytest.raises(DataError) as e:
        load_image_folder(root, 8, cache_dir="", strict=True)
    assert str(junk) in str(e.value)


def test_all_corrupt_raises(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        (root / "a").mkdir(parents=True, exist_ok=True)
        (root / "a" / f"{i}.jpg").write_bytes(b"not a jpeg at all" * (i + 1))
    with pytest.raises(DataError) as e:
        load_image_folder(root, 8, cache_dir="")
    assert str(root) in str(e.value)
    with pytest.raises(DataError):                       # also on the cached path
        load_image_folder(root, 8, cache_dir=tmp_path / "c")
    with pytest.raises(DataError):
        load_image_folder(root, 8, cache_dir=tmp_path / "c")


# ----------------------------------------------------------------------------- 5. disk cache

@pytest.fixture
def small_tree(tmp_path):
    return make_tree(tmp_path / "data", {
        "cat": [("1.png", RED), ("2.png", GREEN), ("3.jpg", (250, 250, 20))],
        "dog": [("1.png", BLUE), ("2.png", (40, 40, 40))],
    })


def _assert_same(a: ImageSet, b: ImageSet):
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.paths == b.paths and a.classes == b.classes and a.skipped == b.skipped


def test_cache_second_load_is_identical_and_does_not_decode(small_tree, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    spy = DecodeSpy(monkeypatch)
    first = load_image_folder(small_tree, 8, cache_dir=cache)
    assert spy.calls == 1
    assert len(list(cache.glob("*.npy"))) == 1 and len(list(cache.glob("*.json"))) == 1
    assert not list(cache.glob("*.tmp*"))
    spy.refuse = True
    second = load_image_folder(small_tree, 8, cache_dir=cache)
    _assert_same(first, second)
    assert first.images.dtype == torch.uint8 and first.images.shape == (5, 3, 8, 8)


def test_cache_default_dir_follows_env(small_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "envcache"))
    spy = DecodeSpy(monkeypatch)
    a = load_image_folder(small_tree, 8)
    assert len(list((tmp_path / "envcache").glob("*.npy"))) == 1
    spy.refuse = True
    _assert_same(a, load_image_folder(small_tree, 8))


def test_cache_key_changes_with_content_and_settings(small_tree, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    spy = DecodeSpy(monkeypatch)
    first = load_image_folder(small_tree, 8, cache_dir=cache)
    save(small_tree / "cat" / "2.png", solid(8, 8, (0, 128, 255)))   # same name, new content
    second = load_image_folder(small_tree, 8, cache_dir=cache)
    assert spy.calls == 2
    assert mean_colour(first.images[1]) == GREEN and mean_colour(second.images[1]) == (0, 128, 255)
    assert len(list(cache.glob("*.npy"))) == 2
    load_image_folder(small_tree, 6, cache_dir=cache)                  # other size
    load_image_folder(small_tree, 8, resize="squash", cache_dir=cache)  # other resize
    assert spy.calls == 4
    spy.refuse = True                                                  # all four now cached
    _assert_same(second, load_image_folder(small_tree, 8, cache_dir=cache))


def test_cache_disabled_with_empty_string(small_tree, tmp_path, monkeypatch):
    spy = DecodeSpy(monkeypatch)
    before = {p for p in tmp_path.rglob("*")}
    a = load_image_folder(small_tree, 8, cache_dir="")
    b = load_image_folder(small_tree, 8, cache_dir="")
    _assert_same(a, b)
    assert spy.calls == 2
    assert {p for p in tmp_path.rglob("*")} == before        # nothing written anywhere under tmp
    assert not (tmp_path / "cache").exists()                  # not even the default (env) cache
    arr, ok, skipped = decode_cached([Path(p) for p in a.paths], 8, cache_dir="")
    assert spy.calls == 3 and ok.all() and not skipped


def _damage_npy(npy: Path, meta: Path):
    npy.write_bytes(b"\x93NUMPY garbage" + os.urandom(64))


def _truncate_npy(npy: Path, meta: Path):
    npy.write_bytes(npy.read_bytes()[:200])


def _wrong_shape_npy(npy: Path, meta: Path):
    np.save(npy, np.zeros((2, 3, 4, 4), np.uint8))


def _pickle_npy(npy: Path, meta: Path):
    np.save(npy, np.array([{"a": 1}], dtype=object), allow_pickle=True)


def _damage_meta(npy: Path, meta: Path):
    meta.write_text("{not json")


def _meta_wrong_type(npy: Path, meta: Path):
    meta.write_text("[]")


def _meta_bad_index(npy: Path, meta: Path):
    info = json.loads(meta.read_text())
    info["skipped"] = [[999, "bogus"]]
    meta.write_text(json.dumps(info))


def _meta_wrong_ok(npy: Path, meta: Path):
    info = json.loads(meta.read_text())
    info["ok"] = info["ok"][:-1]
    meta.write_text(json.dumps(info))


@pytest.mark.parametrize("damage", [_damage_npy, _truncate_npy, _wrong_shape_npy, _pickle_npy, _damage_meta,
                                    _meta_wrong_type, _meta_bad_index, _meta_wrong_ok])
def test_damaged_cache_entry_is_rebuilt(small_tree, tmp_path, monkeypatch, damage):
    cache = tmp_path / "c"
    spy = DecodeSpy(monkeypatch)
    first = load_image_folder(small_tree, 8, cache_dir=cache)
    (npy,), (meta,) = list(cache.glob("*.npy")), list(cache.glob("*.json"))
    damage(npy, meta)
    second = load_image_folder(small_tree, 8, cache_dir=cache)
    assert spy.calls == 2                 # decoded again rather than trusting the entry
    _assert_same(first, second)
    # ... and the rebuilt entry is good again.
    assert np.load(npy).shape == (5, 3, 8, 8)
    spy.refuse = True
    _assert_same(first, load_image_folder(small_tree, 8, cache_dir=cache))


def test_cache_unwritable_dir_still_returns_data(small_tree, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    caplog.set_level(logging.WARNING, logger="tuneforge")
    ds = load_image_folder(small_tree, 8, cache_dir=blocker / "sub")
    assert len(ds) == 5
    assert any("cache" in r.getMessage() for r in caplog.records)


def test_decode_cached_direct_skips_keep_current_paths(tmp_path, monkeypatch):
    # Same content at another path: the cache answers, and skipped names the new path.
    a = tmp_path / "one"
    save(a / "x.png", solid(8, 8, RED))
    (a / "y.jpg").write_bytes(b"garbage" * 10)
    b = tmp_path / "two"
    b.mkdir()
    for f in a.iterdir():
        (b / f.name).write_bytes(f.read_bytes())
    cache = tmp_path / "c"
    arr1, ok1, sk1 = decode_cached(sorted(a.iterdir()), 8, cache_dir=cache, workers=1)
    spy = DecodeSpy(monkeypatch)
    spy.refuse = True
    arr2, ok2, sk2 = decode_cached(sorted(b.iterdir()), 8, cache_dir=cache, workers=1)
    np.testing.assert_array_equal(arr1, arr2)
    assert ok1.tolist() == ok2.tolist() == [True, False]
    assert [s["path"] for s in sk1] == [str(a / "y.jpg")] and [s["path"] for s in sk2] == [str(b / "y.jpg")]


def test_parallel_decode_matches_serial(tmp_path, monkeypatch):
    root = tmp_path / "data"
    n = 130
    for cls in ("a", "b"):
        for i in range(n):
            v = (i * 7) % 256
            save(root / cls / f"{i:03d}.png", solid(8, 8, (v, 255 - v, 40 if cls == "a" else 200)))
    (root / "b" / "zz_bad.png").write_bytes(b"broken png")
    used = []
    orig_ctx = images_mod.get_context

    def ctx(method):
        used.append(method)
        return orig_ctx(method)

    monkeypatch.setattr(images_mod, "get_context", ctx)
    serial = load_image_folder(root, 8, cache_dir="", workers=1)
    assert not used
    parallel = load_image_folder(root, 8, cache_dir="", workers=2)
    assert used, "parallel path (>= 256 files, workers > 1) was not taken"
    _assert_same(serial, parallel)
    assert len(parallel) == 2 * n and parallel.skipped[0]["path"] == str(root / "b" / "zz_bad.png")
    assert mean_colour(parallel.images[5]) == (35, 220, 40)
    # decode_files directly: the ok mask lines up with the input order
    files = sorted(root.rglob("*.png"))
    arr, ok, skipped = decode_files(files, 8, workers=2)
    assert ok.sum() == 2 * n and not ok[files.index(root / "b" / "zz_bad.png")]
    np.testing.assert_array_equal(arr, serial.images.numpy())


# ----------------------------------------------------------------------------- 6. classes=

def test_classes_argument_fixes_label_order(small_tree):
    ds = load_image_folder(small_tree, 8, classes=["dog", "cat"], cache_dir="")
    assert ds.classes == ["dog", "cat"]
    by_path = dict(zip(ds.paths, ds.labels.tolist()))
    assert all(label == (1 if "/cat/" in p.replace(os.sep, "/") else 0) for p, label in by_path.items())
    assert len(by_path) == 5
    # a superset of the folder's classes is fine (e.g. a test split missing a class)
    ds2 = load_image_folder(small_tree, 8, classes=["bird", "cat", "dog"], cache_dir="")
    assert ds2.classes == ["bird", "cat", "dog"] and sorted(set(ds2.labels.tolist())) == [1, 2]


def test_classes_argument_unknown_folder_class_raises(small_tree):
    with pytest.raises(DataError) as e:
        load_image_folder(small_tree, 8, classes=["cat", "horse"], cache_dir="")
    assert "dog" in str(e.value)


def test_items_argument_restricts_files(small_tree):
    classes, items = scan_class_folders(small_tree)
    keep = [it for it in items if it[0].name == "1.png"]
    ds = load_image_folder(small_tree, 8, items=keep, cache_dir="")
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1]
    assert [mean_colour(x) for x in ds.images] == [RED, BLUE]


def test_imageset_subset(small_tree):
    ds = load_image_folder(small_tree, 8, cache_dir="")
    sub = ds.subset([4, 0])
    assert len(sub) == 2 and sub.paths == [ds.paths[4], ds.paths[0]]
    assert torch.equal(sub.images, ds.images[[4, 0]]) and sub.labels.tolist() == [1, 0]
    assert sub.classes == ds.classes


# ----------------------------------------------------------------------------- 7. splits

LABELS = np.array([0] * 50 + [1] * 20 + [2] * 2 + [3] * 1 + [4] * 7)
np.random.default_rng(3).shuffle(LABELS)


def test_stratified_split_properties():
    train, held = stratified_split(LABELS, 0.2, seed=0)
    assert len(np.intersect1d(train, held)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held])), np.arange(len(LABELS)))
    assert (np.diff(train) > 0).all() and (np.diff(held) > 0).all()
    for c, n in zip(*np.unique(LABELS, return_counts=True)):
        h, t = int((LABELS[held] == c).sum()), int((LABELS[train] == c).sum())
        assert h + t == n
        if n >= 2:
            assert h >= 1 and t >= 1, f"class {c} missing from a part"
            assert abs(h - 0.2 * n) <= 1
        else:
            assert t == 1 and h == 0
    assert (LABELS[held] == 0).sum() == 10 and (LABELS[held] == 1).sum() == 4


def test_stratified_split_seeded():
    a = stratified_split(LABELS, 0.3, seed=1)
    b = stratified_split(LABELS, 0.3, seed=1)
    c = stratified_split(LABELS, 0.3, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    assert len(a[1]) == len(c[1])


def test_stratified_split_zero_fraction():
    train, held = stratified_split(LABELS, 0.0, seed=0)
    assert len(held) == 0 and np.array_equal(train, np.arange(len(LABELS)))


def test_subsample_per_class():
    keep = subsample_per_class(LABELS, 5, seed=0)
    assert (np.diff(keep) > 0).all() and keep.max() < len(LABELS)
    counts = dict(zip(*np.unique(LABELS[keep], return_counts=True)))
    assert counts == {0: 5, 1: 5, 2: 2, 3: 1, 4: 5}
    np.testing.assert_array_equal(keep, subsample_per_class(LABELS, 5, seed=0))
    assert not np.array_equal(keep, subsample_per_class(LABELS, 5, seed=1))
    np.testing.assert_array_equal(subsample_per_class(LABELS, 1000, seed=0), np.arange(len(LABELS)))


def test_write_manifest(tmp_path):
    p = tmp_path / "manifest.json"
    write_manifest(p, ["a", "b"], {"train": ["x.png"], "val": ["y.png"]}, seed=3, fraction=0.2)
    doc = json.loads(p.read_text())
    assert doc == {"classes": ["a", "b"], "seed": 3, "fraction": 0.2, "train": ["x.png"], "val": ["y.png"]}


# ----------------------------------------------------------------------------- 8. BatchLoader

N = 23


def _loader(**kw) -> BatchLoader:
    labels = torch.arange(N)
    images = (torch.arange(N, dtype=torch.uint8)[:, None, None, None] * torch.ones(1, 3, 2, 2, dtype=torch.uint8))
    return BatchLoader(images, labels, **{"batch_size": 5, **kw})


def _order(loader: BatchLoader, epoch: int) -> list[int]:
    out = []
    for x, y in loader.epoch(epoch):
        assert torch.equal(x[:, 0, 0, 0].long(), y)    # images stay aligned with labels
        out.extend(y.tolist())
    return out


def test_batch_loader_covers_every_sample_once_per_epoch():
    loader = _loader(shuffle=True, seed=4)
    assert len(loader) == 5 and loader.num_samples == N
    for e in range(3):
        sizes = [len(y) for _, y in loader.epoch(e)]
        assert sizes == [5, 5, 5, 5, 3]
        order = _order(loader, e)
        assert sorted(order) == list(range(N)) and order != list(range(N))


def test_batch_loader_order_depends_only_on_seed_and_epoch():
    a, b = _loader(shuffle=True, seed=4), _loader(shuffle=True, seed=4)
    assert _order(a, 2) == _order(b, 2) == _order(a, 2)
    assert _order(a, 2) != _order(a, 3)
    assert _order(a, 0) != _order(_loader(shuffle=True, seed=5), 0)
    assert [y.tolist() for _, y in a] == [y.tolist() for _, y in a.epoch(0)]


def test_batch_loader_no_shuffle_and_drop_last():
    assert _order(_loader(), 0) == list(range(N)) == _order(_loader(), 7)
    dl = _loader(shuffle=True, seed=1, drop_last=True)
    assert len(dl) == 4
    batches = [y.tolist() for _, y in dl.epoch(0)]
    assert len(batches) == 4 and all(len(b) == 5 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 20
    assert len(_loader(batch_size=23)) == 1 and len(_loader(batch_size=23, drop_last=True)) == 1
    assert len(_loader(batch_size=24, drop_last=True)) == 0 and len(_loader(batch_size=24)) == 1


def test_fast_jpeg_path_matches_pil_and_declines_what_it_cannot_do(tmp_path):
    from conftest import DATASETS
    from tuneforge.core.data.images import _decode_jpeg_fast
    files = sorted((DATASETS / "cifar10" / "test" / "ship").iterdir())[:10]
    for f in files:
        fast = _decode_jpeg_fast(str(f), 32)
        assert fast is not None and np.array_equal(fast, decode_image(f, 32))
    assert _decode_jpeg_fast(str(files[0]), 16) is None  # PIL would draft-decode at 1/2 scale
    for resize in ("crop", "squash"):  # upsampling: libjpeg decode + PIL resize, same pixels
        assert np.array_equal(_decode_jpeg_fast(str(files[1]), 64, resize), decode_image(files[1], 64, resize))
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(cmyk)
    assert _decode_jpeg_fast(str(cmyk), 32) is None
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(files[0].read_bytes()[:-200])
    assert _decode_jpeg_fast(str(cut), 32) is None
