"""Run report: report.json, PNG plots and one self-contained report.html, plus a rich summary.

report.html is built from registered sections (`register_section`): classification, regression,
retrieval (align's Recall@k), probe (pretraining), the model vs its baseline (core/baseline.py),
learning curves, skipped files and the config;
each renders only for the reports it applies to.

Plots use matplotlib's object API with the Agg canvas directly (never pyplot), so writing a
report neither changes the process-wide backend nor leaks figures in long-running jobs.
"""

from __future__ import annotations

import base64
import functools
import html
import importlib
import importlib.metadata
import io
import json
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
import threading
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .. import __version__
from .fs import atomic_write, atomic_write_text, storage_errors
from .metrics import to_numpy, softmax

MAX_ERRORS = 24
GRID_COLS = 6
MAX_CELL_NUMBERS = 20  # above this many classes per-cell numbers are unreadable clutter


# ---------------------------------------------------------------- JSON


def _json_default(obj: Any) -> Any:
    """json.dump hook for numpy scalars/arrays, tensors, paths and sets."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray,)) or hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _jsonable(obj: Any) -> Any:
    """Plain-Python copy of `obj` with NaN/inf replaced by None, which strict JSON lacks."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)) or hasattr(obj, "tolist"):
        return _jsonable(_json_default(obj))
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temp file (core/fs.py) so a crash never leaves a half-written report behind."""
    atomic_write_text(path, text)


# ---------------------------------------------------------------- environment

# Distributions whose versions change results or speed; a missing one is recorded as None.
_PACKAGES = ("torchvision", "numpy", "transformers", "onnxruntime")
# CPU features the kernels dispatch on: bf16 autocast and int8 speed depend on them.
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def _version(dist: str) -> str | None:
    """The version of a loaded module as it reports it (with its build tag, e.g. +cpu); of one
    not loaded from the installed metadata, so that recording it never imports it."""
    loaded = getattr(sys.modules.get(dist), "__version__", None)
    if loaded:
        return str(loaded)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _cpu() -> dict[str, Any]:
    """CPU model and the flags of `_CPU_FLAGS` (None where /proc/cpuinfo is absent: not Linux)."""
    model, flags = None, None
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            have = set(value.split())
            flags = {f: f in have for f in _CPU_FLAGS}
    return {"model": model or platform.processor() or None, "flags": flags}


def environment() -> dict[str, Any]:
    """What a run ran on, so that two runs' reports can be compared: versions, Python, the CPU
    and its relevant flags, torch's threads, the device."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on macOS / Windows
        usable = os.cpu_count()
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {
        "tuneforge": __version__,
        "torch": torch.__version__,
        **{name: _version(name) for name in _PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": {**_cpu(), "cores": os.cpu_count(), "usable_cores": usable, "torch_capability": capability},
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": "cpu",  # every verb trains and predicts on the CPU
    }


# ---------------------------------------------------------------- plots


# What writing a report imports (matplotlib's Agg canvas, scikit-learn's metrics: ~2 s of CPU),
# imported when first used rather than at start-up, or by `preload` in the background.
REPORT_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.image", "sklearn.metrics")


def preload() -> Callable[[], None]:
    """Import REPORT_MODULES in a thread now; returns the function that waits for it. For a
    phase that leaves the interpreter idle while torch computes (scoring a test set: a few
    large operators that release the GIL): on 2 cores, scoring 2,000 images at 64 px and the
    imports took 30-33 s one after the other and 26-29 s overlapped (load ~9, 3 alternating
    pairs). An import that fails here fails again where the module is used, and says so there."""
    def run() -> None:
        for name in REPORT_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - reported by the import where the module is used
                return
    thread = threading.Thread(target=run, name="tuneforge-preload", daemon=True)
    thread.start()
    return thread.join


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path, dpi: int = 100) -> Path:
    # bbox_inches="tight" grows the canvas to fit long rotated class names instead of clipping;
    # written atomically like every file of a run (the format named, as a file object has no suffix)
    atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, bbox_inches="tight", format=path.suffix[1:] or "png"))
    return path


def plot_confusion_matrix(cm: list[list[int]], classes: list[str], path: Path,
                          title: str = "Confusion matrix") -> Path:
    """Row-normalised confusion matrix; figure and fonts scale so ~100 classes stay legible."""
    counts = np.asarray(cm, dtype=np.float64)
    c = counts.shape[0]
    support = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)

    side = float(np.clip(0.28 * c + 2.5, 4.5, 30.0))
    cell_pt = side * 72 / max(c, 1)
    tick_fs = float(np.clip(cell_pt * 0.55, 4.5, 10.0))
    fig = _new_figure(side + 1.5, side)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="fraction of true class")
    names = [_short(n, 28) for n in classes]
    # parse_math=False: a "$" in a class name would otherwise be parsed as mathtext and crash
    ax.set_xticks(range(c), labels=names, rotation=90 if c > 8 else 45,
                  ha="center" if c > 8 else "right", fontsize=tick_fs, parse_math=False)
    ax.set_yticks(range(c), labels=names, fontsize=tick_fs, parse_math=False)
    label_fs = float(np.clip(side * 0.6, 10.0, 20.0))
    ax.set_xlabel("predicted", fontsize=label_fs)
    ax.set_ylabel("true", fontsize=label_fs)
    ax.set_title(title, fontsize=label_fs * 1.2, parse_math=False)
    if c <= MAX_CELL_NUMBERS:
        cell_fs = float(np.clip(cell_pt * 0.3, 5.0, 10.0))
        for i in range(c):
            for j in range(c):
                if counts[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                            fontsize=cell_fs, color="white" if norm[i, j] > 0.5 else "black")
    return _save(fig, path)


