"""The study's report: STUDY/report.json and report.html (core/report.py's page, with the sections
registered here): the leaderboard of trials, the optimisation history, parameter importances
(Optuna's fANOVA), one slice plot per parameter, and the command that trains the best trial again."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState

from ...core.report import (Page, card, duration, escape, image, new_figure, register_section, save_figure, section,
                            write_report)

if TYPE_CHECKING:
    from .study import Search

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def write(s: "Search", study: optuna.Study, storage: str, stop_why: str | None, seconds: float) -> dict:
    """Write STUDY/report.json and report.html; return the report (with "html_path"). `storage`:
    the storage's URL as shown (no password)."""
    trials = study.get_trials(deepcopy=False)
    rows = [_row(t) for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params, "command": b.user_attrs.get("command"),
                "run_dir": b.user_attrs.get("run_dir"),
                "bundle": str(s.dir / "best") if (s.dir / "best").is_dir() else None}
    report = {
        "kind": "search", "model": f"search {s.name}", "study": s.name,
        "storage": storage, "out": str(s.dir),
        "objective": s.objective, "direction": s.direction, "sampler": s.cfg.sampler, "pruner": s.cfg.pruner,
        "space": {d.name: d.describe() for d in s.space},
        "counts": {state.lower(): sum(t.state.name == state for t in trials) for state in STATES},
        "epochs_trained": sum(int(r["epochs"] or 0) for r in rows),
        "best": best, "trials": rows, "importances": _importances(study, complete),
        "stopped_because": stop_why, "wall_s": round(seconds, 2),
        "config": {"fit": s.fit, "space": s.raw_space, **s.cfg.to_dict()},
    }
    paths = write_report(s.dir, report)
    report["html_path"] = str(paths["html"])
    return report


def _row(t: optuna.trial.FrozenTrial) -> dict:
    a = t.user_attrs
    value = t.value if t.state == TrialState.COMPLETE else a.get("objective")
    return {"number": t.number, "state": t.state.name.lower(), "params": t.params, "value": value,
            "epochs": a.get("epochs"), "wall_s": a.get("wall_s"), "reason": a.get("state_reason") or "",
            "run_dir": a.get("run_dir"), "retry_of": a.get("retry_of"), "command": a.get("command")}


def _importances(study: optuna.Study, complete: list) -> dict:
    """fANOVA importances of the parameters, or why there are none."""
    if len(complete) < 2:
        return {"skipped": "needs at least 2 completed trials"}
    varied = {k for t in complete for k in t.params if len({repr(u.params.get(k)) for u in complete}) > 1}
    if not varied:
        return {"skipped": "no parameter took more than one value over the completed trials"}
    try:
        values = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=sorted(varied))
    except (RuntimeError, ValueError) as e:
        return {"skipped": f"fANOVA: {e}"}
    return {"values": {k: float(v) for k, v in values.items()}}


# --------------------------------------------------------------------------- sections

def _is_search(report: dict) -> bool:
    return report.get("kind") == "search"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@register_section("search_summary", _is_search, order=5)
