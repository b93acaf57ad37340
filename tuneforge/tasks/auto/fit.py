"""`fit --model auto --time-budget MIN`: the kind's portfolio (portfolio.py), in order of cost,
each member an ordinary fit of another kind's plugin into RUN/members/NAME (a full run folder
with its own report), within the budget; the best on validation becomes RUN/model. On text, the
best two trained members also make an ensemble (ensemble.py, weights chosen on validation), a
leaderboard row chosen like the others.

Every member is trained on the same train/val split, written once into RUN/data (class folders
of links for images, JSONL tables for text) from the training data alone, so their validation
scores compare, and nothing about the test data (which each member only scores) can change a
split, a member's settings or the choice.

    tuneforge fit --data sst2/ --columns text,label --model auto --time-budget 15
"""
from __future__ import annotations

import html
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ... import config as cfgmod
from ...config import FitConfig
from ...core.baseline import Baseline, compare, skipped
from ...core.data.images import scan_class_folders
from ...core.data.split import stratified_split
from ...core.data.multimodal import read_image_text_table
from ...core.data.text import find_text_splits, is_table, is_text_data, read_rows
from ...core.report import Page, register_section, print_summary, write_report
from ...core.run import FitResult, Run, open_run
from ...errors import ConfigError, DataError
from ..plugins import PLUGINS, Plugin, plugin_for
from .ensemble import ensemble_row, run_module
from .portfolio import PORTFOLIOS, Member, scores

log = logging.getLogger("tuneforge")

# Seconds kept back from the members for copying the winner's bundle and writing the report.
RESERVE_S = 2.0
# Seconds a member's child process takes to start (import torch and tuneforge) on a quiet machine.
START_S = 5.0
# A carved validation split holds at most this many rows (+-1.1 points at 2,000): every member predicts
# it, and on a large training set a tenth of it would cost the budget minutes of encoder passes.
MAX_VAL = 2000
# The label rare classes are folded into on an image+text table (as the image+text fit names it).
OTHER = "other"
# The run's own settings that are not passed to its members: the split is made here, the folders are its own.
_OWN = {"data", "val", "test", "out", "overwrite", "val_fraction", "model", "time_budget", "resume"}


def fit_auto(cfg: FitConfig, run: Run) -> FitResult:
    """Train the portfolio within `cfg.time_budget` minutes and keep the best on validation."""
    if cfg.time_budget is None:
        raise ConfigError("--model auto needs --time-budget MINUTES (the time the whole run may take)")
    if cfg.resume or run.resuming:
        raise ConfigError("--resume: a --model auto run is not resumed; start it again (another --out)")
    budget_s = cfg.time_budget * 60
    kind = _kind(cfg)
    t0 = time.perf_counter()
    split = {"text": _split_text, "image": _split_images, "image+text": _split_image_text}[kind](cfg, run.dir / "data")
    log.info("auto: %s data, %d train, %d val, %d test, %d classes; budget %.1f min for %s", kind, split["train"],
             split["val"], split["test"], split["classes"], cfg.time_budget,
             ", ".join(m.name for m in PORTFOLIOS[kind]))
    factor = _load_factor()
    board: list[dict] = []
    deadline = run.t_start + budget_s - RESERVE_S
    start_s = START_S  # a member's child process importing tuneforge, before its fit starts (measured as they run)
    for member in PORTFOLIOS[kind]:
        left = budget_s - (time.perf_counter() - run.t_start) - RESERVE_S
        plan = _plan(member, split, left - start_s, factor)
        row = {"name": member.name, "model": member.settings.get("model") or member.settings.get("recipe"),
               "plan": plan.get("said"), **({"baseline": True} if member.baseline else {})}
        if plan.get("skip"):
            log.info("auto: %s not started: %s", member.name, plan["skip"])
            board.append({**row, "status": "skipped", "why": plan["skip"]})
            continue
        log.info("auto: %s: %s (estimated %.0fs of %.0fs left)", member.name, plan["said"], plan["estimate_s"], left)
        started = time.perf_counter()
        # until one member is trained it is waited for past the budget: the run always ends with a model
        trained = any(r["status"] == "trained" for r in board)
        status, result = _fit_member(cfg, run, member, split, plan["settings"], deadline if trained else None)
        took = time.perf_counter() - started
        if status != "trained":
            # one member that cannot fit this data, or is still running when the budget ends, leaves the others
            board.append({**row, "status": status, "why": result, "wall_s": round(took, 2)})
            log.warning("auto: %s %s: %s", member.name, status, result)
            continue
        fit_s = float(result.get("wall_s") or took)
        start_s = max(took - fit_s, 0.0)
        factor = min(4.0, max(0.5, fit_s / max(plan["raw_s"], 1e-6)))  # this machine now, for the next estimates
        board.append({**row, "status": "trained", "wall_s": round(took, 2), "estimate_s": round(plan["estimate_s"], 1),
                      "val": scores(result.get("val")), "test": scores(result.get("test")),
                      "model": result.get("model", row["model"]), "run": str(Path("members") / member.name)})
    if kind == "text":  # the best two on validation, weighted on validation: chosen like any member
        row = ensemble_row(run.dir, board, split, deadline - time.perf_counter())
        if row is not None:
            board.append(row)
    chosen = _choose(board)
    if chosen is None:
        raise ConfigError(f"--time-budget {cfg.time_budget}: no member of the {kind} portfolio could be trained "
                          f"({'; '.join(r['name'] + ': ' + r.get('why', r['status']) for r in board)}); "
                          f"give a larger budget")
    for row in board:
        row["chosen"] = row["name"] == chosen
    return _finish(cfg, run, kind, board, run.dir / "members" / chosen, budget_s, time.perf_counter() - t0)