def _series(history: list[dict]) -> tuple[list[float], dict[str, list[tuple[float, float]]]]:
    """Epoch x-values and, per numeric key, the (x, y) points where that key is present."""
    xs = [float(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    series: dict[str, list[tuple[float, float]]] = {}
    for x, h in zip(xs, history):
        for k, v in h.items():
            if k == "epoch" or isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                continue
            series.setdefault(k, []).append((x, float(v)))
    return xs, series


def plot_learning_curves(history: list[dict], path: Path) -> Path:
    """Panels for loss, accuracy, lr, then one per remaining numeric key (throughput, time)."""
    _, series = _series(history)
    groups: dict[str, list[str]] = {"loss": [], "accuracy": [], "learning rate": []}
    for k in series:
        if "loss" in k:
            groups["loss"].append(k)
        elif "acc" in k:
            groups["accuracy"].append(k)
        elif k == "lr" or k.endswith("_lr"):
            groups["learning rate"].append(k)
        elif k.endswith("_s"):
            groups.setdefault("seconds", []).append(k)  # all timings on one panel, not one each
        else:
            groups[k.replace("_", " ")] = [k]
    groups = {g: ks for g, ks in groups.items() if ks}
    if not groups:
        groups = {"(no numeric values)": []}
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = _new_figure(4.6 * cols, 3.4 * rows)
    for idx, (name, keys) in enumerate(groups.items()):
        ax = fig.add_subplot(rows, cols, idx + 1)
        for k in keys:
            pts = series[k]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3,
                    label=k.replace("$", r"\$"))
        ax.set_title(name, parse_math=False)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if name == "learning rate" and all(p[1] > 0 for k in keys for p in series[k]):
            ax.set_yscale("log")
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _to_hwc(img: np.ndarray) -> np.ndarray:
    """One image as uint8 HxWx3 (or HxW), accepting CHW or HWC, uint8 or 0-1 floats."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3):  # the documented layout is CHW
        img = img.transpose(1, 2, 0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.dtype != np.uint8:
        img = img.astype(np.float64)
        if img.size and img.max() <= 1.0:
            img = img * 255.0
        img = np.clip(img, 0, 255).astype(np.uint8)
    return img


def worst_errors(examples: dict, classes: list[str], limit: int = MAX_ERRORS) -> list[dict]:
    """Misclassified examples, most confidently wrong first, as dicts ready for captions."""
    logits = to_numpy(examples["logits"]).astype(np.float64)
    targets = to_numpy(examples["targets"]).astype(np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] == 0:
        return []
    probs = softmax(logits)
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != targets)
    conf = probs[wrong, preds[wrong]]
    order = wrong[np.argsort(-conf, kind="stable")][:limit]
    paths = list(examples.get("paths") or [])
    texts = list(examples.get("texts") or [])
    images = examples.get("images")
    images = None if images is None else to_numpy(images)

    def name(i: int) -> str:
        return str(classes[i]) if 0 <= i < len(classes) else str(i)

    return [{
        "index": int(i),
        "true": name(int(targets[i])),
        "pred": name(int(preds[i])),
        "prob": float(probs[i, preds[i]]),
        "path": str(paths[i]) if i < len(paths) else "",
        "text": str(texts[i]) if i < len(texts) else None,
        "image": _to_hwc(images[i]) if images is not None else None,
    } for i in order]


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_worst_errors(errors: list[dict], path: Path) -> Path:
    """Grid of misclassified images captioned with true/predicted label, probability, file."""
    cols = min(GRID_COLS, len(errors))
    rows = math.ceil(len(errors) / cols)
    fig = _new_figure(2.3 * cols, 2.75 * rows)
    for k, e in enumerate(errors):
        ax = fig.add_subplot(rows, cols, k + 1)
        if e["image"] is not None:
            ax.imshow(e["image"], interpolation="nearest", cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        caption = (f"true: {_short(e['true'], 18)}\npred: {_short(e['pred'], 18)} "
                   f"({e['prob']:.2f})\n{_short(Path(e['path']).name, 24)}")
        ax.set_title(caption, fontsize=7.5, loc="left", parse_math=False)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f6f8;
color:#1f2328}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:1.6em}h2{margin:0 0 12px;font-size:1.15em}
.sub{color:#656d76;margin-bottom:20px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;
margin-bottom:20px}
.card{background:#fff;border-radius:10px;padding:14px 16px;box-shadow:0 1px 3px #0002}
.card .v{font-size:1.7em;font-weight:600}.card .k{color:#656d76;font-size:.85em}
.card .s{color:#8c959f;font-size:.75em}
section{background:#fff;border-radius:10px;padding:16px 20px;margin-bottom:20px;
box-shadow:0 1px 3px #0002;overflow-x:auto}
img.plot{max-width:100%;height:auto}img.wide{max-width:none}
table{border-collapse:collapse;font-size:.9em}
th,td{padding:4px 10px;text-align:right;border-bottom:1px solid #eaeef2}
th{background:#f6f8fa}td.l,th.l{text-align:left}
.bar{display:inline-block;width:90px;height:9px;background:#eaeef2;border-radius:4px;
margin-right:6px;vertical-align:middle}
.bar i{display:block;height:100%;border-radius:4px;background:#2f81f7}
.tiles{display:flex;flex-wrap:wrap;gap:10px}
.tile{width:132px;font-size:.75em;line-height:1.35;word-break:break-all}
.tile img{width:128px;height:auto;image-rendering:pixelated;border:2px solid #cf222e;
border-radius:4px;display:block}
.tile .p{color:#cf222e}.muted{color:#8c959f}
pre{background:#f6f8fa;padding:12px;border-radius:6px;overflow-x:auto;font-size:.85em}
summary{cursor:pointer;font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _array_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    from matplotlib.image import imsave

    imsave(buf, img, format="png", cmap="gray" if img.ndim == 2 else None)
    return buf.getvalue()


def _pct(v: Any) -> str:
    return "—" if not isinstance(v, (int, float, np.number)) else f"{100 * float(v):.1f}%"


def _num(v: Any, fmt: str = ".3f") -> str:
    return "—" if not isinstance(v, (int, float, np.number)) else format(float(v), fmt)


def _duration(s: Any) -> str:
    if not isinstance(s, (int, float, np.number)):
        return "—"
    s = float(s)
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def _card(label: str, value: str, sub: str = "") -> str:
    sub_html = f'<div class="s">{_e(sub)}</div>' if sub else ""
    return (f'<div class="card"><div class="k">{_e(label)}</div>'
            f'<div class="v">{_e(value)}</div>{sub_html}</div>')


def _run_cards(report: dict) -> list[str]:
    """Cards every kind of run has: best epoch, wall time, skipped files."""
    epochs = report.get("epochs_run")
    best = report.get("best_epoch")
    best_txt = "—" if best is None else (f"{best} / {epochs}" if epochs is not None else str(best))
    skipped = (report.get("data") or {}).get("skipped")
    return [_card("Best epoch", best_txt, str(report.get("stopped_because") or "")),
            _card("Wall time", _duration(report.get("wall_s"))),
            _card("Skipped files", "—" if skipped is None else str(len(skipped)))]


def _cards(report: dict) -> str:
    test, val = report.get("test") or {}, report.get("val") or {}
    f1_split = "test" if "macro_f1" in test else "val"
    f1 = test.get("macro_f1", val.get("macro_f1"))
    return '<div class="cards">' + "".join([
        _card("Test accuracy", _pct(test.get("accuracy")),
              f"top-5 {_pct(test['top5_accuracy'])}" if "top5_accuracy" in test else ""),
        _card("Val accuracy", _pct(val.get("accuracy")),
              f"top-5 {_pct(val['top5_accuracy'])}" if "top5_accuracy" in val else ""),
        _card("Macro F1", _num(f1), f1_split if f1 is not None else ""),
        *_run_cards(report),
    ]) + "</div>"


def _splits_table(report: dict) -> str:
    rows = []
    for split in ("val", "test"):
        m = report.get(split)
        if m:
            rows.append(f'<tr><td class="l">{split}</td><td>{_e(m.get("n", "—"))}</td>'
                        f'<td>{_pct(m.get("accuracy"))}</td><td>{_pct(m.get("top5_accuracy"))}</td>'
                        f'<td>{_num(m.get("macro_f1"))}</td><td>{_num(m.get("loss"), ".4f")}</td></tr>')
    if not rows:
        return ""
    return ('<table><tr><th class="l">split</th><th>n</th><th>accuracy</th><th>top-5</th>'
            '<th>macro F1</th><th>loss</th></tr>' + "".join(rows) + "</table>")


def _per_class_table(per_class: dict) -> str:
    rows = []
    for name, m in per_class.items():
        f1 = float(m.get("f1", 0.0))
        rows.append(
            f'<tr><td class="l">{_e(name)}</td><td>{_num(m.get("precision"))}</td>'
            f'<td>{_num(m.get("recall"))}</td>'
            f'<td class="l"><span class="bar"><i style="width:{100 * f1:.1f}%"></i></span>'
            f'{_num(f1)}</td><td>{_e(m.get("support", "—"))}</td></tr>')
    return ('<table><tr><th class="l">class</th><th>precision</th><th>recall</th>'
            '<th class="l">F1</th><th>support</th></tr>' + "".join(rows) + "</table>")


def _text_rows(errors: list[dict]) -> str:
    """Misclassified texts (or sequences) as a table: where, true, predicted, the text."""
    rows = "".join(f'<tr><td class="l muted">{_e(e["path"])}</td><td class="l">{_e(e["true"])}</td>'
                   f'<td class="l p">{_e(e["pred"])} ({e["prob"]:.2f})</td><td class="l">{_e(_short(e["text"], 400))}</td></tr>'
                   for e in errors)
    return ('<table><tr><th class="l">where</th><th class="l">true</th><th class="l">predicted</th>'
            f'<th class="l">text</th></tr>{rows}</table>')


def _tiles(errors: list[dict]) -> str:
    if errors and errors[0].get("image") is None and errors[0].get("text") is not None:
        return _text_rows(errors)
    tiles = []
    for e in errors:
        alt = f'true {e["true"]}, predicted {e["pred"]}'
        img = (f'<img src="{_png_uri(_array_png(e["image"]))}" alt="{_e(alt)}">'
               if e["image"] is not None else "")
        tiles.append(
            f'<div class="tile">{img}<div>true: <b>{_e(e["true"])}</b></div>'
            f'<div class="p">pred: <b>{_e(e["pred"])}</b> ({e["prob"]:.2f})</div>'
            f'<div class="muted" title="{_e(e["path"])}">{_e(Path(e["path"]).name)}</div></div>')
    return '<div class="tiles">' + "".join(tiles) + "</div>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _img(path: Path, alt: str, css: str = "plot") -> str:
    return f'<img class="{css}" src="{_png_uri(path.read_bytes())}" alt="{_e(alt)}">'


# The helpers a section registered elsewhere (tasks/search, tasks/auto) builds its HTML and plots with.
escape, section, image, card, duration, new_figure, save_figure = _e, _section, _img, _card, _duration, _new_figure, _save


# ---------------------------------------------------------------- sections
#
# report.html is made of sections. A section says whether it applies to a report dict and
# renders its HTML (cards, tables, plots); each kind of run writes the keys its sections read:
# classification (val/test with accuracy), regression (val/test with rmse/mae), retrieval
# (`report["retrieval"]`, tasks/align/workflow.py) and probe (`report["probe"]` and
# `report["heldout"]`, tasks/pretrain). A new kind of report registers its own section.


@dataclass
class Page:
    """What sections render from, and where their plots go (plots/KEY.png, listed in
    `write_report`'s result under KEY)."""
    report: dict
    history: list[dict] | None = None
    examples: dict | None = None
    plots_dir: Path = Path("plots")
    written: dict[str, Path] = field(default_factory=dict)

    def plot(self, key: str, draw: Callable[[Path], Path]) -> Path:
        """Draw one PNG: `draw` gets the path to save to."""
        self.written[key] = draw(self.plots_dir / f"{key}.png")
        return self.written[key]


@dataclass(frozen=True)
class Section:
    name: str
    applies: Callable[[dict], bool]
    render: Callable[[Page], str]
    order: int


SECTIONS: dict[str, Section] = {}


def register_section(name: str, applies: Callable[[dict], bool], order: int = 50) -> Callable:
    """Decorator for a function Page -> HTML (one or more <section>s or card rows):
    `@register_section("regression", applies=lambda report: ...)`. Sections that apply are
    rendered by `order` (kinds' metrics 10, learning curves 60, skipped files 80, config 90),
    then in registration order."""
    def deco(render: Callable[[Page], str]) -> Callable[[Page], str]:
        if name in SECTIONS:
            raise ValueError(f"report section {name!r} registered twice")
        SECTIONS[name] = Section(name, applies, render, order)
        return render
    return deco


def _splits(report: dict, *keys: str) -> list[str]:
    """The splits (val, test) whose metrics hold any of `keys`."""
    return [s for s in ("val", "test") if isinstance(report.get(s), dict) and any(k in report[s] for k in keys)]


def _sig(v: Any) -> str:
    """A metric in the data's own units: 4 significant digits, large values without an exponent."""
    if not isinstance(v, (int, float, np.number)) or not math.isfinite(float(v)):
        return "—"
    v = float(v)
    return f"{v:,.1f}" if abs(v) >= 1e4 else f"{v:.4g}"


# --- classification

@register_section("warnings", lambda report: bool(report.get("warnings")), order=1)
def _warnings(page: Page) -> str:
    """What the run warned about on the console (core/run.py `Run.warn`), first: a result read
    without them (a tiny validation set, a too short semi-supervised fit) misleads."""
    items = "".join(f"<li>{_e(w)}</li>" for w in page.report["warnings"])
    return ('<section style="border-left:4px solid #d97706;padding-left:.8em">'
            f"<h2>Warnings ({len(page.report['warnings'])})</h2><ul>{items}</ul></section>")


def _classification_applies(report: dict) -> bool:
    return bool(_splits(report, "accuracy"))


@register_section("classification", _classification_applies, order=10)
def _classification(page: Page) -> str:
    """Today's cards, the metrics table, the confusion matrix and per-class table (test, else
    val) and the most confident mistakes."""
    report = page.report
    classes = [str(c) for c in report.get("classes") or []]
    parts = [_cards(report)]
    splits = _splits_table(report)
    if splits:
        parts.append(_section("Metrics", splits))
    cm_split = next((s for s in ("test", "val") if isinstance(report.get(s), dict) and report[s]), None)
    if cm_split and report[cm_split].get("confusion_matrix"):
        cm = report[cm_split]["confusion_matrix"]
        names = classes if len(classes) == len(cm) else list(report[cm_split].get("per_class", {}))
        if len(names) != len(cm):
            names = [str(i) for i in range(len(cm))]
        path = page.plot("confusion_matrix", lambda p: plot_confusion_matrix(
            cm, names, p, title=f"Confusion matrix ({cm_split})"))
        # shrunk to the page width, a big matrix's tick labels become unreadable: let it
        # keep its natural size and scroll sideways instead
        parts.append(_section(f"Confusion matrix ({cm_split}, row-normalised)",
                              _img(path, "confusion matrix", "plot wide" if len(cm) > 30 else "plot")))
    if cm_split and report[cm_split].get("per_class"):
        parts.append(_section(f"Per-class metrics ({cm_split})", _per_class_table(report[cm_split]["per_class"])))
    examples = page.examples
    errors = worst_errors(examples, classes) if examples and "logits" in examples else []
    if errors and errors[0].get("image") is not None:
        page.plot("worst_errors", lambda p: plot_worst_errors(errors, p))
    if errors:
        parts.append(_section(f"Most confident mistakes (top {len(errors)})", _tiles(errors)))
    return "".join(parts)


# --- the baseline (core/baseline.py)

def _baseline_row(name: str, scores: dict, seconds: Any, metric: str | None) -> str:
    if metric == "micro_f1":
        cells = "".join(f"<td>{_num((scores.get(s) or {}).get('micro_f1'))}</td><td>{_num((scores.get(s) or {}).get('macro_f1'))}</td>"
                        for s in ("val", "test"))
        n = "/".join(str((scores.get(s) or {}).get("n", "—")) for s in ("val", "test"))
        return f'<tr><td class="l">{_e(name)}</td>{cells}<td>{_e(n)}</td><td>{_duration(seconds)}</td></tr>'
    cells = "".join(f"<td>{_pct((scores.get(s) or {}).get('accuracy'))}</td><td>{_num((scores.get(s) or {}).get('macro_f1'))}</td>"
                    if metric != "rmse" else
                    f"<td>{_sig((scores.get(s) or {}).get('rmse'))}</td><td>{_sig((scores.get(s) or {}).get('mae'))}</td>"
                    for s in ("val", "test"))
    n = "/".join(str((scores.get(s) or {}).get("n", "—")) for s in ("val", "test"))
    return f'<tr><td class="l">{_e(name)}</td>{cells}<td>{_e(n)}</td><td>{_duration(seconds)}</td></tr>'


@register_section("baseline", lambda report: isinstance(report.get("baseline"), dict), order=12)
def _baseline(page: Page) -> str:
    """The model against the classic baseline trained on the same split (report["baseline"]):
    validation and test side by side, the time each took, and who wins on validation in words."""
    report, b = page.report, page.report["baseline"]
    if b.get("skipped"):
        return _section("Model vs baseline", f'<p class="muted">No baseline: {_e(b["skipped"])}</p>')
    metric = b.get("metric")
    a, f = ("RMSE", "MAE") if metric == "rmse" else ("micro F1", "macro F1") if metric == "micro_f1" else ("accuracy", "macro F1")
    wall, spent = report.get("wall_s"), b.get("seconds") or 0.0
    model_s = wall - spent if isinstance(wall, (int, float)) else None  # the run's time less the baseline's
    head = "".join(f"<th>{s} {a}</th><th>{s} {f}</th>" for s in ("val", "test"))
    table = (f'<table><tr><th class="l"></th>{head}<th>n (val/test)</th><th>time</th></tr>'
             + _baseline_row(f"this model ({report.get('model')})", b.get("model") or {}, model_s, metric)
             + _baseline_row(f"baseline: {b.get('description')}", b, b.get("seconds"), metric) + "</table>")
    won = b.get("winner_on_val") == "baseline" and not b.get("same_kind")
    style = ' style="color:#cf222e;font-weight:600"' if won else ""
    note = f'<p class="muted">{_e(b["note"])}</p>' if b.get("note") else ""
    return _section("Model vs baseline", f"<p{style}>{_e(b.get('message', ''))}</p>{table}{note}")


# --- the decision threshold of a binary classifier (core/decision.py, --target-recall)

@register_section("decision", lambda report: isinstance(report.get("decision"), dict), order=11)
def _decision(page: Page) -> str:
    """The threshold chosen on validation for a stated recall, and what it gives on each split."""
    d = page.report["decision"]
    rows = "".join(f'<tr><td class="l">{s}</td><td>{_pct(d[s]["sensitivity"])}</td><td>{_pct(d[s]["specificity"])}</td>'
                   f'<td>{_pct(d[s]["precision"])}</td><td>{_pct(d[s]["accuracy"])}</td><td>{d[s]["n"]}</td></tr>'
                   for s in ("val", "test") if isinstance(d.get(s), dict))
    table = ('<table><tr><th class="l">split</th><th>sensitivity</th><th>specificity</th><th>precision</th>'
             f"<th>accuracy</th><th>n</th></tr>{rows}</table>")
    text = (f"<p>{_e(d['class'])} when its probability is at least {d['threshold']:.4f}: the highest threshold whose "
            f"recall on validation is at least {_pct(d['target_recall'])} (chosen on {_e(d.get('chosen_on', 'val'))}; "
            "predict, batch and serve use it).</p>")
    return _section(f"Decision threshold for {_e(d['class'])}", text + table)


# --- regression

def plot_predicted_vs_true(predictions: Any, targets: Any, path: Path, title: str = "Predicted vs true") -> Path:
    """Scatter of predictions against targets with the y = x line a perfect model lies on."""
    pred = to_numpy(predictions).astype(np.float64).reshape(-1)
    true = to_numpy(targets).astype(np.float64).reshape(-1)
    fig = _new_figure(5.2, 5.0)
    ax = fig.add_subplot()
    ax.scatter(true, pred, s=8, alpha=0.5, edgecolors="none")
    both = np.concatenate([pred, true])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], color="#cf222e", lw=1, label="y = x")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title, parse_math=False)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _regression_applies(report: dict) -> bool:
    return bool(_splits(report, "rmse", "mae"))