def _summary(page: Page) -> str:
    r = page.report
    best, counts = r.get("best") or {}, r["counts"]
    cards = [card(f"Best {r['objective']}", _fmt(best.get("value")), f"trial {best['number']}" if best else "no trial completed"),
             card("Trials", str(sum(counts.values())),
                  f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed"),
             card("Epochs trained", str(r["epochs_trained"]), "over all trials"),
             card("Wall time", duration(r.get("wall_s")), "this worker")]
    text = (f"<p>{escape(r['direction'])} validation {escape(r['objective'])}; sampler {escape(r['sampler'])}, pruner "
            f"{escape(r['pruner'])}; study {escape(r['study'])} in {escape(r['storage'])}. "
            f"{escape(r.get('stopped_because') or '')}</p>")
    if best:
        text += (f"<p>The best trial's bundle: <code>{escape(best.get('bundle') or '—')}</code> (for predict, export, "
                 f"serve). Train it again:</p><pre>{escape(best.get('command') or '')}</pre>")
    space = "".join(f'<tr><td class="l">{escape(k)}</td><td class="l">{escape(v)}</td></tr>' for k, v in r["space"].items())
    return (f'<div class="cards">{"".join(cards)}</div>'
            + section("Search", text + f'<table><tr><th class="l">setting</th><th class="l">searched over</th></tr>{space}</table>'))


@register_section("search_leaderboard", _is_search, order=6)
def _leaderboard(page: Page) -> str:
    r = page.report
    sign = -1.0 if r["direction"] == "maximize" else 1.0
    order = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "fail": 4}
    rows = sorted(r["trials"], key=lambda t: (order.get(t["state"], 5),
                                              sign * t["value"] if isinstance(t["value"], (int, float)) else math.inf,
                                              t["number"]))
    names = list(r["space"])
    best = (r.get("best") or {}).get("number")
    body = []
    for t in rows:
        params = "".join(f"<td>{escape(_fmt(t['params'].get(n)))}</td>" for n in names)
        retry = f" (retry of {t['retry_of']})" if t.get("retry_of") is not None else ""
        style = ' style="font-weight:bold"' if t["number"] == best else ""
        body.append(f"<tr{style}><td>{t['number']}{' ✔' if t['number'] == best else ''}</td>{params}"
                    f"<td>{escape(_fmt(t['value']))}</td><td>{escape(_fmt(t['epochs']))}</td>"
                    f"<td>{escape(duration(t['wall_s']))}</td><td class=\"l\">{escape(t['state'] + retry)}</td>"
                    f"<td class=\"l\">{escape(t['reason'])}</td><td class=\"l\">{escape(_rel(t['run_dir'], r['out']))}</td></tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in ("trial", *names, r["objective"], "epochs", "wall")) + \
        '<th class="l">state</th><th class="l">why</th><th class="l">run folder</th>'
    return section("Leaderboard", f"<table><tr>{head}</tr>{''.join(body)}</table>")


@register_section("search_history", lambda r: _is_search(r) and any(t["value"] is not None for t in r["trials"]), order=7)
def _history(page: Page) -> str:
    path = page.plot("search_history", lambda p: _plot_history(page.report, p))
    return section("Optimisation history", image(path, "objective by trial"))


@register_section("search_importances", _is_search, order=8)
def _importance(page: Page) -> str:
    imp = page.report["importances"]
    if "values" not in imp:
        return section("Parameter importances", f"<p class=\"muted\">None: {escape(imp.get('skipped'))}.</p>")
    path = page.plot("search_importances", lambda p: _plot_importances(imp["values"], p))
    return section("Parameter importances (fANOVA)", image(path, "parameter importances"))


@register_section("search_slices", lambda r: _is_search(r) and bool(r["space"]), order=9)
def _slices(page: Page) -> str:
    parts = []
    for i, name in enumerate(page.report["space"]):
        points = [(t["params"][name], t["value"], t["state"]) for t in page.report["trials"]
                  if name in t["params"] and isinstance(t["value"], (int, float))]
        if points:
            path = page.plot(f"search_slice_{i}", lambda p, n=name, pts=points: _plot_slice(n, pts, page.report, p))
            parts.append(image(path, f"objective by {name}"))
    return section("Slices: the objective by each parameter", "".join(parts)) if parts else ""


def _rel(path: str | None, out: str) -> str:
    if not path:
        return "—"
    try:
        return str(Path(path).relative_to(out))
    except ValueError:
        return path


# --------------------------------------------------------------------------- plots

def _plot_history(report: dict, path: Path) -> Path:
    fig = new_figure(6.5, 3.5)
    ax = fig.add_subplot(111)
    maximise = report["direction"] == "maximize"
    for state, style in (("complete", dict(color="#2f81f7", marker="o")), ("pruned", dict(color="#8c959f", marker="x"))):
        pts = [(t["number"], t["value"]) for t in report["trials"] if t["state"] == state and t["value"] is not None]
        if pts:
            ax.scatter(*zip(*pts), label=state, **style)
    done = sorted((t["number"], t["value"]) for t in report["trials"] if t["state"] == "complete")
    if done:
        best, xs, ys = None, [], []
        for n, v in done:
            best = v if best is None else (max(best, v) if maximise else min(best, v))
            xs.append(n)
            ys.append(best)
        ax.step(xs, ys, where="post", color="#cf222e", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"val {report['objective']}")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _plot_importances(values: dict[str, float], path: Path) -> Path:
    names = list(values)[::-1]
    fig = new_figure(6, 0.5 + 0.4 * len(names))
    ax = fig.add_subplot(111)
    ax.barh(names, [values[n] for n in names], color="#2f81f7")
    ax.set_xlabel("importance (share of the objective's variance)")
    return save_figure(fig, path)


def _plot_slice(name: str, points: list[tuple], report: dict, path: Path) -> Path:
    fig = new_figure(4.5, 3.2)
    ax = fig.add_subplot(111)
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _, _ in points)
    labels = sorted({str(x) for x, _, _ in points})
    for state, style in (("complete", dict(color="#2f81f7", marker="o")), ("pruned", dict(color="#8c959f", marker="x"))):
        pts = [(x if numeric else labels.index(str(x)), v) for x, v, st in points if st == state]
        if pts:
            ax.scatter(*zip(*pts), label=state, **style)
    if numeric:
        xs = [x for x, _, _ in points]
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
    ax.set_xlabel(name)
    ax.set_ylabel(f"val {report['objective']}")
    return save_figure(fig, path)
