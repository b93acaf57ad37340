"""The design's applications, measured with one command (issue 20):

    python benchmarks/applications.py                              # every application found
    python benchmarks/applications.py --only medical,banking77     # some of them
    python benchmarks/applications.py --only medical --epochs 3    # an application's own options

Each application is a sibling module `benchmarks/app_<name>.py` exposing `run(args) -> dict` (its
numbers, the commands it ran and whether its target is met) and optionally `add_arguments(parser)`
for options of its own; the modules present are discovered, so an application is added by adding
its file. The summary is printed as JSON and appended, with the date and `uptime` load, to
benchmarks/results/applications.jsonl. Datasets: ../shared/datasets (or $TUNEFORGE_DATASETS); run
folders under --out (default runs/applications). Wrap timed runs in `flock /tmp/tuneforge-bench.lock`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = HERE / "results" / "applications.jsonl"


def discover() -> dict[str, ModuleType]:
    """name -> module of every benchmarks/app_<name>.py, in name order."""
    apps = {}
    for path in sorted(HERE.glob("app_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        if callable(getattr(module, "run", None)):
            apps[path.stem[len("app_"):]] = module
    return apps


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> dict:
    apps = discover()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(apps), help=f"comma-separated applications (found: {', '.join(apps)})")
    parser.add_argument("--out", default=str(ROOT / "runs" / "applications"), help="folder for the run folders")
    parser.add_argument("--datasets", default=str(DATASETS), help="the shared datasets folder")
    parser.add_argument("--reuse", action="store_true", help="summarise the run folders already under --out (a finished "
                        "run of the same command) instead of training again")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results/applications.jsonl")
    for module in apps.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    args = parser.parse_args(argv)
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in apps]
    if unknown:
        parser.error(f"--only: no benchmarks/app_{unknown[0]}.py (found: {', '.join(apps) or 'none'})")
    args.out, args.datasets = Path(args.out), Path(args.datasets)
    summary = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "uptime_start": uptime(), "applications": {}}
    for name in wanted:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        result = apps[name].run(args)
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        result["uptime"] = uptime()
        summary["applications"][name] = result
        print(json.dumps({name: result}, indent=1), flush=True)
    summary["uptime_end"] = uptime()
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(summary) + "\n")
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