@register_section("regression", _regression_applies, order=10)
def _regression(page: Page) -> str:
    """RMSE, MAE (and R² when the metrics hold it) per split; predicted vs true when the
    examples carry predictions and targets."""
    report = page.report
    splits = _splits(report, "rmse", "mae")
    head = "test" if "test" in splits else splits[-1]
    m = report[head]
    cards = [_card(f"{head.capitalize()} RMSE", _sig(m.get("rmse")), f"n = {m['n']}" if "n" in m else ""),
             _card(f"{head.capitalize()} MAE", _sig(m.get("mae")))]
    if "r2" in m:
        cards.append(_card(f"{head.capitalize()} R²", _num(m["r2"])))
    if head == "test" and "val" in splits:
        cards.append(_card("Val RMSE", _sig(report["val"].get("rmse"))))
    parts = ['<div class="cards">' + "".join(cards + _run_cards(report)) + "</div>"]
    r2 = any("r2" in report[s] for s in splits)
    rows = "".join(f'<tr><td class="l">{s}</td><td>{_e(report[s].get("n", "—"))}</td><td>{_sig(report[s].get("rmse"))}</td>'
                   f'<td>{_sig(report[s].get("mae"))}</td>' + (f'<td>{_num(report[s].get("r2"))}</td>' if r2 else "")
                   + f'<td>{_num(report[s].get("loss"), ".4f")}</td></tr>' for s in splits)
    parts.append(_section("Metrics", '<table><tr><th class="l">split</th><th>n</th><th>RMSE</th><th>MAE</th>'
                                     + ("<th>R²</th>" if r2 else "") + f"<th>loss</th></tr>{rows}</table>"))
    ex = page.examples
    if ex and ex.get("predictions") is not None and ex.get("targets") is not None:
        which = ex.get("split", head)
        path = page.plot("predicted_vs_true", lambda p: plot_predicted_vs_true(
            ex["predictions"], ex["targets"], p, f"Predicted vs true ({which})"))
        parts.append(_section(f"Predicted vs true ({which})", _img(path, "predicted vs true")))
    return "".join(parts)


