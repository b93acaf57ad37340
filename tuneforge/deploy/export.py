"""`tuneforge export`: a run folder (or bundle) -> a self-contained folder to hand to
production: safetensors weights, config.json, model card, optionally model.onnx and an int8
model.int8.onnx, every file checksummed in manifest.json. Nothing pickled. The new bundle is
written whole (core/bundle.py `staged_bundle`): exporting over an existing bundle replaces it
only once every file is on disk, and a failure leaves it as it was.

The ONNX file is only written when it reproduces PyTorch on real inputs (the run's own test,
val or train images, or `--data`), and the int8 model's accuracy change is measured on the
run's test split, so the card states what the user gets."""
from __future__ import annotations

import json
import logging
import random
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..core.data.images import decode_cached, list_images, scan_class_folders
from ..errors import ConfigError, DataError
from ..core.bundle import MANIFEST, _sha256, load_bundle, staged_bundle, write_config
from ..tasks.registry import Task, task_for

log = logging.getLogger("tuneforge")

FORMATS = ("safetensors", "onnx")
QUANTIZE = ("int8",)
CHECK_EXAMPLES = 32
CALIBRATION_EXAMPLES = 512
GENERATED = {"config.json", "README.md", "model.onnx", "model.int8.onnx", MANIFEST}


def _run_split(bundle_dir: Path, split: str) -> tuple[list[Path], np.ndarray] | None:
    """(files, labels) of a split recorded in the run's split.json, if the bundle sits in a run
    folder and the files are still there."""
    manifest = bundle_dir.parent / "split.json"
    if not manifest.is_file():
        return None
    doc = json.loads(manifest.read_text())
    root, rel = (doc.get("roots") or {}).get(split), doc.get(split) or []
    if not root or not rel:
        return None
    files = [Path(root) / r for r in rel]
    if not all(f.is_file() for f in files[:CHECK_EXAMPLES]):
        log.warning("the images of the run's %s split are gone from %s", split, root)
        return None
    classes = doc["classes"]
    if not classes:  # a table of images (regression, multi-label): no class folders (the labels are not needed to check)
        return files, np.zeros(len(files), np.int64)
    return files, np.array([classes.index(Path(r).parts[0]) for r in rel])


def _folder(data: Path, classes: list[str]) -> tuple[list[Path], np.ndarray | None]:
    """--data: class folders (labelled; its test/ subfolder if present) or loose images."""
    root = data / "test" if (data / "test").is_dir() else data
    try:
        found, items = scan_class_folders(root)
    except DataError:
        found, items = [], []
    if items and set(found) <= set(classes):
        return [f for f, _ in items], np.array([classes.index(found[l]) for _, l in items])
    return list_images([data]), None