def _kind(cfg: FitConfig) -> str:
    """text (a table, or a folder of train/val/test tables), image (class folders) or image+text
    (a table with --image-column and --text-column)."""
    if cfg.sequence_column or cfg.id_column:
        raise ConfigError("--model auto: portfolios exist for text tables, image class folders and image+text "
                          "tables, not for numeric sequences")
    if cfg.modalities:
        raise ConfigError("--modalities: --model auto chooses the inputs itself (a TF-IDF model of the text column, "
                          "fusion of both); give --image-column and --text-column only")
    if cfg.image_column:
        if not cfg.text_column:
            raise ConfigError("--model auto on an image+text table needs --text-column beside --image-column")
        return "image+text"
    if is_text_data(cfg.data, cfg.text_column):
        return "text"
    data = Path(cfg.data)
    if not data.exists():
        raise DataError(f"--data: no such file or folder: {data}")
    if not (data / "train").is_dir() and any(f.is_file() and not f.name.startswith(".") for f in data.iterdir()):
        find_text_splits(data)  # a folder of tables: its train file must be there (an error names the folder)
        return "text"
    return "image"


# --------------------------------------------------------------------------- one split for every member

def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _val_fraction(cfg: FitConfig, n: int) -> float:
    """--val-fraction (0.1 when 0: a choice needs a validation split), at most MAX_VAL rows."""
    return min(cfg.val_fraction or 0.1, MAX_VAL / max(n, 1))


def _split_text(cfg: FitConfig, out: Path) -> dict:
    """RUN/data/{train,val,test}.jsonl with the text and label columns: val as given, else a
    stratified, seeded slice of train; the test table copied as it is (only scored)."""
    data = Path(cfg.data)
    files = find_text_splits(data) if data.is_dir() else {"train": data}
    for name in ("val", "test"):
        if getattr(cfg, name):
            files[name] = Path(getattr(cfg, name))
    text_col, label_col = cfg.text_column or "text", cfg.label_column
    columns = [c.strip() for c in cfg.columns.split(",")] if cfg.columns else None

    def read(path: Path) -> list[dict]:
        rows, _, _ = read_rows(path, columns, cfg.encoding, cfg.skip_bad_rows, need=(text_col, label_col))
        return [{text_col: r[text_col], label_col: r[label_col]} for r in rows
                if str(r.get(label_col) or "").strip() and r.get(text_col) is not None]

    train = read(files["train"])
    if files.get("val"):
        val = read(files["val"])
    else:
        labels = np.array([str(r[label_col]) for r in train])
        tr, va = stratified_split(labels, _val_fraction(cfg, len(labels)), cfg.seed)
        train, val = [train[i] for i in tr], [train[i] for i in va]
    test = read(files["test"]) if files.get("test") else []
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in (("train", train), ("val", val), ("test", test)):
        if rows or name != "test":
            paths[name] = out / f"{name}.jsonl"
            _write_jsonl(paths[name], rows)
    return {"kind": "text", "paths": paths, "train": len(train), "val": len(val), "test": len(test),
            "classes": len({str(r[label_col]) for r in train}),
            "settings": {"text_column": text_col, "label_column": label_col, "columns": None, "encoding": "utf-8",
                         "skip_bad_rows": False}}