def _references_apply(report: dict) -> bool:
    return bool(_splits(report, "rmse")) and bool((report.get("forecast") or {}).get("baselines") or report.get("mean_predictor"))


@register_section("references", _references_apply, order=11)
def _references(page: Page) -> str:
    """A regression's model beside the forecasts that need no model: the mean predictor, and for
    a forecast the naive (last value), seasonal-naive and ridge forecasts, with MASE (< 1: better
    than the naive forecast on the training period's scale)."""
    report = page.report
    refs = dict((report.get("forecast") or {}).get("baselines") or {})
    if report.get("mean_predictor"):
        refs["mean"] = report["mean_predictor"]
    rows_of = {"model": {s: report[s] for s in _splits(report, "rmse")}, **refs}
    mase = any("mase" in (m.get(s) or {}) for m in rows_of.values() for s in ("val", "test"))
    rows = []
    for split in ("val", "test"):
        for name, m in rows_of.items():
            sc = m.get(split)
            if not isinstance(sc, dict):
                continue
            rows.append(f'<tr><td class="l">{split}</td><td class="l">{_e(name.replace("_", "-"))}</td><td>{_sig(sc.get("rmse"))}</td>'
                        f'<td>{_sig(sc.get("mae"))}</td><td>{_num(sc.get("r2"))}</td>'
                        + (f'<td>{_num(sc.get("mase"))}</td>' if mase else "") + "</tr>")
    f = report.get("forecast") or {}
    what = (f'<p class="muted">forecast {_e(f.get("horizon"))} row(s) ahead of the last {_e(f.get("window"))}; the naive '
            f'forecast is the last value, the seasonal-naive one the value {_e(f.get("season"))} rows before the target; '
            f'MASE = MAE / the naive forecast\'s MAE on train ({_sig(f.get("mase_scale"))}).</p>') if f else ""
    return _section("Model vs references", what + '<table><tr><th class="l">split</th><th class="l">forecast</th><th>RMSE</th>'
                    f'<th>MAE</th><th>R²</th>{"<th>MASE</th>" if mase else ""}</tr>{"".join(rows)}</table>')