def _images(task: Task, files: list[Path]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    # The training decoder and its disk cache: the test set a run was scored on is not decoded again.
    pre = task.pre
    arr, ok, skipped = decode_cached(files, pre["image_size"], pre.get("resize", "crop"))
    return {"images": arr}, ok


def _table_check_batch(task: Task, config: dict, src: Path, data: str | Path | None) -> dict[str, np.ndarray]:
    """Real inputs for checking a non-image ONNX export (text, sequences, image+text): the first
    readable rows of `--data` or of the table the model was trained on (the bundle's
    `data.train_file`, or an aligned pair's `data.table`), read as the model's task reads a
    table. A model that takes an image and a text together is also proved on one image-only and
    one text-only row: the missing-input path the server uses."""
    d = config.get("data") or {}
    path = Path(data) if data else Path(d.get("train_file") or d.get("table") or "")
    if not path.is_file():
        raise DataError(f"{src}: no real inputs to check the ONNX export against ({path} is not there); "
                        "pass --data FILE (a table with the columns the model was trained on)")
    examples: list[dict[str, np.ndarray]] = []
    both = None
    for r in task.table_rows(path)[:CHECK_EXAMPLES * 4]:  # some rows may be unreadable: a few more are tried
        if len(examples) == CHECK_EXAMPLES - 2:
            break
        try:
            examples.append(task.prepare(r.get("image"), r.get("text"), r.get("values")))
        except DataError:
            continue
        if both is None and r.get("image") is not None and r.get("text"):
            both = r
    if not examples:
        raise DataError(f"--data: {path} has no row this {task.name} model can read to check the ONNX export on")
    if both is not None:
        examples += [task.prepare(image=both["image"]), task.prepare(text=both["text"])]
    return task.collate(examples)


def export_bundle(source: str | Path, out: str | Path, format: str = "safetensors", quantize: str | None = None,
                  data: str | Path | None = None) -> dict:
    """Write the portable bundle of `source` (run folder or bundle) into `out`; returns its config."""
    if format not in FORMATS:
        raise ConfigError(f"--format: {format!r} is not one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"--quantize: {quantize!r} is not one of {', '.join(QUANTIZE)}")
    if quantize and format != "onnx":
        raise ConfigError("--quantize int8 quantizes the ONNX model: add --format onnx")
    if data is not None and not Path(data).exists():
        raise DataError(f"--data: no such folder: {data}")
    # Verifies every checksum before anything is copied; a bundle from before manifests is
    # accepted here only (checked by its config.json), so that re-exporting it adds one.
    model, config = load_bundle(source, legacy=True)
    task = task_for(config)  # text tasks read their tokenizer from the source bundle (config["_dir"])
    src, out = Path(config.pop("_dir")), Path(out)
    if out.resolve() == src.resolve():
        raise ConfigError(f"--out: {out} is the source bundle itself; choose another folder")
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise ConfigError(f"--out: {out} exists and is not a bundle; choose an empty or new folder")
    with staged_bundle(out) as tmp:
        _write_export(model, task, config, src, tmp, format, quantize, data)
    return {**config, "_dir": str(out)}


def _write_export(model, task: Task, config: dict, src: Path, out: Path, format: str, quantize: str | None,
                  data: str | Path | None) -> None:
    """The exported bundle's files, written into `out` (the staging folder); updates `config`."""
    # Everything of the source bundle except what is generated here: weights and, for text
    # models, tokenizer files travel as they are.
    files = {}
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src).as_posix()
        if f.is_file() and rel not in GENERATED:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out / rel)
            files[rel] = _sha256(out / rel)
    config.pop("onnx", None), config.pop("onnx_int8", None)

    if format == "onnx":
        from .onnx import export_onnx
        labelled = extra = None
        if task.inputs == ("image",):
            labelled = {s: _run_split(src, s) for s in ("test", "val", "train")}
            extra = _folder(Path(data), config["classes"]) if data else None
            pool = extra or labelled["test"] or labelled["val"] or labelled["train"]
            if pool is None:
                raise DataError(f"{src}: no real images to check the ONNX export against (the bundle is not in a run "
                                "folder with its split.json and images); pass --data FOLDER")
            check, ok = _images(task, pool[0][:CHECK_EXAMPLES])
            if not ok.any():
                raise DataError(f"none of the first {CHECK_EXAMPLES} images of {pool[0][0].parent} could be read")
        else:
            if quantize:
                raise ConfigError(f"--quantize int8 is calibrated on images; a {task.name} model is exported "
                                  "as fp32 ONNX only (drop --quantize)")
            check = _table_check_batch(task, config, src, data)
        info = export_onnx(model, task, out / "model.onnx", check)
        files["model.onnx"] = _sha256(out / "model.onnx")
        # the graph's input names and dtypes, for the model card and users running it without tuneforge
        config["onnx"] = {"file": "model.onnx", **info, "inputs": {k: str(np.asarray(v).dtype) for k, v in check.items()}}
        if quantize == "int8":
            config["onnx_int8"] = _quantize(task, out, labelled, extra)
            files["model.int8.onnx"] = _sha256(out / "model.int8.onnx")

    config["files"] = files
    config["exported"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_config(out, config)


def _quantize(task: Task, out: Path, labelled: dict, extra: tuple | None) -> dict:
    """Static int8 calibrated on training images, and its accuracy next to the fp32 ONNX model's
    on the test images (the same files, the same decoder)."""
    from .onnx import accuracy, quantize_int8, session
    calib_src = labelled["train"] or extra
    calibration = None
    if calib_src:
        files = list(calib_src[0])
        random.Random(0).shuffle(files)  # a class-balanced-in-expectation sample, the same every time
        arr, _ = _images(task, files[:CALIBRATION_EXAMPLES])
        calibration = [{"images": arr["images"][i:i + 32]} for i in range(0, len(arr["images"]), 32)]
    info = quantize_int8(out / "model.onnx", out / "model.int8.onnx", calibration)
    test = (extra if extra and extra[1] is not None else None) or labelled["test"]
    if test is None:
        log.warning("no labelled test images (run split or --data class folders): int8 accuracy not measured")
        return {"file": "model.int8.onnx", **info, "accuracy": None}
    inputs, ok = _images(task, test[0])
    labels = test[1][ok]
    fp32 = accuracy(session(out / "model.onnx"), inputs, labels)
    int8 = accuracy(session(out / "model.int8.onnx"), inputs, labels)
    log.info("int8 (%s): test accuracy %.4f -> %.4f (%+.2f points, n=%d)", info["method"], fp32, int8,
             100 * (int8 - fp32), len(labels))
    return {"file": "model.int8.onnx", **info,
            "accuracy": {"fp32": fp32, "int8": int8, "change_points": round(100 * (int8 - fp32), 3), "n": int(len(labels))}}
