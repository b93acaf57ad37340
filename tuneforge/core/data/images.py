"""Image class folders -> one uint8 tensor, decoded once.

Every image becomes RGB at one size (grey, RGBA, palette, CMYK, 16-bit and EXIF-rotated
files included); unreadable files are skipped with a warning naming them (or raise with
strict=True). The decoded array is cached on disk under a key made of the files' contents and
the decode settings, so a second run (or the test split of a later `evaluate`) never decodes
again, and epochs never touch JPEG at all. Decoding writes each image into the cache file as it
arrives; with `--cache disk` training then maps that file instead of reading it into memory
(core/data/mapped.py), so a set larger than memory decodes and trains.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
import zlib
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from ...errors import DataError
from ..progress import phase
from .mapped import choose_store, gather, map_npy, scratch_dir, scratch_numpy

log = logging.getLogger("tuneforge")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
CACHE_VERSION = 1
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image


@dataclass
class ImageSet:
    """Decoded images of one split. `images` is uint8 (N, 3, H, W); `paths` are as given."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    classes: list[str]
    skipped: list[dict] = field(default_factory=list)
    # set when `images` is a mapped file (--cache disk): where the set's derived arrays (a
    # split's rows, cached features) are written, so they are mapped too
    scratch: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: list[int] | np.ndarray) -> "ImageSet":
        idx_t = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        images = self.images[idx_t] if self.scratch is None else gather(self.images, idx_t, self.scratch)
        return ImageSet(images, self.labels[idx_t], [self.paths[i] for i in idx_t.tolist()],
                        self.classes, self.skipped, self.scratch)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def scan_class_folders(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted class names and (file, label) pairs. Non-image files are ignored; a class folder
    without images, or a root without class folders, is an error naming the folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders found (expected {root}/<class>/<image files>)")
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and is_image(p))
        if not files:
            raise DataError(f"{root / name}: class folder holds no images "
                            f"(extensions {', '.join(sorted(IMAGE_EXTENSIONS))}); remove it or add images")
        items.extend((f, label) for f in files)
    return classes, items


def list_images(paths: list[str | Path]) -> list[Path]:
    """Files as given, folders expanded recursively (sorted); for `predict`."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and is_image(f)))
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not out:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    return out


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grey: stretch to 8 bit by the actual range, not by clipping at 255.
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        im = Image.fromarray(a.round().astype(np.uint8), "L")
    if im.mode in ("1", "L", "P", "RGB") and "transparency" in im.info:
        # A PNG/GIF transparency key (tRNS on a palette, grey or RGB image) is alpha too.
        im = im.convert("RGBA")
    elif im.mode == "P":
        im = im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels go onto white (what a viewer shows), not onto whatever RGB they hide.
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


class TooManyPixels(DataError):
    """An image whose header announces more pixels than the caller accepts (not decoded)."""


def decode_image(path: str | Path, size: int, resize: str = "crop", max_pixels: int | None = None) -> np.ndarray:
    """One file -> uint8 (3, size, size). resize: 'crop' (shorter side to size, centre crop)
    or 'squash' (both sides to size, as Keras' flow_from_directory does). max_pixels: refuse
    (TooManyPixels) an image whose header announces more, before a byte of it is decoded: a
    17 kB PNG can announce 12000x12000 pixels, 430 MB once decoded."""
    with Image.open(path) as im:
        if max_pixels is not None and im.size[0] * im.size[1] > max_pixels:
            w, h = im.size
            raise TooManyPixels(f"the image is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of "
                                f"{max_pixels / 1e6:g} megapixels")
        if im.format == "JPEG" and min(im.size) >= 2 * size:
            im.draft("RGB", (size, size))  # let libjpeg decode at 1/2..1/8 scale: much faster
        im = ImageOps.exif_transpose(im)
        im.load()
        im = _to_rgb(im)
    return _fit(im, size, resize)


def _fit(im: Image.Image, size: int, resize: str) -> np.ndarray:
    """RGB image -> uint8 (3, size, size), by `resize` ('crop' or 'squash')."""
    w, h = im.size
    if (w, h) != (size, size):
        if resize == "squash":
            im = im.resize((size, size), Image.BILINEAR)
        else:
            s = size / min(w, h)
            nw, nh = max(size, round(w * s)), max(size, round(h * s))
            im = im.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_frame(data: bytes) -> tuple[int, int, int]:
    """(colour components, height, width) from a JPEG's frame header ((0, 0, 0) if not found),
    without decoding it."""
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in _SOF_MARKERS:
            return data[i + 9], int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return 0, 0, 0


def _decode_jpeg_fast(path: str, size: int, resize: str = "crop") -> np.ndarray | None:
    """libjpeg-turbo through torchvision, ~4x faster than PIL for small JPEGs, then PIL's own
    resize, so pixels equal the PIL path's. Only for the plain case (complete grey or YCbCr
    file, not so large that PIL would decode it at reduced scale); anything else returns None
    and takes the PIL path, which also reports errors by name."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\xff\xd8" or data.rstrip(b"\0")[-2:] != b"\xff\xd9":
        return None  # not a JPEG, or truncated: libjpeg would pad it silently
    components, height, width = _jpeg_frame(data)
    if components not in (1, 3):
        return None  # CMYK/YCCK: PIL knows Adobe's inverted CMYK
    if not 0 < min(height, width) < 2 * size:
        # PIL's draft mode decodes this at 1/2..1/8 scale: keep its exact pixels. Decided from the
        # header, before decoding: a 600-byte file announcing 60000x60000 pixels would have
        # torchvision allocate 10.8 GB for it (PIL refuses it as a decompression bomb instead)
        return None
    from torchvision.io import ImageReadMode, decode_jpeg
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; we pin
            # 0.29.1, and PIL remains the fallback the day they go.
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                              apply_exif_orientation=True)
    except (RuntimeError, ValueError):
        return None
    if tuple(img.shape[1:]) == (size, size):
        return img.numpy()
    if min(img.shape[1:]) >= 2 * size:
        return None  # EXIF rotation aside, the header said otherwise: PIL's draft path, as above
    return _fit(Image.fromarray(img.permute(1, 2, 0).numpy()), size, resize)


