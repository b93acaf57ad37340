"""The bundle: a folder with `model.safetensors`, `config.json` (architecture, classes,
preprocessing, format version, weights checksum), a model card `README.md` and `manifest.json`
(the sha256 of every other file, config.json included, and a checksum of itself). Nothing
pickled; it is all that `predict`, `serve` and `load` need.

Integrity: a bundle is refused, by file name, when its manifest is missing or edited, when
config.json differs from what the manifest recorded (a class name, an image size, a deleted
checksum key) or when any listed file is missing, truncated or modified. This catches damage
and hand edits; it is not a signature (anyone able to rewrite the manifest's checksums can
forge it).

Writes are whole-bundle: everything goes into a hidden temp folder beside the target, is
flushed to disk, and is then swapped in for the old folder, so a full disk or a crash leaves
the previous bundle as it was."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..errors import BundleError, StorageError
from .fs import fsync_dir, storage_error
from .models.registry import create_model

log = logging.getLogger("tuneforge")

FORMAT = "tuneforge-bundle"
FORMAT_VERSION = 1
ENSEMBLE_FORMAT = "tuneforge-ensemble"  # core/ensemble.py: a folder of member bundles
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "tuneforge-manifest"
REEXPORT = "re-export it: tuneforge export RUN_OR_BUNDLE --out NEW_FOLDER"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- manifest


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _safe_name(name: object) -> bool:
    """A relative path inside the bundle: no absolute path, no `..`, no backslash tricks."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and p.as_posix() == name


def manifest_doc(folder: Path) -> dict:
    """The manifest of every file under `folder` (but itself), with its own checksum."""
    files = {f.relative_to(folder).as_posix(): _sha256(f) for f in sorted(folder.rglob("*"))
             if f.is_file() and f.relative_to(folder).as_posix() != MANIFEST}
    doc = {"format": MANIFEST_FORMAT, "version": 1, "algorithm": "sha256", "files": files}
    doc["manifest_sha256"] = hashlib.sha256(_canonical(doc)).hexdigest()
    return doc


def read_manifest(folder: Path) -> dict[str, str]:
    """name -> sha256 of a bundle's manifest, itself verified; refused by name when missing,
    unreadable or edited."""
    files = read_manifest_doc(folder)
    path = folder / MANIFEST
    for required in ("config.json", "model.safetensors"):
        if required not in files:
            raise BundleError(f"{path}: does not list {required} (edited or damaged); {REEXPORT}")
    return files


