"""The worked applications in examples/: every command of an example README's bash blocks, and its
Python blocks, run as written on a small slice of its real data (../shared/datasets), with the
few flags that would take minutes on the full data shrunk (OVERRIDES, each with its reason).

The customer-service example's server is started on a free port: its page is fetched and a message
posted the way the page posts it (form field `text`) and as JSON (the README's curl line).
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATASETS
from test_readme import Block, _free_port, _json_lines, _chance_margin, build_pneumoniamnist_npz, command_lines
from tuneforge.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["medical", "customer_service"]  # examples/<name>/README.md (other pages of examples/ have their own tests)

# Flags appended to a line (matched by a substring of it as written): the full-data settings take
# 10-30 minutes a line on a 2-core CPU; a few epochs on the slices show the line works.
OVERRIDES = {
    "--model efficientnet_lite0 --image-size 64 --epochs 10": "--image-size 32 --epochs 2",
    "--model minilm --epochs 5": "--epochs 3",
}
# The same for Python blocks: text replaced (a keyword cannot be given twice).
PY_OVERRIDES = {"image_size=64, epochs=10": "image_size=32, epochs=2"}
INTENTS = ["card_arrival", "lost_or_stolen_card", "top_up_failed", "exchange_rate", "cash_withdrawal_charge",
           "pin_blocked"]


def build_medical(ws: Path) -> None:
    """pneumoniamnist.npz: the README's balanced slice of the real file (test_readme's builder); xray.png: a test X-ray."""
    build_pneumoniamnist_npz(ws)
    Image.fromarray(np.load(DATASETS / "medmnist" / "pneumoniamnist.npz")["test_images"][-1], "L").save(ws / "xray.png")


def build_customer_service(ws: Path) -> None:
    """banking77/train.csv and test.csv: 6 intents, 40 training and 20 test queries each."""
    for name, n in (("train.csv", 40), ("test.csv", 20)):
        rows = list(csv.DictReader(open(DATASETS / "banking77" / name, newline="", encoding="utf-8")))
        keep = [r for c in INTENTS for r in [r for r in rows if r["category"] == c][:n]]
        (ws / "banking77").mkdir(exist_ok=True)
        with open(ws / "banking77" / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "category"])
            w.writeheader()
            w.writerows(keep)


BUILD = {"medical": build_medical, "customer_service": build_customer_service}


def blocks(name: str) -> list[Block]:
    text = (ROOT / "examples" / name / "README.md").read_text(encoding="utf-8")
    return [Block(m.group(1), text[:m.start()].count("\n") + 1, name, m.group(2))
            for m in re.finditer(r"^```(bash|python)\n(.*?)^```", text, re.S | re.M)]


def classes(run: Path) -> list[str]:
    return json.loads((run / "model" / "config.json").read_text())["classes"]


class Server:
    """`tuneforge serve` as the README starts it, on a free port, until the example ends."""

    def __init__(self, line: str, ws: Path, env: dict):
        self.port = _free_port()
        self.run = ws / shlex.split(line)[2]
        self.proc = subprocess.Popen([sys.executable, "-m", "tuneforge", *shlex.split(line)[1:], "--port", str(self.port)],
                                     cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        import httpx
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, f"the server exited: {self.proc.stdout.read()}"
            assert time.monotonic() < deadline, "/readyz never answered 200"
            try:
                if httpx.get(self.url("/readyz"), timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def try_the_page(self) -> None:
        """What a browser does: the page, /v1/info (its title and subtitle), a message from its form."""
        import httpx
        page = httpx.get(self.url("/"), timeout=30)
        assert page.status_code == 200 and 'id="text"' in page.text and "/v1/predict" in page.text
        info = httpx.get(self.url("/v1/info"), timeout=30).json()
        assert info["task"] == "text-classification" and info["classes"] == classes(self.run) and "text" in info["inputs"]
        answer = httpx.post(self.url("/v1/predict?top_k=5"), files={"text": (None, "my card has not arrived yet")},
                            timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["top"]) == 5 and body["label"] == body["top"][0]["label"] in info["classes"]
        assert body["latency_ms"] > 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def check(words: list[str], out: str, ws: Path, where: str) -> None:
    """What a line printed is what the example promises: above chance, labels among the classes."""
    verb = words[1]
    if verb == "fit":
        report = json.loads((Path(_json_lines(out)[-1]["run"]) / "report.json").read_text())
        k = len(report["classes"])
        assert report["test"]["accuracy"] > _chance_margin(k), f"{where}: test accuracy {report['test']['accuracy']}"
        if "tfidf" not in words:  # the TF-IDF line is the baseline itself
            assert report["baseline"]["test"]["accuracy"] is not None, f"{where}: no baseline beside the model"
        if "--target-recall" in words:
            assert report["decision"]["val"]["sensitivity"] >= float(words[words.index("--target-recall") + 1].split("=")[1])
    elif verb == "evaluate":
        printed = _json_lines(out)[-1]
        report = json.loads(Path(printed["report"]).with_suffix(".json").read_text())
        assert printed["accuracy"] > _chance_margin(len(report["classes"])), f"{where}: {printed}"
        config = ws / words[2] / "config.yaml"  # a run's settings (an ensemble folder has none: no threshold)
        if config.is_file() and "target_recall: null" not in config.read_text():
            assert "decision" in report, f"{where}: evaluate left out the bundle's threshold"
    elif verb == "predict":
        names = classes(ws / words[2])
        rows = _json_lines(out)
        assert rows and all(r["label"] in names for r in rows), f"{where}: {rows}"


def run_example(name: str, ws: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ws)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    server = None
    try:
        for block in blocks(name):
            if block.kind == "python":
                code = block.code
                for key, new in PY_OVERRIDES.items():
                    code = code.replace(key, new)
                scope: dict = {}
                exec(compile(code, f"examples/{name}/README.md:{block.line}", "exec"), scope)
                run = scope.get("run")
                if run is not None:
                    assert run.report["test"]["accuracy"] > _chance_margin(len(run.report["classes"]))
                continue
            for n, line in command_lines(block):
                where = f"examples/{name}/README.md:{n} `{line}`"
                for key, extra in OVERRIDES.items():
                    if key in line:
                        line = f"{line} {extra}"
                words = shlex.split(line)
                if line.startswith("tuneforge serve "):
                    server = Server(line, ws, env)
                    server.try_the_page()
                    continue
                if words[0] == "curl":
                    assert server is not None, f"{where}: curl with no server started"
                    done = subprocess.run(["bash", "-c", line.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")],
                                          capture_output=True, text=True, timeout=120)
                    answer = json.loads(done.stdout)
                    assert answer["label"] in classes(server.run), f"{where}: {answer}"
                    continue
                capsys.readouterr()
                code = main(words[1:])
                captured = capsys.readouterr()
                assert code == 0, f"{where}: exit {code}\n{captured.err[-3000:]}"
                check(words, captured.out, ws, where)
    finally:
        if server is not None:
            server.stop()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.e2e) if n == "customer_service" else n
                                  for n in EXAMPLES])
def test_example_readme_runs(name, tmp_path, capsys, monkeypatch):
    BUILD[name](tmp_path)
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / ".cache"))
    run_example(name, tmp_path, capsys, monkeypatch)


def test_overrides_match_the_examples():
    """Every shrunk flag still matches a line of an example: a stale entry would let a line run unshrunk."""
    lines = [line for name in EXAMPLES for b in blocks(name) if b.kind == "bash" for _, line in command_lines(b)]
    codes = [b.code for name in EXAMPLES for b in blocks(name) if b.kind == "python"]
    assert all(any(key in line for line in lines) for key in OVERRIDES)
    assert all(any(key in code for code in codes) for key in PY_OVERRIDES)