def _decode_one(args: tuple[str, int, str]) -> tuple[np.ndarray | None, str]:
    path, size, resize = args
    if path.lower().endswith((".jpg", ".jpeg", ".jfif")):
        fast = _decode_jpeg_fast(path, size, resize)
        if fast is not None:
            return fast, ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's EXIF / palette chatter is not the user's problem
            return decode_image(path, size, resize), ""
    except Exception as e:  # any decode failure (truncated, not an image, ...) is reported by name
        return None, f"{e.__class__.__name__}: {e}"


def _import_decoder(jobs: list[tuple[str, int, str]]) -> None:
    """Import torchvision's JPEG decoder here, before the workers are forked, when any job is a
    JPEG: each forked worker would otherwise import torchvision itself (it pulls in
    torch._dynamo: 1.6 s of CPU each, in every pool, i.e. once for train and once for test),
    while the training process needs torch._dynamo anyway (torch.optim imports it on the
    optimizer's first call). Imported once here, the workers inherit it."""
    if any(path.lower().endswith((".jpg", ".jpeg", ".jfif")) for path, _, _ in jobs):
        import torchvision.io  # noqa: F401


def _decoded(jobs: list[tuple[str, int, str]], workers: int):
    """(array or None, reason) per job, in order, as they are decoded (in parallel)."""
    with phase("decoding images", len(jobs), "images") as p:
        if workers > 1 and len(jobs) >= 256:
            _import_decoder(jobs)
            with get_context("fork").Pool(workers) as pool:
                # imap keeps the order and lets the progress follow; chunks small enough for a
                # smooth bar, large enough that pickling stays cheap
                for r in pool.imap(_decode_one, jobs, chunksize=max(16, min(256, len(jobs) // (8 * workers)))):
                    yield r
                    p.advance()
        else:
            for j in jobs:
                yield _decode_one(j)
                p.advance()


def decode_files(files: list[Path], size: int, resize: str = "crop", workers: int = 0,
                 strict: bool = False, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Decode in parallel. Returns (uint8 (N_ok, 3, size, size), ok mask (N,), skipped list).
    Each image is written into `rows` ((N, 3, size, size); new memory when None) as it arrives,
    the readable ones first: the result is rows[:N_ok], so a mapped `rows` never has the whole
    set in process memory."""
    jobs = [(str(f), size, resize) for f in files]
    if rows is None:
        rows = np.empty((len(files), 3, size, size), np.uint8)
    ok = np.zeros(len(files), dtype=bool)
    reasons: dict[int, str] = {}
    n = 0
    for i, (arr, reason) in enumerate(_decoded(jobs, workers or os.cpu_count() or 1)):
        if arr is None:
            reasons[i] = reason
            if strict:
                raise DataError(f"{files[i]}: cannot read image ({reason}); fix or remove it, "
                                "or drop --strict to skip unreadable files")
            continue
        rows[n] = arr
        ok[i] = True
        n += 1
    skipped = [{"path": str(files[i]), "reason": r} for i, r in reasons.items()]
    for s in skipped:
        log.warning("skipping unreadable image %s (%s)", s["path"], s["reason"])
    return rows[:n], ok, skipped


def default_cache_dir() -> Path:
    return Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge"))


# (path, size, mtime_ns) -> sha1 of the contents: the decode cache's key hashes every file, and
# the duplicate check (core/data/duplicates.py) reuses those hashes instead of reading again
_HASHES: dict[tuple[str, int, int], str] = {}
_MAX_HASHES = 1_000_000  # ~150 MB at most; forgotten all at once beyond that


def content_hashes(files: list[Path]) -> list[str]:
    """sha1 (hex) of each file's contents, as the decode cache's key uses them; a file is read
    once per process unless it changes."""
    out = []
    with phase("reading image files", len(files), "files") as p:
        for f in files:
            out.append(_content_hash(f))
            p.advance()
    return out


def _content_hash(f: Path) -> str:
    st = os.stat(f)
    key = (str(f), st.st_size, st.st_mtime_ns)
    digest = _HASHES.get(key)
    if digest is None:
        if len(_HASHES) >= _MAX_HASHES:
            _HASHES.clear()
        digest = _HASHES[key] = hashlib.sha1(Path(f).read_bytes()).hexdigest()
    return digest


def _cache_key(files: list[Path], size: int, resize: str) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}:{size}:{resize}:{len(files)}".encode())
    for digest in content_hashes(files):
        h.update(bytes.fromhex(digest))  # the same bytes as sha1(...).digest(): cache keys unchanged
    return h.hexdigest()[:32]


def _sample_crc(arr: np.ndarray, samples: int = 64) -> int:
    """crc32 of up to `samples` rows spread over the array and its last row: what tells a
    damaged cache entry from a good one without reading all of a file larger than memory."""
    crc = 0
    if len(arr):
        for i in sorted({*np.linspace(0, len(arr) - 1, min(samples, len(arr))).astype(int).tolist(), len(arr) - 1}):
            crc = zlib.crc32(np.ascontiguousarray(arr[i]).data, crc)
    return crc


def _read_entry(npy: Path, meta: Path, files: list[Path], size: int, store: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """A cache entry, checked against the files and its own record (size of the file, crc of
    sampled rows); mapped for store 'disk'. Raises (OSError, ValueError, ...) when it is damaged."""
    info = json.loads(meta.read_text())
    ok = np.array(info["ok"], dtype=bool)
    # Skipped files keep their current paths: the key is content, paths may have moved.
    skipped = [{"path": str(files[i]), "reason": str(r)} for i, r in info["skipped"]]
    if npy.stat().st_size != info["bytes"]:
        raise ValueError(f"the file holds {npy.stat().st_size} bytes, {info['bytes']} were written")
    arr = map_npy(npy) if store == "disk" else np.load(npy, allow_pickle=False)
    if (ok.shape != (len(files),) or arr.dtype != np.uint8
            or arr.shape != (int(ok.sum()), 3, size, size)
            or sorted(s["path"] for s in skipped) != sorted(str(f) for f, g in zip(files, ok) if not g)):
        raise ValueError("the entry does not match the files")
    if _sample_crc(arr) != info["crc"]:
        raise ValueError("its pixels differ from those written")
    return arr, ok, skipped


def _write_entry(files: list[Path], size: int, resize: str, workers: int, strict: bool, cache: Path, key: str,
                 store: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Decode straight into the entry's file (a temporary name, renamed when complete: a killed
    run leaves no half-written entry), then read it back as `store` says."""
    npy, meta = cache / f"{key}.npy", cache / f"{key}.json"
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{key}.{os.getpid()}.tmp.npy"
    try:
        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, size, size))
        arr, ok, skipped = decode_files(files, size, resize, workers, strict, rows)
        n = len(arr)
        del arr
        if n < len(rows):  # skipped files: the entry holds the readable rows only
            short_path = cache / f"{key}.{os.getpid()}.short.tmp.npy"
            short = np.lib.format.open_memmap(short_path, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
            for i in range(0, n, 1024):
                short[i:i + 1024] = rows[i:min(i + 1024, n)]
            short.flush()
            del short
            os.replace(short_path, tmp)
        rows.flush()
        del rows
        crc = _sample_crc(map_npy(tmp))
        os.replace(tmp, npy)
        index = {str(f): i for i, f in enumerate(files)}
        bad = [[index[s["path"]], s["reason"]] for s in skipped]
        tmpj = cache / f"{key}.{os.getpid()}.tmp.json"
        tmpj.write_text(json.dumps({"ok": ok.tolist(), "skipped": bad, "bytes": npy.stat().st_size, "crc": crc}))
        os.replace(tmpj, meta)
    finally:
        for t in cache.glob(f"{key}.{os.getpid()}.*tmp*"):
            t.unlink(missing_ok=True)
    return _read_entry(npy, meta, files, size, store)


def decode_cached(files: list[Path], size: int, resize: str = "crop", cache_dir: str | Path | None = None,
                  workers: int = 0, strict: bool = False, store: str = "auto") -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """decode_files, memoised on disk by file contents and settings (cache_dir='' disables).
    store: 'memory' returns the pixels in process memory; 'disk' maps the cache file (or, with
    caching off, a scratch file), so a set larger than memory decodes and trains; 'auto' picks
    by the decoded size (mapped.choose_store)."""
    store = choose_store(len(files) * 3 * size * size, store)
    if cache_dir == "":
        rows = scratch_numpy((len(files), 3, size, size), np.uint8, scratch_dir(None)) if store == "disk" else None
        return decode_files(files, size, resize, workers, strict, rows)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = _cache_key(files, size, resize)
    npy, meta = cache / f"{key}.npy", cache / f"{key}.json"
    if npy.exists() or meta.exists():
        try:
            arr, ok, skipped = _read_entry(npy, meta, files, size, store)
        except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError) as e:
            # a damaged cache entry is rebuilt, never trusted
            log.warning("image cache entry %s is damaged or incomplete (%s); decoding again", npy, e)
        else:
            if skipped and strict:
                raise DataError(f"{skipped[0]['path']}: cannot read image ({skipped[0]['reason']}); "
                                "fix or remove it, or drop --strict to skip unreadable files")
            for s in skipped:
                log.warning("skipping unreadable image %s (%s)", s["path"], s["reason"])
            return arr, ok, skipped
    try:
        return _write_entry(files, size, resize, workers, strict, cache, key, store)
    except OSError as e:
        log.warning("could not write image cache in %s (%s); continuing without it", cache, e)
    rows = scratch_numpy((len(files), 3, size, size), np.uint8, scratch_dir(None)) if store == "disk" else None
    return decode_files(files, size, resize, workers, strict, rows)


def load_image_folder(root: str | Path, size: int, resize: str = "crop", classes: list[str] | None = None,
                      items: list[tuple[Path, int]] | None = None, cache_dir: str | Path | None = None,
                      workers: int = 0, strict: bool = False, store: str = "auto") -> ImageSet:
    """Decode a class-folder tree. `classes` (e.g. the training classes) fixes the label order;
    a folder class that is not among them is an error. `items` restricts to given files.
    `store`: where the pixels live (decode_cached)."""
    found, scanned = scan_class_folders(root)
    if items is None:
        items = scanned
    if classes is not None:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{root}: classes {unknown} are not among the model's classes {classes}")
        remap = {i: classes.index(c) for i, c in enumerate(found)}
        items = [(f, remap[l]) for f, l in items]
    else:
        classes = found
    files = [f for f, _ in items]
    arr, ok, skipped = decode_cached(files, size, resize, cache_dir, workers, strict, store)
    labels = torch.tensor([l for (_, l), good in zip(items, ok) if good], dtype=torch.int64)
    paths = [str(f) for f, good in zip(files, ok) if good]
    if len(labels) == 0:
        raise DataError(f"{root}: none of the {len(files)} images could be read")
    return ImageSet(torch.from_numpy(arr), labels, paths, list(classes), skipped,
                    scratch_dir(cache_dir if cache_dir is not None else default_cache_dir()) if isinstance(arr, np.memmap) else None)


def peek_sides(files: list[Path], limit: int = 256, seed: int = 0) -> list[int]:
    """The shorter side in pixels of up to `limit` of `files` (a seeded sample), read from each
    file's header: PIL's open parses the header only, no pixel is decoded. Unreadable files are
    left out (decoding reports them later)."""
    pick = files if len(files) <= limit else [files[i] for i in np.random.default_rng(seed).choice(len(files), limit, replace=False)]
    sides = []
    for f in pick:
        try:
            with Image.open(f) as im:
                sides.append(min(im.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return sides