def read_manifest_doc(folder: Path) -> dict[str, str]:
    """name -> sha256 of any manifest written by `staged_bundle` (a bundle's, an ensemble's),
    itself verified."""
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: missing, so the bundle's files cannot be verified (deleted, or a bundle "
                          f"written before tuneforge wrote manifests); {REEXPORT}")
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise BundleError(f"{path}: damaged manifest ({e}); {REEXPORT}") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if (not isinstance(files, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("algorithm") != "sha256"
            or not all(_safe_name(k) and isinstance(v, str) and len(v) == 64 for k, v in files.items())):
        raise BundleError(f"{path}: not a tuneforge bundle manifest (damaged or edited); {REEXPORT}")
    want = doc.get("manifest_sha256")
    rest = {k: v for k, v in doc.items() if k != "manifest_sha256"}
    if want != hashlib.sha256(_canonical(rest)).hexdigest():
        raise BundleError(f"{path}: edited or damaged (its own checksum does not match); {REEXPORT}")
    if "config.json" not in files:
        raise BundleError(f"{path}: does not list config.json (edited or damaged); {REEXPORT}")
    return files


def _verify(folder: Path, name: str, want: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise BundleError(f"{path}: missing (listed in {MANIFEST}); copy the whole bundle folder")
    if _sha256(path) != want:
        raise BundleError(f"{path}: checksum does not match {MANIFEST} (truncated or modified); "
                          "export the bundle again")
    return path


# ---------------------------------------------------------------- whole-bundle writes


def write_file(path: Path, data: bytes) -> None:
    """One file of a bundle being staged (flushed to disk with the rest before the swap)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _umask() -> int:
    """The process umask, read without changing it where /proc says it (os.umask can only set
    it, and setting it back leaves a window for other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_modes(folder: Path) -> None:
    """Give a staged bundle the modes of any other written file (0644/0755 under the usual
    umask): its temp folder comes from mkdtemp (0700), and writers such as tokenizers may use
    private temp files (0600), so a bundle copied to a server would be unreadable by its user."""
    mask = _umask()
    for p in [folder, *folder.rglob("*")]:
        if p.is_symlink():
            continue
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def _fsync_tree(folder: Path) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        fsync_dir(d)


def _swap(new: Path, out: Path) -> None:
    """Put `new` where `out` is: the old folder is renamed aside, the new one renamed in, then
    the old one removed. Two renames, not one (a folder cannot replace a non-empty folder
    atomically), so a crash between them leaves the old bundle whole, as `.NAME.PID.old`."""
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if old.exists():
        shutil.rmtree(old)
    had_old = out.exists()
    if had_old:
        os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        if had_old:
            os.rename(old, out)
        raise
    fsync_dir(out.parent)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


def _is_replaceable(out: Path) -> bool:
    """A folder a bundle write may replace: absent, empty, or a bundle (even a half-written one
    from before whole-bundle writes); never an unrelated folder of the user's."""
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    return not any(out.iterdir()) or any((out / n).is_file() for n in ("config.json", MANIFEST, "model.safetensors"))


def _remove_dead_writers_temps(out: Path) -> None:
    """Delete the temp folders of bundle writes into `out` whose process is gone (SIGKILL, power
    cut): `.NAME.PID.XXXX.tmp`. A live writer's folder is left alone."""
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        pid = tmp.name[len(out.name) + 2:].split(".", 1)[0]
        if not tmp.is_dir() or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except OSError:  # alive but not ours to signal
            pass


@contextlib.contextmanager
def staged_bundle(out: str | Path) -> Iterator[Path]:
    """A temp folder beside `out` to write a bundle into; when the block ends, its manifest is
    written, everything is flushed to disk and the folder swapped in for `out`. On any failure
    the temp folder is removed and `out` is left exactly as it was; a full disk, read-only file
    system or missing permission is a one-line StorageError naming `out`."""
    out = Path(out)
    if not _is_replaceable(out):
        raise BundleError(f"{out}: exists and is not a bundle; refusing to replace it (choose an empty or new folder)")
    tmp: Path | None = None
    existed = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_writers_temps(out)
        # the writer's pid in the name: a later writer can tell a killed writer's leftovers
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
        yield tmp
        doc = manifest_doc(tmp)
        write_file(tmp / MANIFEST, json.dumps(doc, indent=1).encode())
        _open_modes(tmp)
        _fsync_tree(tmp)
        _swap(tmp, out)
        tmp = None
    except OSError as e:
        err = storage_error(e, out)
        if err is None:
            raise
        raise StorageError(f"{err}; " + ("the previous bundle is left as it was" if existed else "nothing was written")) from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class BundleKind:
    """A bundle task whose module is not a Classifier of `create_model`: how to build it from
    config.json and how its model card reads (core/models/aligned.py registers the aligned pair)."""
    build: Callable[[dict], nn.Module]
    card: Callable[[dict], str]


KINDS: dict[str, BundleKind] = {}


def register_kind(task: str, build: Callable[[dict], nn.Module], card: Callable[[dict], str]) -> None:
    KINDS[task] = BundleKind(build, card)


def save_bundle(out: str | Path, model: nn.Module, meta: dict, tokenizer=None) -> Path:
    """Write a bundle as a whole (see `staged_bundle`): the weights, config.json, the model card
    and the manifest. meta: {"task", "model", "model_args", "classes", "preprocessing": {...},
    "metrics": {...}, ...} (task defaults to image-classification). `tokenizer`: a TextEncoding
    (or anything with `save(folder) -> name`) whose files go beside the weights, listed with
    their checksums in `files` as every other file is. The one writer of bundles from a model:
    classifiers and aligned pairs alike."""
    out = Path(out)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with staged_bundle(out) as tmp:
        data = safetensors_bytes(state)  # bytes, so a full disk is an OSError with its errno
        write_file(tmp / "model.safetensors", data)
        files = dict(meta.get("files") or {})
        if tokenizer is not None:
            saved = tmp / tokenizer.save(tmp)
            files.update({f.relative_to(tmp).as_posix(): _sha256(f)
                          for f in sorted([saved] if saved.is_file() else saved.rglob("*")) if f.is_file()})
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": "image-classification",
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "weights_sha256": hashlib.sha256(data).hexdigest(), **meta}
        if files:
            config["files"] = files
        write_config(tmp, config)
    return out


def write_config(folder: Path, config: dict) -> None:
    """config.json and the model card README.md of a bundle being staged."""
    write_file(folder / "config.json", json.dumps(config, indent=2).encode())
    write_file(folder / "README.md", model_card(config).encode())


# What `predict` takes, per bundle task, in the card's usage line (others: a table with the training columns).
_EXAMPLE_INPUT = {"image-classification": "image.jpg", "text-classification": '--text "a text to classify"',
                  "text-tfidf": '--text "a text to classify"', "image-text-classification": 'image.jpg "its text"'}


def model_card(config: dict) -> str:
    """The bundle's README.md, from its config."""
    if config.get("task") in KINDS:
        return KINDS[config["task"]].card(config)
    m = config.get("metrics", {})
    task = config.get("task", "image-classification")
    lines = [f"# {config.get('name', config['model'])}", "",
             f"{task} model ({config['model']}, {len(config['classes'])} classes), made by tuneforge "
             f"on {config['created']}.", "",
             "## Classes", ", ".join(config["classes"]), "",
             "## Preprocessing", "```json", json.dumps(config["preprocessing"], indent=1), "```", ""]
    if m:
        lines += ["## Metrics", "| split | accuracy | macro F1 | n |", "|---|---|---|---|"]
        for split, v in m.items():
            lines.append(f"| {split} | {v.get('accuracy', float('nan')):.4f} | {v.get('macro_f1', float('nan')):.4f} | {v.get('n', '')} |")
        lines.append("")
    if config.get("data"):
        lines += ["## Data", "```json", json.dumps(config["data"], indent=1), "```", ""]
    if config.get("onnx"):
        o = config["onnx"]
        if task.startswith("image-classification"):
            given = ("input uint8 NCHW pixels at the size above (scaling, normalisation and TTA are inside the "
                     "graph)")
        else:  # token ids, TF-IDF terms, sequences: what `preprocessing` turns raw input into
            names = o.get("inputs") or {}
            given = ("inputs " + ", ".join(f"`{k}` ({v})" for k, v in names.items()) if names else "inputs") + (
                " as `preprocessing` above makes them from raw input")
        lines += ["## ONNX", f"`{o['file']}`: opset {o['opset']}, dynamic batch, {given}, output `logits`. Checked at "
                  f"export: max |logit difference| to PyTorch {o['max_abs_diff']:.2g} on {o['checked_on']} real inputs.", ""]
    if config.get("onnx_int8"):
        q = config["onnx_int8"]
        a = q.get("accuracy") or {}
        lines += [f"`{q['file']}`: int8 ({q['method']} quantization, ONNX Runtime)."
                  + (f" Test accuracy {a['fp32']:.4f} -> {a['int8']:.4f} ({a['change_points']:+.2f} points, "
                     f"n={a['n']})." if a else ""), ""]
    if config.get("exported"):
        lines += [f"Exported {config['exported']}.", ""]
    lines += ["## Use", "```", f"tuneforge predict <this folder> {_EXAMPLE_INPUT.get(task, 'inputs.csv')}",
              f"tuneforge serve {'<this folder>'}        # then open http://127.0.0.1:8000/", "```",
              "Without tuneforge: read `config.json`, decode and resize as `preprocessing` says, and run "
              "`model.onnx` with onnxruntime (or `model.safetensors` with the architecture in `model`).", ""]
    return "\n".join(lines)


def _bundle_dir(path: str | Path) -> Path:
    path = Path(path)
    if (path / "model" / "config.json").exists() and not (path / "config.json").exists():
        path = path / "model"  # a run folder: its bundle is in model/
    if not (path / "config.json").is_file():
        left = sorted(path.parent.glob(f".{path.name}.*.old")) if path.name else []
        hint = (f" (an interrupted bundle write left the previous bundle in {left[0]}: rename it to {path})"
                if left and not path.exists() else "")
        raise BundleError(f"{path}: not a tuneforge bundle or run folder (no config.json); "
                          f"pass a run folder from `tuneforge fit` or a folder from `tuneforge export`{hint}")
    return path


def load_config_json(folder: Path) -> tuple[Path, object]:
    """(path, parsed contents) of `folder`'s config.json, a bundle's or an ensemble's; JSON that
    does not parse is a BundleError naming the file. What the contents must be is the caller's."""
    cfg_path = folder / "config.json"
    try:
        return cfg_path, json.loads(cfg_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{cfg_path}: damaged config ({e})") from None


def _read(path: str | Path, legacy: bool = False) -> tuple[dict, dict[str, str] | None]:
    """(config, manifest files) with config.json verified against the manifest. `legacy`: a
    bundle without manifest.json gives (config, None) instead of an error (for `export` only,
    which re-exports it with one)."""
    path = _bundle_dir(path)
    cfg_path, config = load_config_json(path)
    if isinstance(config, dict) and config.get("format") == ENSEMBLE_FORMAT:
        raise BundleError(f"{path}: an ensemble of bundles (`tuneforge ensemble`); this takes a single model: give "
                          f"one of its members ({path / 'members' / '0'}) or use predict, evaluate, batch or serve")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise BundleError(f"{cfg_path}: not a tuneforge bundle (format "
                          f"{config.get('format') if isinstance(config, dict) else None!r})")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{cfg_path}: damaged config (format_version {version!r} is not a number)")
    if version > FORMAT_VERSION:
        raise BundleError(f"{cfg_path}: bundle format {version} is newer than this tuneforge "
                          f"understands ({FORMAT_VERSION}); upgrade tuneforge")
    manifest = None
    if not (legacy and not (path / MANIFEST).exists()):
        manifest = read_manifest(path)
        _verify(path, "config.json", manifest["config.json"])
        # config.json is now known to be what the manifest recorded; its own checksums must agree
        listed = config.get("files", {})
        named = {**(listed if isinstance(listed, dict) else {}), "model.safetensors": config.get("weights_sha256")}
        if not isinstance(listed, dict) or any(manifest.get(k) != v for k, v in named.items()):
            raise BundleError(f"{path / MANIFEST}: disagrees with config.json's checksums (edited); {REEXPORT}")
    elif not isinstance(config.get("weights_sha256"), str) or not isinstance(config.get("files", {}), dict):
        raise BundleError(f"{cfg_path}: no manifest.json and no weights checksum; the bundle cannot be verified")
    config["_dir"] = str(path)
    return config, manifest


def read_bundle_config(path: str | Path) -> dict:
    """config.json of a bundle (or of a run folder's model/), verified against the manifest."""
    return _read(path)[0]


def bundle_file(config: dict, name: str) -> Path:
    """A file listed in the bundle's `files` (name -> sha256), checked: a missing, truncated or
    modified file is an error naming it, never a half-loaded model."""
    want = (config.get("files") or {}).get(name)
    if want is None or not _safe_name(name):
        raise BundleError(f"{config['_dir']}: the bundle has no {name}")
    return _verify(Path(config["_dir"]), name, want)


def build_model(config: dict) -> nn.Module:
    """The untrained module a bundle's config describes (its weights are loaded next)."""
    if config.get("task") in KINDS:  # e.g. an aligned pair: two encoders and the heads, no classes
        return KINDS[config["task"]].build(config)
    return create_model(config["model"], len(config["classes"]), config["preprocessing"]["image_size"],
                        pretrained=False, **config.get("model_args", {}))


def load_bundle(path: str | Path, legacy: bool = False) -> tuple[nn.Module, dict]:
    """(model in eval mode, config). Verifies the manifest and every file it lists (weights,
    config, tokenizer files, ONNX models) before reading any weight. `legacy`: accept a bundle
    written before manifests, checked by config.json's own checksums (`export` only, so such a
    bundle can be re-exported with a manifest)."""
    config, manifest = _read(path, legacy)
    folder = Path(config["_dir"])
    if manifest is None:
        log.warning("%s: no %s (written by an older tuneforge); verified by config.json's checksums only",
                    folder, MANIFEST)
        manifest = {"model.safetensors": config["weights_sha256"], **config.get("files", {})}
        if not all(_safe_name(k) and isinstance(v, str) for k, v in manifest.items()):
            raise BundleError(f"{folder / 'config.json'}: damaged file list")
    for name, want in manifest.items():
        _verify(folder, name, want)
    weights = folder / "model.safetensors"
    try:
        model = build_model(config)
    except BundleError:
        raise
    except Exception as e:  # config.json verified but describing no model this tuneforge builds
        raise BundleError(f"{folder / 'config.json'}: does not describe a model this tuneforge can build "
                          f"({e.__class__.__name__}: {e})") from e
    try:
        state = load_file(str(weights))
        model.load_state_dict(state)
    except Exception as e:
        what = config["model"] if isinstance(config.get("model"), str) else "the model described in config.json"
        raise BundleError(f"{weights}: weights do not fit {what} ({e})") from e
    model.eval()
    return model, config