# --- multi-label (fit --multi-label)

def _multilabel_applies(report: dict) -> bool:
    return bool(_splits(report, "micro_f1"))


@register_section("multilabel", _multilabel_applies, order=10)
def _multilabel(page: Page) -> str:
    """Micro/macro F1, mAP and subset accuracy per split, and each label's precision, recall,
    F1, average precision and validation-tuned threshold (test, else val)."""
    report = page.report
    splits = _splits(report, "micro_f1")
    head = "test" if "test" in splits else splits[-1]
    m = report[head]
    cards = [_card(f"{head.capitalize()} micro-F1", _num(m.get("micro_f1")), f"n = {m.get('n', '—')}"),
             _card(f"{head.capitalize()} macro-F1", _num(m.get("macro_f1"))),
             _card(f"{head.capitalize()} mAP", _num(m.get("mAP"))),
             _card("Subset accuracy", _pct(m.get("subset_accuracy")), "every label right")]
    parts = ['<div class="cards">' + "".join(cards + _run_cards(report)) + "</div>"]
    rows = "".join(f'<tr><td class="l">{s}</td><td>{_e(report[s].get("n", "—"))}</td><td>{_num(report[s].get("micro_f1"))}</td>'
                   f'<td>{_num(report[s].get("macro_f1"))}</td><td>{_num(report[s].get("mAP"))}</td>'
                   f'<td>{_pct(report[s].get("subset_accuracy"))}</td><td>{_num(report[s].get("labels_per_row"), ".2f")}</td>'
                   f'<td>{_num(report[s].get("predicted_per_row"), ".2f")}</td><td>{_num(report[s].get("loss"), ".4f")}</td></tr>'
                   for s in splits)
    parts.append(_section("Metrics", '<table><tr><th class="l">split</th><th>n</th><th>micro-F1</th><th>macro-F1</th>'
                                     '<th>mAP</th><th>subset accuracy</th><th>labels/row</th><th>predicted/row</th>'
                                     f'<th>loss</th></tr>{rows}</table>'
                                     '<p class="muted">Each label is decided by its own threshold, chosen to maximise '
                                     'its F1 on the validation split only.</p>'))
    per = m.get("per_label") or {}
    if per:
        body = "".join(
            f'<tr><td class="l">{_e(name)}</td><td>{_num(v.get("precision"))}</td><td>{_num(v.get("recall"))}</td>'
            f'<td class="l"><span class="bar"><i style="width:{100 * float(v.get("f1") or 0):.1f}%"></i></span>'
            f'{_num(v.get("f1"))}</td><td>{_num(v.get("ap"))}</td><td>{_num(v.get("threshold"), ".2f")}</td>'
            f'<td>{_e(v.get("support", "—"))}</td></tr>' for name, v in per.items())
        parts.append(_section(f"Per-label metrics ({head})", '<table><tr><th class="l">label</th><th>precision</th>'
                              '<th>recall</th><th class="l">F1</th><th>AP</th><th>threshold</th><th>support</th></tr>'
                              + body + "</table>"))
    return "".join(parts)


