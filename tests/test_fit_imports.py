"""What an image fit imports before it trains (issue 17: the fixed cost of `tuneforge fit`): the
CLI, the API and the image fit's modules load no text stack, no export stack, and neither
scikit-learn nor matplotlib, which the report imports when it is written, or `report.preload`
in the background while the test set is scored."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_BEFORE_TRAINING = ("sklearn", "matplotlib", "transformers", "onnx", "onnxruntime", "timm")

_PROBE = """
import json, sys
import tuneforge.cli, tuneforge.api, tuneforge.tasks.image.fit
before = [m for m in %r if m in sys.modules]
from tuneforge.core.report import preload
preload()()
print(json.dumps({"before": before, "preloaded": [m for m in ("sklearn.metrics", "matplotlib.figure") if m in sys.modules]}))
"""


def test_image_fit_modules_import_no_report_or_text_stack_and_preload_imports_the_report_stack():
    r = subprocess.run([sys.executable, "-c", _PROBE % (NOT_BEFORE_TRAINING,)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["before"] == [], f"imported before training: {out['before']}"
    assert out["preloaded"] == ["sklearn.metrics", "matplotlib.figure"]