def _split_image_text(cfg: FitConfig, out: Path) -> dict:
    """RUN/data/{train,val,test}.jsonl with absolute image paths, the text and the label: val and test
    as given, else stratified, seeded slices of the table (test: --test-fraction, 0 = none). Classes of
    fewer than --min-class-count training rows are folded into "other" here, once, so every member
    (a text-only TF-IDF, a fusion model) scores the same validation rows."""
    img_col, text_col, label_col = cfg.image_column, cfg.text_column, cfg.label_column

    def read(path: str | Path) -> list[dict]:
        t = read_image_text_table(path, img_col, text_col, label_col, cfg.image_root, strict=cfg.strict,
                                  encoding=cfg.encoding)
        return [{img_col: str(i), text_col: x, label_col: y} for i, x, y in zip(t.images, t.texts, t.labels)]

    if cfg.data is None or not is_table(cfg.data):
        raise DataError(f"--data: no such table: {cfg.data} (an image+text table is one CSV/TSV/JSONL/Parquet file)")
    rows = read(cfg.data)
    parts = {n: read(getattr(cfg, n)) for n in ("val", "test") if getattr(cfg, n)}
    for name, fraction in (("test", cfg.test_fraction), ("val", _val_fraction(cfg, len(rows)))):
        if name not in parts and fraction > 0:
            rest, held = stratified_split(np.array([r[label_col] for r in rows]), fraction, cfg.seed + (name == "val"))
            parts[name], rows = [rows[i] for i in held], [rows[i] for i in rest]
    parts["train"] = rows
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[label_col]] = counts.get(r[label_col], 0) + 1
    rare = {c for c, k in counts.items() if k < cfg.min_class_count}
    if rare:
        log.info("auto: classes with fewer than %d training rows folded into 'other': %s", cfg.min_class_count,
                 ", ".join(sorted(rare)))
    known = {OTHER if c in rare else c for c in counts}
    out.mkdir(parents=True, exist_ok=True)
    paths, n = {}, {}
    for name in ("train", "val", "test"):
        if name not in parts:
            continue
        kept = [{**r, label_col: OTHER if r[label_col] in rare else r[label_col]} for r in parts[name]]
        kept = [r for r in kept if r[label_col] in known]
        if len(kept) < len(parts[name]):
            log.warning("auto: %d %s rows have labels the training rows lack; left out", len(parts[name]) - len(kept), name)
        paths[name], n[name] = out / f"{name}.jsonl", len(kept)
        _write_jsonl(paths[name], kept)
    return {"kind": "image+text", "paths": paths, "train": n["train"], "val": n["val"], "test": n.get("test", 0),
            "classes": len(known),
            "settings": {"image_column": img_col, "text_column": text_col, "label_column": label_col, "image_root": None,
                         "columns": None, "encoding": "utf-8", "skip_bad_rows": False, "min_class_count": 0,
                         "test_fraction": 0.0}}


def _split_images(cfg: FitConfig, out: Path) -> dict:
    """RUN/data/train and RUN/data/val as class folders of links to the images (val as given,
    else a stratified, seeded slice of train); test is the given folder, linked as it is."""
    root = Path(cfg.data)
    if not root.is_dir():
        raise DataError(f"--data: no such folder: {root}")
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir = Path(cfg.val) if cfg.val else (root / "val" if train_dir != root and (root / "val").is_dir() else None)
    test_dir = Path(cfg.test) if cfg.test else (root / "test" if train_dir != root and (root / "test").is_dir() else None)
    classes, items = scan_class_folders(train_dir)
    if val_dir is None:
        tr, va = stratified_split(np.array([label for _, label in items]), _val_fraction(cfg, len(items)), cfg.seed)
        parts = {"train": (train_dir, [items[i] for i in tr]), "val": (train_dir, [items[i] for i in va])}
    else:
        parts = {"train": (train_dir, items), "val": (val_dir, scan_class_folders(val_dir)[1])}
    counts = {}
    for name, (base, chosen) in parts.items():
        for c in classes:
            (out / name / c).mkdir(parents=True, exist_ok=True)
        for path, label in chosen:
            rel = path.relative_to(base / path.relative_to(base).parts[0])
            os.symlink(path.resolve(), out / name / classes[label] / "__".join(rel.parts))
        counts[name] = len(chosen)
    n_test = len(scan_class_folders(test_dir)[1]) if test_dir else 0
    return {"kind": "image", "paths": {"data": out, "test": test_dir}, "train": counts["train"], "val": counts["val"],
            "test": n_test, "classes": len(classes), "settings": {}}