def print_multilabel_summary(report: dict, console) -> None:
    """The console table of a multi-label report (print_summary's, for micro/macro-F1 and mAP)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Evaluation{' — ' + str(report['model']) if report.get('model') else ''} (multi-label)")
    for col in ("split", "n", "micro-F1", "macro-F1", "mAP", "subset acc.", "loss"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split in _splits(report, "micro_f1"):
        m = report[split]
        table.add_row(split, str(m.get("n", "—")), _num(m.get("micro_f1")), _num(m.get("macro_f1")), _num(m.get("mAP")),
                      _pct(m.get("subset_accuracy")), _num(m.get("loss"), ".4f"))
    console.print(table)
    per = (report.get("test") or {}).get("per_label") or {}
    if per and len(per) <= 20:
        pl = Table(title="Per-label (test)")
        for col in ("label", "precision", "recall", "F1", "AP", "threshold", "support"):
            pl.add_column(col, justify="left" if col == "label" else "right")
        for name, v in per.items():
            pl.add_row(escape(str(name)), _num(v.get("precision")), _num(v.get("recall")), _num(v.get("f1")),
                       _num(v.get("ap")), _num(v.get("threshold"), ".2f"), str(v.get("support", "—")))
        console.print(pl)


# --- retrieval (align)

DIRECTIONS = {"text_to_image": "text → image", "image_to_text": "image → text"}


def _retrieval_applies(report: dict) -> bool:
    return isinstance(report.get("retrieval"), dict) and bool(report["retrieval"])


@register_section("retrieval", _retrieval_applies, order=10)
def _retrieval(page: Page) -> str:
    """Recall@1/5/10 per split and direction, with the median rank and what a random ranking
    would get (`report["retrieval"][split][direction]`, as tasks/align/workflow.py writes it)."""
    report = page.report
    retrieval = report["retrieval"]
    head = "test" if "test" in retrieval else next(iter(retrieval))
    cards = [_card(f"{head.capitalize()} {label} R@{k}", _pct((retrieval[head].get(d) or {}).get(f"R@{k}")),
                   f"random {_pct(retrieval[head].get('chance', {}).get(d, {}).get(f'R@{k}'))}"
                   if retrieval[head].get("chance") else "")
             for d, label in DIRECTIONS.items() for k in (1, 5)]
    if isinstance(report.get("temperature"), (int, float)):
        cards.append(_card("Temperature", _num(report["temperature"], ".4f"), "learned"))
    ks = sorted({int(k[2:]) for m in retrieval.values() for d in DIRECTIONS for k in (m.get(d) or {})
                 if k.startswith("R@") and k[2:].isdigit()})
    rows = []
    for split, m in retrieval.items():
        for d, label in DIRECTIONS.items():
            r = m.get(d)
            if not r:
                continue
            chance = m.get("chance", {}).get(d, {})
            rows.append(f'<tr><td class="l">{_e(split)}</td><td class="l">{label}</td>'
                        f'<td>{_e(m.get("n_images", "—"))}</td><td>{_e(m.get("n_texts", "—"))}</td>'
                        + "".join(f'<td>{_pct(r.get(f"R@{k}"))}</td>' for k in ks)
                        + f'<td>{_num(r.get("median_rank"), ".1f")}</td><td class="muted">{_pct(chance.get("R@5"))}</td></tr>')
    table = ('<table><tr><th class="l">split</th><th class="l">direction</th><th>images</th><th>texts</th>'
             + "".join(f"<th>R@{k}</th>" for k in ks) + "<th>median rank</th><th>random R@5</th></tr>"
             + "".join(rows) + "</table>")
    return ('<div class="cards">' + "".join(cards + _run_cards(report)) + "</div>"
            + _section("Retrieval (Recall@k)", table))


# --- probe (pretrain)

def plot_probe(epochs: list[float], accuracy: list[float | None], heldout: list[float | None], path: Path,
               probe_label: str = "probe accuracy") -> Path:
    """The probe's accuracy and the held-out masked-token loss against epochs (0: before training)."""
    panels = [(probe_label, accuracy), ("held-out MLM loss", heldout)]
    panels = [(t, ys) for t, ys in panels if any(y is not None for y in ys)]
    fig = _new_figure(4.6 * max(1, len(panels)), 3.4)
    for i, (title, ys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        pts = [(x, y) for x, y in zip(epochs, ys) if y is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3)
        ax.set_title(title, parse_math=False)
        ax.set_xlabel("epoch (0: before training)")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _save(fig, path)


def _probe_applies(report: dict) -> bool:
    return bool(report.get("probe") or report.get("heldout"))


@register_section("probe", _probe_applies, order=10)
def _probe(page: Page) -> str:
    """Pretraining: the probe's accuracy before, after and per epoch (`report["probe"]`), and the
    held-out masked-token loss and perplexity before/after (`report["heldout"]`, MLM)."""
    report = page.report
    probe, held = report.get("probe") or {}, report.get("heldout") or {}
    kind = probe.get("kind") or (f"kNN, k = {probe['knn_k']}" if "knn_k" in probe else "kNN")
    cards = []
    if probe:
        cards += [_card("Probe before", _pct(probe.get("before")), kind),
                  _card("Probe after", _pct(probe.get("after")), kind)]
    if held:
        cards += [_card("Held-out MLM loss before", _num(held.get("loss_before"), ".4f"),
                        f"perplexity {_num(held.get('perplexity_before'), '.2f')}"),
                  _card("Held-out MLM loss after", _num(held.get("loss_after"), ".4f"),
                        f"perplexity {_num(held.get('perplexity_after'), '.2f')}")]
    parts = ['<div class="cards">' + "".join(cards + _run_cards(report)) + "</div>"]
    # per epoch: epoch 0 is the measure before training; later ones are the history's records
    hist = page.history or []
    per_epoch = list(probe.get("per_epoch") or [])
    losses = [h.get("heldout_mlm_loss") for h in hist]
    n = max(len(per_epoch), len(losses) if any(v is not None for v in losses) else 0)
    epochs = [0.0] + [float(hist[i].get("epoch", i + 1)) if i < len(hist) else float(i + 1) for i in range(n)]
    acc = [probe.get("before")] + [per_epoch[i] if i < len(per_epoch) else None for i in range(n)] if probe else []
    loss = [held.get("loss_before")] + [losses[i] if i < len(losses) else None for i in range(n)] if held else []
    if n:
        label = "probe accuracy" if not probe.get("kind") else "probe accuracy (logistic regression)"
        path = page.plot("probe", lambda p: plot_probe(epochs, acc or [None] * len(epochs),
                                                       loss or [None] * len(epochs), p, label))
        rows = "".join(f'<tr><td>{int(x)}</td>' + (f"<td>{_pct(acc[i])}</td>" if acc else "")
                       + (f'<td>{_num(loss[i], ".4f")}</td>' if loss else "") + "</tr>"
                       for i, x in enumerate(epochs))
        table = ('<table><tr><th>epoch</th>' + ("<th>probe accuracy</th>" if acc else "")
                 + ("<th>held-out MLM loss</th>" if loss else "") + f"</tr>{rows}</table>")
        parts.append(_section("Probe per epoch (0: before training)", _img(path, "probe per epoch") + table))
    facts = [("method", report.get("method")), ("start", report.get("start")),
             ("probe data", probe.get("folder") or probe.get("table")), ("probe", kind if probe else None),
             ("held-out texts", held.get("texts")), ("masked tokens", held.get("masked_tokens")),
             ("backbone", report.get("backbone"))]
    rows = "".join(f'<tr><td class="l">{_e(k)}</td><td class="l">{_e(v)}</td></tr>' for k, v in facts if v is not None)
    if rows:
        parts.append(_section("Pretraining", f"<table>{rows}</table>"))
    return "".join(parts)


# --- every report

@register_section("learning_curves", lambda report: True, order=60)
def _learning_curves(page: Page) -> str:
    if not page.history:
        return ""
    path = page.plot("learning_curves", lambda p: plot_learning_curves(page.history, p))
    return _section("Learning curves", _img(path, "learning curves"))


@register_section("skipped", lambda report: bool((report.get("data") or {}).get("skipped")), order=80)
def _skipped(page: Page) -> str:
    skipped = page.report["data"]["skipped"]
    rows = "".join(f'<tr><td class="l">{_e(s.get("path", ""))}</td>'
                   f'<td class="l">{_e(s.get("reason", ""))}</td></tr>'
                   if isinstance(s, dict) else f'<tr><td class="l" colspan="2">{_e(s)}</td></tr>'
                   for s in skipped)
    return _section(f"Skipped files ({len(skipped)})",
                    f'<table><tr><th class="l">path</th><th class="l">reason</th></tr>{rows}</table>')


def _duplicates_apply(report: dict) -> bool:
    d = (report.get("data") or {}).get("duplicates") or {}
    return any(isinstance(v, dict) and v.get("count") for v in d.values())


@register_section("duplicates", _duplicates_apply, order=81)
def _duplicates(page: Page) -> str:
    """Identical files (or texts) across splits or classes (core/data/duplicates.py)."""
    d = page.report["data"]["duplicates"]
    titles = {"across_splits": "in more than one split (leaks into validation/test scores)",
              "across_classes": "under more than one class (contradictory labels)"}
    rows = "".join(f'<tr><td class="l">{_e(titles.get(k, k))}</td><td>{int(v.get("count", 0))}</td>'
                   f'<td class="l">{_e(", ".join(f"{p}: {n}" for p, n in (v.get("pairs") or {}).items()))}</td>'
                   f'<td class="l">{"<br>".join(_e(" = ".join(map(str, e))) for e in v.get("examples") or [])}</td></tr>'
                   for k, v in d.items() if isinstance(v, dict) and v.get("count"))
    return _section("Duplicates", '<table><tr><th class="l">identical contents</th><th>groups</th>'
                    f'<th class="l">by pair</th><th class="l">examples (up to 10)</th></tr>{rows}</table>')


@register_section("config", lambda report: "config" in report, order=90)
def _config(page: Page) -> str:
    cfg = json.dumps(_jsonable(page.report["config"]), indent=2, default=_json_default)
    return f"<section><details><summary>Resolved config</summary><pre>{_e(cfg)}</pre></details></section>"


def _subtitle(report: dict) -> str:
    data = report.get("data") or {}
    sub = [f"{data[k]} {k}" for k in ("train", "val", "test", "unlabeled", "texts", "rows")
           if isinstance(data.get(k), int) and not isinstance(data.get(k), bool)]
    if isinstance(data.get("images"), dict):  # align: images per split
        sub += [f"{n} {s} images" for s, n in data["images"].items() if isinstance(n, int)]
    if report.get("classes"):
        sub.insert(0, f"{len(report['classes'])} classes")
    if report.get("kind") == "pretrain" and report.get("method"):
        sub.insert(0, f"{report['method']} pretraining")
    if report.get("epochs_run") is not None:
        sub.append(f"{report['epochs_run']} epochs")
    if report.get("stopped_because"):
        sub.append(f"stopped: {report['stopped_because']}")
    return " · ".join(sub)


def render_html(page: Page) -> str:
    """The whole report as one HTML string with every image inlined as a data URI: a title
    and the sections that apply, in order."""
    report = page.report
    model = report.get("model")
    title = f"tuneforge report — {model}" if model else "tuneforge report"
    parts = [f"<h1>{_e(title)}</h1>", f'<div class="sub">{_e(_subtitle(report))}</div>']
    for section in sorted(SECTIONS.values(), key=lambda s: s.order):  # stable: registration order within an order
        if section.applies(report):
            parts.append(section.render(page))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


# ---------------------------------------------------------------- entry points


def write_report(run_dir: Path, report: dict, history: list[dict] | None = None,
                 examples: dict | None = None) -> dict[str, Path]:
    """Write report.json, plots/*.png and report.html into `run_dir`; return what was written.

    The sections that apply to `report` draw its plots (classification: confusion matrix and
    per-class table of the test split when present, else val). `examples` feed the
    worst-errors grid (images, logits, targets, paths) or, for regression, the predicted-vs-true
    plot (predictions, targets, optionally split). `report` is not modified; callers wanting
    `print_summary` to show the HTML path set `html_path` themselves. report.json also gets an
    `environment` block (`environment()`: versions, CPU, threads) unless `report` brings one.
    """
    run_dir = Path(run_dir)
    with storage_errors(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    json_path = run_dir / "report.json"
    report = {**report, "environment": report.get("environment") or environment()}
    _write_atomic(json_path, json.dumps(_jsonable(report), indent=2, default=_json_default,
                                        allow_nan=False) + "\n")
    written["json"] = json_path

    page = Page(report, history, examples, run_dir / "plots")
    html_text = render_html(page)
    written.update(page.written)
    html_path = run_dir / "report.html"
    _write_atomic(html_path, html_text)
    written["html"] = html_path
    return written


def print_summary(report: dict, console=None) -> None:
    """Print val/test headline metrics, the per-class table for test (<= 20 classes) and
    the report.html path when `report["html_path"]` is set."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    if _multilabel_applies(report):
        print_multilabel_summary(report, console)
        _summary_tail(report, console)
        return
    table = Table(title=f"Evaluation{' — ' + str(report['model']) if report.get('model') else ''}")
    regression = _regression_applies(report) and not _classification_applies(report)
    columns = ("split", "n", "RMSE", "MAE", "loss") if regression else ("split", "n", "accuracy", "top-5", "macro F1", "loss")
    for col in columns:
        table.add_column(col, justify="left" if col == "split" else "right")
    for split in ("val", "test"):
        m = report.get(split)
        if m and regression:
            table.add_row(split, str(m.get("n", "—")), _sig(m.get("rmse")), _sig(m.get("mae")), _num(m.get("loss"), ".4f"))
        elif m:
            table.add_row(split, str(m.get("n", "—")), _pct(m.get("accuracy")),
                          _pct(m.get("top5_accuracy")), _num(m.get("macro_f1")),
                          _num(m.get("loss"), ".4f"))
    if table.row_count:
        console.print(table)
    else:
        console.print("[yellow]No val or test metrics to show.[/yellow]")

    per_class = (report.get("test") or {}).get("per_class") or {}
    if per_class and len(per_class) <= 20:
        pc = Table(title="Per-class (test)")
        for col in ("class", "precision", "recall", "F1", "support"):
            pc.add_column(col, justify="left" if col == "class" else "right")
        for name, m in per_class.items():
            # rich treats [..] as markup; escape so class names print literally
            pc.add_row(escape(str(name)), _num(m.get("precision")), _num(m.get("recall")),
                       _num(m.get("f1")), str(m.get("support", "—")))
        console.print(pc)
    _summary_tail(report, console)


def _summary_tail(report: dict, console) -> None:
    """The baseline's line and the report's path, under every summary."""
    baseline = report.get("baseline") or {}
    if baseline.get("message") or baseline.get("skipped"):
        console.print(f"Baseline: {baseline.get('message') or 'none (' + baseline['skipped'] + ')'}",
                      style="bold yellow" if baseline.get("winner_on_val") == "baseline" else None,
                      markup=False, highlight=False)
    if report.get("html_path"):
        console.print(f"Report: {report['html_path']}", markup=False, highlight=False)
