"""Start-up time of the command line: `tuneforge --version`, `tuneforge --help` and every verb's
`--help`, each run `--runs` times in a fresh process, through the venv's console script and
through `python -m tuneforge`; the median and the minimum wall time per command.

    .venv/bin/python benchmarks/startup.py [--runs 5] [--out benchmarks/results/startup.json]
        [--md benchmarks/results/startup.md] [--before DIR]

The code measured is this checkout's (PYTHONPATH is set to it, which comes before the venv's
editable install). `--before DIR` also times `--version` and `fit --help` of the tuneforge tree
in DIR (e.g. a `git worktree` of an earlier commit) through the same console script, for a
side-by-side figure. One untimed run of each launcher first, so the figures are those of a warm
file-system cache, as when a user types commands one after another.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuneforge.cli import VERBS  # noqa: E402  (light: the parser's own imports)


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(cmd: list[str], tree: Path, runs: int) -> list[float]:
    """Wall seconds of `runs` fresh processes of `cmd` running the tuneforge of `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "100"}
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        out.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-500:]}")
    return out


def summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "runs_s": [round(t, 3) for t in times]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/startup.json")
    ap.add_argument("--md", type=Path, default=ROOT / "benchmarks/results/startup.md")
    ap.add_argument("--script", type=Path, default=Path(sys.executable).parent / "tuneforge",
                    help="the console script (default: the one next to this Python)")
    ap.add_argument("--before", type=Path, help="a tuneforge tree of earlier code, timed for --version and fit --help")
    args = ap.parse_args()
    launchers = {"console script": [str(args.script)], "python -m tuneforge": [sys.executable, "-m", "tuneforge"]}
    commands = [["--version"], ["--help"], *([verb, "--help"] for verb in VERBS)]

    doc = {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), **machine(),
           "loadavg_before": loadavg(), "runs": args.runs, "commands": []}
    for cmd in launchers.values():
        timed(cmd + ["--version"], ROOT, 1)  # warm the file-system cache
    for argv in commands:
        row = {"command": "tuneforge " + " ".join(argv)}
        for name, cmd in launchers.items():
            row[name] = summary(timed(cmd + argv, ROOT, args.runs))
        print(f"{row['command']:34s} " + "  ".join(f"{n}: median {row[n]['median_s']:.3f} s, min {row[n]['min_s']:.3f} s"
                                                   for n in launchers), flush=True)
        doc["commands"].append(row)
    if args.before:
        doc["before"] = {"tree": str(args.before.resolve()), "commands": []}
        timed(launchers["console script"] + ["--version"], args.before, 1)
        for argv in (["--version"], ["fit", "--help"]):
            row = {"command": "tuneforge " + " ".join(argv),
                   "console script": summary(timed(launchers["console script"] + argv, args.before, args.runs))}
            print(f"before: {row['command']:26s} median {row['console script']['median_s']:.3f} s", flush=True)
            doc["before"]["commands"].append(row)
    doc["loadavg_after"] = loadavg()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    args.md.write_text(markdown(doc, list(launchers)))
    print(f"wrote {args.out} and {args.md}")


def markdown(doc: dict, launchers: list[str]) -> str:
    head = (f"{doc['date_utc']}, {doc['nproc']} x {doc['cpu']}, Python {doc['python']}, load average "
            f"{' '.join(map(str, doc['loadavg_before']))} before, {' '.join(map(str, doc['loadavg_after']))} after; "
            f"median and min of {doc['runs']} runs, seconds\n\n")
    lines = ["| command | " + " | ".join(f"{n}: median | min" for n in launchers) + " |",
             "|---|" + "---|---|" * len(launchers)]
    for row in doc["commands"]:
        lines.append(f"| `{row['command']}` | " + " | ".join(f"{row[n]['median_s']:.2f} | {row[n]['min_s']:.2f}"
                                                             for n in launchers) + " |")
    if "before" in doc:
        lines += ["", f"Before (console script, tree {doc['before']['tree']}):", "",
                  "| command | median | min |", "|---|---|---|"]
        for row in doc["before"]["commands"]:
            s = row["console script"]
            lines.append(f"| `{row['command']}` | {s['median_s']:.2f} | {s['min_s']:.2f} |")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