# --------------------------------------------------------------------------- budget

def _load_factor() -> float:
    """How much slower than the cost models' quiet machine this one is likely to be now."""
    try:
        return min(4.0, max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)))
    except OSError:
        return 1.0


def _plan(member: Member, split: dict, left_s: float, factor: float) -> dict:
    """The member's settings scaled to its share of `left_s`, or why it is not started."""
    n, n_eval = split["train"], split["val"] + split["test"]
    allot = member.share * left_s
    settings = dict(member.settings)
    epochs, rows = member.epochs, n
    if member.scale == "rows":
        least = min(member.min_rows, n)
        per_row = factor * (member.pass_s + member.step_s * epochs)
        fit_rows = (allot - factor * (member.start_s + member.pass_s * n_eval)) / per_row
        rows = min(n, max(least, int(fit_rows)))
        if rows < n:
            settings["limit_per_class"] = max(1, rows // split["classes"])
    elif member.scale == "epochs":
        per_epoch = factor * member.step_s * n
        fixed = factor * (member.start_s + member.pass_s * (n + n_eval))
        epochs = max(1, min(member.max_epochs, int((allot - fixed) / max(per_epoch, 1e-9))))
        settings["epochs"] = epochs
    raw = member.seconds(rows, n_eval, epochs)
    if factor * raw > left_s and not member.baseline:  # the baseline is what every choice is compared with
        return {"skip": f"needs ~{factor * raw:.0f}s, {max(left_s, 0):.0f}s left", "said": None}
    allot = min(left_s, max(allot, factor * raw))
    if member.step_s:
        # the engine's time limit counts from the first step: what is left after loading and features
        settings["max_minutes"] = round(max(allot - factor * member.seconds(rows, n_eval, 0), 1.0) / 60, 3)
    said = f"{rows} training rows" + (f", {epochs} epoch(s)" if member.step_s else "")
    return {"settings": settings, "estimate_s": factor * raw, "raw_s": raw, "said": said}


# --------------------------------------------------------------------------- members

def _fit_member(cfg: FitConfig, run: Run, member: Member, split: dict, settings: dict,
                deadline: float | None) -> tuple[str, dict | str]:
    """One member as an ordinary fit of its plugin into RUN/members/NAME, in a child process that
    is stopped at `deadline` (perf_counter seconds; None: waited for): a fit cannot be interrupted
    mid-epoch or mid-encoding, a process can. ("trained", its report) or ("failed" | "stopped", why)."""
    try:
        mcfg, plugin = _member_settings(cfg, run, member, split, settings)
    except (ConfigError, DataError) as e:
        return "failed", str(e).splitlines()[0]
    folder, error = Path(mcfg.out), run.dir / "members" / f".{member.name}.error"
    # spawn, not fork: a process forked after torch ran parallel work (a notebook's, a test's) can hang in
    # OpenMP; a spawned child imports tuneforge again (seconds) and gets the settings pickled
    child = multiprocessing.get_context("spawn").Process(target=_member_child, args=(mcfg, plugin, error))
    child.start()
    child.join(None if deadline is None else max(deadline - time.perf_counter(), 0.0))
    if child.is_alive():
        child.terminate()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
        shutil.rmtree(folder, ignore_errors=True)
        return "stopped", "still training when the budget ran out"
    if child.exitcode != 0 or not (folder / "report.json").is_file():
        why = error.read_text(encoding="utf-8") if error.is_file() else f"exit code {child.exitcode}"
        error.unlink(missing_ok=True)
        return "failed", why
    return "trained", json.loads((folder / "report.json").read_text(encoding="utf-8"))


def _member_child(mcfg: FitConfig, plugin: Plugin, error: Path) -> None:
    """The member's fit (in the child process); why it failed, in `error`, for the parent."""
    try:
        with open_run(mcfg, None, Path(mcfg.out).name) as mrun:  # a member that fails leaves no folder
            plugin.function("fit")(mcfg, mrun)
    except Exception as e:
        error.write_text((str(e).splitlines() or [type(e).__name__])[0], encoding="utf-8")
        raise SystemExit(1) from None


def _member_settings(cfg: FitConfig, run: Run, member: Member, split: dict, settings: dict) -> tuple[FitConfig, Plugin]:
    """The member's validated settings (the user's that its plugin reads, the member's own, the
    budget's scaling, the shared split) and its plugin, resolved as api.fit would."""
    given = {k: v for k, v in cfg.explicit().items() if k not in _OWN and k in PLUGINS["auto"].reads(FitConfig)}
    paths = split["paths"]
    where = ({"data": str(paths["train"]), "val": str(paths["val"]), "test": str(paths["test"]) if "test" in paths else None}
             if split["kind"] != "image" else {"data": str(paths["data"]), "test": str(paths["test"]) if paths["test"] else None})
    if "limit_per_class" in given and "limit_per_class" in settings:
        settings["limit_per_class"] = min(settings["limit_per_class"], given["limit_per_class"])
    kwargs = {**given, **split["settings"], **settings, **where, "out": str(run.dir / "members" / member.name),
              "val_fraction": 0.0}
    plugin = plugin_for(cfgmod.build(FitConfig, cfgmod.with_recipe(kwargs)).validate())
    if plugin.name != member.plugin:
        raise ConfigError(f"auto member {member.name}: its settings select {plugin.name}, not {member.plugin}")
    reads = plugin.reads(FitConfig) | {"model"}
    kwargs = {k: v for k, v in kwargs.items() if k in reads}
    layered = {k: v for k, v in cfgmod.with_recipe(kwargs).items() if k in reads}
    mcfg = cfgmod.build(FitConfig, layered).validate()
    if plugin.resolve:
        plugin.function("resolve")(mcfg, set(layered))
    return mcfg, plugin


def _choose(board: list[dict]) -> str | None:
    """The best validation accuracy (then macro-F1); a tie goes to the cheaper member (the first)."""
    best, key = None, None
    for row in board:
        val = row.get("val")
        if row["status"] != "trained" or not val:
            continue
        k = (val.get("accuracy", -1.0), val.get("macro_f1", -1.0))
        if key is None or k > key:
            best, key = row["name"], k
    return best


def _finish(cfg: FitConfig, run: Run, kind: str, board: list[dict], member_dir: Path, budget_s: float,
            members_s: float) -> FitResult:
    """The winner's bundle and split as the run's; report.json/html with the leaderboard."""
    shutil.copytree(member_dir / "model", run.dir / "model")
    if (member_dir / "split.json").exists():
        shutil.copy2(member_dir / "split.json", run.dir / "split.json")
    won = json.loads((member_dir / "report.json").read_text(encoding="utf-8"))
    history = [json.loads(line) for line in (member_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()] if (member_dir / "metrics.jsonl").is_file() else []
    chosen = next(r for r in board if r.get("chosen"))
    report = {k: v for k, v in won.items() if k in ("task", "classes", "val", "test", "data")}
    report.update({
        "model": f"auto ({chosen['name']})", "chosen": chosen["name"], "chosen_model": won.get("model"),
        "leaderboard": board,
        "auto": {"kind": kind, "time_budget_min": cfg.time_budget, "members_s": round(members_s, 2),
                 "chosen_by": "validation accuracy (then macro-F1); test scores are reported, never used"},
        "best_epoch": won.get("best_epoch"), "epochs_run": won.get("epochs_run"),
        # the member's own baseline warning is left out: the run's baseline is the board's (below)
        "warnings": [*run.warnings, *(f"{chosen['name']}: {w}" for w in won.get("warnings", [])
                                      if "baseline" not in w.lower())],
        "config": cfg.to_dict()})
    _baseline_section(report, board, won, run)
    report["wall_s"] = round(time.perf_counter() - run.t_start, 2)
    report["within_budget"] = report["wall_s"] <= budget_s
    paths = write_report(run.dir, report, history, None)
    report["html_path"] = str(paths["html"])
    for row in board:
        v, t = row.get("val") or {}, row.get("test") or {}
        log.info("auto: %-16s %-8s val %s test %s %s%s", row["name"], row["status"], _pct(v.get("accuracy")),
                 _pct(t.get("accuracy")), f"{row['wall_s']:.0f}s" if "wall_s" in row else row.get("why", ""),
                 "  <- chosen" if row.get("chosen") else "")
    if cfg.progress:
        print_summary(report)
    return FitResult(run.dir, run_module(run.dir / "model"), report, cfg, history)


def _baseline_section(report: dict, board: list[dict], won: dict, run: Run) -> None:
    """report["baseline"]: the portfolio's baseline member, as the leaderboard shows it (same split,
    same scores), against the chosen model. As the choice is the best on validation among trained
    members, the baseline included, it never wins; the chosen member's own report keeps the baseline
    its fit trained beside it (members/NAME/report.json), which is not repeated here. When the
    baseline member could not be trained, the chosen member's own baseline stands in, saying so."""
    row = next((r for r in board if r.get("baseline")), None)
    if row is None or row["status"] != "trained":
        why = f"the baseline member {row['name']} was not trained ({row.get('why', row['status'])})" if row else \
            "the portfolio has no baseline member"
        own = won.get("baseline")
        if isinstance(own, dict) and not own.get("skipped"):
            report["baseline"] = {**own, "note": f"{why}; the chosen member's own baseline. {own.get('note', '')}".strip()}
            return
        report["baseline"] = skipped(row["name"] if row else "baseline", why)
        return
    baseline = Baseline(row["name"], f"{_describe(run.dir / row['run'])}: the leaderboard's {row['name']}",
                        row.get("wall_s", 0.0), row.get("val"), row.get("test"),
                        "a member of this run's leaderboard, trained and validated on the same split as the others")
    out = compare(report, baseline, run.warn)
    if row.get("chosen"):
        out["same_kind"] = True
        out["message"] = (f"The baseline ({row['name']}) is the chosen model: no other member beat it on validation "
                          f"({_pct((row.get('val') or {}).get('accuracy'))}).")


def _describe(member_dir: Path) -> str:
    """A member's model in words, from its own report."""
    report = json.loads((member_dir / "report.json").read_text(encoding="utf-8"))
    info = report.get("tfidf")
    if isinstance(info, dict):
        grams = "-".join(map(str, info.get("ngram_range") or ()))
        return f"TF-IDF {info.get('analyzer', '')} {grams}-grams + {info.get('classifier', 'a linear classifier')}"
    freeze = (report.get("config") or {}).get("freeze")
    return f"{report.get('model')}" + (" with a frozen backbone (a linear head on its features)" if freeze == "backbone" else "")


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


# --------------------------------------------------------------------------- report section

@register_section("leaderboard", lambda report: bool(report.get("leaderboard")), order=5)
def _leaderboard(page: Page) -> str:
    """Every member: validation (what chose) and test (reported only), time, and why one did not run."""
    rows = []
    for r in page.report["leaderboard"]:
        v, t = r.get("val") or {}, r.get("test") or {}
        status = r["status"] + (f": {r['why']}" if r.get("why") else "")
        cells = [r["name"] + (" ✔ chosen" if r.get("chosen") else ""), r.get("model") or "", r.get("plan") or "",
                 _pct(v.get("accuracy")), _pct(v.get("macro_f1")) if v.get("macro_f1") is not None else "—",
                 _pct(t.get("accuracy")), _pct(t.get("macro_f1")) if t.get("macro_f1") is not None else "—",
                 f"{r['wall_s']:.1f} s" if "wall_s" in r else "—", status]
        style = ' style="font-weight:bold"' if r.get("chosen") else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    auto = page.report.get("auto") or {}
    head = "".join(f"<th>{h}</th>" for h in ("member", "model", "trained on", "val acc", "val macro-F1", "test acc",
                                              "test macro-F1", "time", "status"))
    note = (f"<p>Time budget {auto.get('time_budget_min')} min, whole run {page.report.get('wall_s')} s. Chosen by "
            f"{html.escape(str(auto.get('chosen_by', 'validation')))}. Each member's own report: "
            f"members/NAME/report.html.</p>")
    return f"<section><h2>Leaderboard (--model auto)</h2>{note}<table><tr>{head}</tr>{''.join(rows)}</table></section>"
