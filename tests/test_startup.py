"""Start-up: `tuneforge --version` and every verb's --help import no torch, scikit-learn or
numpy (they took 8-10 s before the first line on the 2-core machine; benchmarks/startup.py
measures the time), and the code the parser only names by "module:function" path exists."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.cli import VERBS
from tuneforge.tasks import PLUGINS
from tuneforge.tasks.plugins import load

ROOT = Path(__file__).resolve().parents[1]
# What the verbs' real work needs and start-up must not import.
HEAVY = ("torch", "torchvision", "sklearn", "scipy", "numpy", "pandas", "PIL", "matplotlib", "transformers",
         "safetensors", "tensorboard", "timm", "huggingface_hub")

# In a fresh interpreter: each argv through cli.main (as the console script calls it), then
# which heavy modules are loaded.
_PROBE = """
import json, sys
from tuneforge.cli import VERBS, main
argvs = [["--version"], ["--help"]] + [[verb, "--help"] for verb in VERBS]
for argv in argvs:
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
    else:
        raise AssertionError(f"{argv}: no exit")
print(json.dumps({"argvs": argvs, "loaded": [m for m in %r if m in sys.modules]}))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, *(["-c", code] if code else [])], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_version_and_every_help_import_nothing_heavy():
    r = _python(_PROBE % (HEAVY,))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out["argvs"]) == len(VERBS) + 2 and ["fit", "--help"] in out["argvs"]
    assert out["loaded"] == [], f"--version / --help imported {out['loaded']}"


@pytest.mark.parametrize("argv", [["--version"], ["fit", "--help"]])
def test_python_dash_m_tuneforge_starts_light(argv):
    code = ("import runpy, sys\n"
            f"sys.argv = ['tuneforge', *{argv!r}]\n"
            "try:\n    runpy.run_module('tuneforge', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
            f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules], code)\n")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "LOADED [] 0", r.stdout[-500:]
    assert ("tuneforge 0.1.0" if argv == ["--version"] else "image settings:") in r.stdout


def test_import_tuneforge_and_its_plugin_declarations_is_light():
    r = _python(f"import sys, tuneforge, tuneforge.tasks, tuneforge.cli\n"
                f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)


def test_every_named_function_exists():
    """The verbs and plugins name their code by path, imported only when used: a typo or a broken
    import would show only then, so every path is resolved here."""
    for name, verb in VERBS.items():
        assert callable(load(verb.run)), name
    for plugin in PLUGINS.values():
        for hook in ("detect", "fit", "resolve"):
            if getattr(plugin, hook):
                assert callable(plugin.function(hook)), (plugin.name, hook)
        assert plugin.detect is not None or plugin.name in VERBS, f"fit could never pick {plugin.name}"
