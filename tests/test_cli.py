"""The command line: every verb's --help, flags generated from the settings dataclasses, --config
on every verb, fit's help grouped by kind of data, and what the verbs hand to the API."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge import api, cli, commands
from tuneforge.cli import VERBS, build_parser, main
from tuneforge.config import (COMMANDS, BatchConfig, EvaluateConfig, ExportConfig, FitConfig, PredictConfig,
                              ServeConfig, Settings, ZeroshotConfig, flag, opt)
from tuneforge.tasks import PLUGINS

ROOT = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0, argv
    return capsys.readouterr().out


def test_every_verb_has_working_help(capsys):
    verbs = _subparsers(build_parser())
    assert set(verbs) >= {"fit", "pretrain", "align", "evaluate", "predict", "export", "serve", "batch", "retrieve",
                          "zeroshot", "embed", "models", "recipes"}
    for verb in verbs:  # every subparser, so a verb added later is covered too
        out = _help([verb], capsys)
        assert out.strip() and f"usage: tuneforge {verb}" in out, verb


def test_pretrain_help_from_the_command_line():
    # defect 3: "80% [MASK]" in a help text crashed argparse's %-formatting
    r = subprocess.run([sys.executable, "-m", "tuneforge", "pretrain", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "80% [MASK]" in r.stdout and "Traceback" not in r.stderr


def test_percent_in_any_generated_help_is_literal():
    @dataclasses.dataclass
    class Odd(Settings):
        verb = "odd"
        share: float = opt(0.5, "a share of 100% (50% by default)")
        mark: str = opt("5%", "a literal %(prog)s and %d stay as written")

    p = argparse.ArgumentParser(prog="odd")
    cli.add_dataclass_flags(p, Odd)
    text = p.format_help()
    assert "100% (50% by default)" in text and "%(prog)s and %d" in text and "(default: 5%)" in text


def test_every_setting_is_a_flag_or_positional_and_nothing_else():
    """Each setting is one argument; the parser `main` uses to find the given flags leaves the
    others out, the one for --help shows (and an API caller of parse_args gets) the defaults."""
    verbs = _subparsers(build_parser(defaults=False))
    shown = _subparsers(build_parser())
    for name, verb in VERBS.items():
        if verb.settings is None:
            continue
        actions = {a.dest: a for a in verbs[name]._actions}
        for f in verb.settings.offered():
            a = actions.get(f.name)
            assert a is not None, (name, f.name)
            if f.metadata.get("positional"):
                assert not a.option_strings, (name, f.name)
            else:
                assert flag(f.name) in a.option_strings and a.default is argparse.SUPPRESS, (name, f.name)
                assert {x.dest: x for x in shown[name]._actions}[f.name].default == f.default, (name, f.name)
        extra = set(actions) - {f.name for f in verb.settings.offered()} - {"help", "config"}
        assert not extra, (name, extra)


def test_fit_help_groups_settings_by_kind_of_data(capsys):
    out = _help(["fit"], capsys)
    kinds = {n: p.reads(FitConfig) for n, p in PLUGINS.items() if n not in VERBS}
    assert {"image", "text", "sequence", "image+text"} <= set(kinds)
    groups = FitConfig.groups()
    for group in sorted(set(groups.values())):
        members = {f for f, g in groups.items() if g == group}
        readers = [k for k, reads in kinds.items() if reads & members]
        assert f"{group} settings:" in out, group
        section = out.split(f"{group} settings:", 1)[1]
        assert f"Read by: {', '.join(readers)}." in " ".join(section.split()[:80]), group
    flat = " ".join(out.split())
    # the image group: not text or sequence tables (auto passes it on)
    assert "Read by: image, image-regression, image+text, image-multilabel, auto." in flat
    assert "Read by: image+text, image-multilabel, auto." in flat    # fusion (auto: its image+text portfolio; --image-column)
    assert "[read by: image]" in flat               # e.g. --tta: image+text does not read it
    # defect 4: --data speaks of every kind of data, not only class folders
    data_help = flat.split("run settings:", 1)[1].split("--data DATA", 1)[1][:300]
    assert "class folders" in data_help and "text or sequence table" in data_help and "image+text table" in data_help
    for name in kinds:  # the description lists the kinds and how each is recognised
        assert " ".join(PLUGINS[name].help.split()) in flat, name


def test_fit_without_data_names_every_kind_of_data(capsys):
    assert main(["fit"]) == 2
    err = capsys.readouterr().err
    assert "--data is required" in err
    assert "class folders" in err and "table" in err and "image+text" in err and "Traceback" not in err


def test_subcommand_help_lines_speak_of_every_kind(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    assert "train a model on labelled data" in top and "text or sequence table" in top


# --- what each verb hands to the API (the API is replaced by a recorder) ---

@pytest.fixture
def calls(monkeypatch):
    seen: dict[str, tuple] = {}

    def recorder(name, result):
        def fake(*args, **kwargs):
            seen[name] = (args, kwargs)
            return result
        return fake

    report = {"html_path": "r.html", "test": {"accuracy": 0.5, "n": 2}, "baselines": {"chance": 0.5}}
    for name, result in (("evaluate", report), ("predict", [{"path": "a.jpg", "label": "x",
                                                               "top": [{"label": "x", "probability": 0.9}]}]),
                         ("export", {"_dir": "b", "files": {}}), ("serve", None), ("batch_predict", {"rows": 0}),
                         ("retrieve", []), ("zeroshot", report), ("embed", {"out": "e"}),
                         ("ensemble", {"_dir": "e", "members": [], "weights": [0.5, 0.5]})):
        monkeypatch.setattr(api, name, recorder(name, result))
    monkeypatch.setattr(commands, "evaluate_retrieval", recorder("evaluate_retrieval", {"R@1": 0.1}))
    return seen


def test_flags_users_type_keep_their_meaning(calls, tmp_path):
    assert main(["evaluate", "runs/x", "--data", "d", "--no-tta", "--strict", "--batch-size", "8"]) == 0
    assert calls["evaluate"] == (("runs/x", "d", None), {"strict": True, "cache_dir": None, "batch_size": 8, "tta": False,
                                                        "device": "auto"})
    assert main(["evaluate", "runs/x", "--data", "d", "--device", "cpu"]) == 0 and calls["evaluate"][1]["device"] == "cpu"
    assert main(["evaluate", "runs/x", "--data", "d"]) == 0
    assert calls["evaluate"][1]["tta"] is None and calls["evaluate"][1]["batch_size"] == 256  # tri-state: unset
    assert main(["evaluate", "runs/x", "--data", "d", "--tta"]) == 0 and calls["evaluate"][1]["tta"] is True

    assert main(["predict", "runs/x", "a.jpg", "more/", "--top-k", "2"]) == 0
    assert calls["predict"][0] == ("runs/x", ["a.jpg", "more/"], 2, 256)
    out = tmp_path / "p.csv"
    assert main(["predict", "runs/x", "a.jpg", "--output", str(out)]) == 0
    assert out.read_text().splitlines()[1].startswith("a.jpg,x,0.9")

    assert main(["export", "runs/x", "--out", "b"]) == 0
    assert calls["export"][0] == ("runs/x", "b", "safetensors", None, None)
    assert main(["export", "runs/x", "--out", "b", "--format", "onnx", "--quantize", "int8", "--data", "d"]) == 0
    assert calls["export"][0] == ("runs/x", "b", "onnx", "int8", "d")

    assert main(["serve", "b", "--port", "9000", "--busy-wait", "--token", "t", "--backend", "onnx"]) == 0
    args, kw = calls["serve"]
    assert args == ("b", "127.0.0.1", 9000, "t")
    assert kw == {"backend": "onnx", "threads": 0, "max_batch_size": 32, "max_wait_ms": 5.0, "max_queue": 256,
                  "timeout_ms": 5000.0, "max_body_mb": 10.0, "busy_wait": True, "decode_threads": 0,
                  "max_pixels": 40_000_000, "token_file": None, "device": "auto"}

    assert main(["batch", "b", "photos/", "--output", "o.csv", "--no-progress", "--column", "path"]) == 0
    assert calls["batch_predict"] == (("b", "photos/", "o.csv", 5, 64, "path", "torch"), {"progress": False, "device": "auto"})

    assert main(["retrieve", "r", "--query", "a dog", "a cat", "--images", "imgs", "--top-k", "2"]) == 0
    assert calls["retrieve"][0] == ("r", ["a dog", "a cat"], "imgs", None, None, 2, None)
    assert main(["retrieve", "r", "--data", "t.csv", "--image-root", "imgs"]) == 0
    assert calls["evaluate_retrieval"][0] == ("r", "t.csv", "image", "caption", "imgs", None)

    assert main(["zeroshot", "r", "--data", "d", "--class-name", "Footwear=shoes|sandals", "--class-name",
                 "Bags=handbags", "--prompts", "a {}", "the {}", "--json"]) == 0
    args, kw = calls["zeroshot"]
    assert args[7] == ["a {}", "the {}"] and args[8] == {"Footwear": "shoes|sandals", "Bags": "handbags"}
    assert kw == {"progress": False}

    assert main(["embed", "r", "--images", "imgs", "--out", "e.safetensors"]) == 0
    assert calls["embed"][0] == ("r", "imgs", "e.safetensors", None)


def test_config_file_on_every_verb(calls, tmp_path, capsys):
    cases = {  # verb, its positional arguments, a file, a flag that overrides one of its keys
        "evaluate": (["runs/x"], "data: d\nbatch-size: 7\nstrict: true\n", ["--batch-size", "9"]),
        "predict": (["runs/x", "a.jpg"], "top_k: 3\nbatch_size: 7\n", ["--top-k", "2"]),
        "export": (["runs/x"], "out: b\nformat: onnx\n", ["--format", "safetensors"]),
        "serve": (["b"], "port: 9001\nmax_queue: 8\n", ["--port", "9002"]),
        "batch": (["b", "src"], "output: o.jsonl\ntop_k: 3\n", ["--top-k", "1"]),
        "retrieve": (["r"], "images: imgs\nquery: [a dog]\n", ["--top-k", "4"]),
        "zeroshot": (["r"], "data: d\nclass_name: {Footwear: shoes}\n", ["--limit-per-class", "3"]),
        "embed": (["r"], "images: imgs\nout: x.safetensors\n", ["--out", "y.safetensors"]),
        "ensemble": (["a", "b"], "out: e\nweights: '1,3'\n", ["--out", "f"]),
    }
    assert set(cases) == {c.verb for c in COMMANDS}
    for verb, (positional, text, override) in cases.items():
        f = tmp_path / f"{verb}.yaml"
        f.write_text(text)
        assert main([verb, *positional, "--config", str(f), *override]) == 0, capsys.readouterr().err
    assert calls["evaluate"][1]["batch_size"] == 9 and calls["evaluate"][1]["strict"] is True
    assert calls["evaluate"][0][1] == "d"
    assert calls["predict"][0][2:] == (2, 7)
    assert calls["export"][0][1:3] == ("b", "safetensors")
    assert calls["serve"][0][2] == 9002 and calls["serve"][1]["max_queue"] == 8
    assert calls["batch_predict"][0][2:4] == ("o.jsonl", 1)
    assert calls["retrieve"][0][1:3] == (["a dog"], "imgs") and calls["retrieve"][0][5] == 4
    assert calls["zeroshot"][0][8] == {"Footwear": "shoes"} and calls["zeroshot"][0][10] == 3
    assert calls["embed"][0][1:3] == ("imgs", "y.safetensors")
    assert calls["ensemble"][0][:3] == (["a", "b"], "f", [1.0, 3.0])


def test_config_file_on_the_training_verbs(monkeypatch, tmp_path):
    seen = {}

    def recorder(name):
        def fake(**kw):
            seen[name] = kw
            raise cli.ConfigError("recorded")  # stop here: no run, no result to print
        return fake

    for name in ("fit", "pretrain", "align"):
        monkeypatch.setattr(api, name, recorder(name))
    f = tmp_path / "s.yaml"
    f.write_text("data: x\nepochs: 5\nbatch-size: 16\n")
    for verb in ("fit", "pretrain", "align"):
        assert main([verb, "--config", str(f), "--epochs", "1"]) == 2
        assert seen[verb] == {"data": "x", "epochs": 1, "batch-size": 16}, verb
    assert main(["align", "--embed-dim", "64"]) == 2 and seen["align"] == {"proj_dim": 64}  # the flag's earlier name


def test_config_file_mistakes_are_refused_by_name(calls, tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("data: d\nbogus_key: 1\n")
    assert main(["evaluate", "runs/x", "--config", str(f)]) == 2
    assert "--bogus-key" in capsys.readouterr().err
    f.write_text("run: runs/y\ndata: d\n")  # RUN is given on the command line
    assert main(["evaluate", "runs/x", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert "'run'" in err and "RUN" in err
    assert main(["serve", "b", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    f.write_text("backend: tensorrt\n")
    assert main(["serve", "b", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert "--backend" in err and "onnx-int8" in err
    assert "evaluate" not in calls and "serve" not in calls


def test_required_settings_may_come_from_the_file_or_a_flag(calls, tmp_path, capsys):
    for argv, missing in ((["evaluate", "runs/x"], "--data"), (["export", "runs/x"], "--out"),
                          (["batch", "b", "src"], "--output"), (["embed", "r", "--out", "x"], "--images")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{missing} is required" in err and "--config" in err, argv
    f = tmp_path / "e.yaml"
    f.write_text("out: bundle\n")
    assert main(["export", "runs/x", "--config", str(f)]) == 0 and calls["export"][0][1] == "bundle"


def test_zeroshot_class_name_without_words_is_refused_in_flags_and_files(tmp_path, capsys):
    for bad in ("Footwear", "Footwear=", "Footwear=| |"):
        assert main(["zeroshot", str(tmp_path), "--data", str(tmp_path), "--class-name", bad]) == 2
        err = capsys.readouterr().err
        assert "--class-name" in err and repr(bad) in err
    with pytest.raises(cli.ConfigError, match="--class-name"):
        ZeroshotConfig(run="r", class_name={"Footwear": " | "}).validate()


def test_defaults_are_those_users_had():
    assert (EvaluateConfig().batch_size, EvaluateConfig().tta, EvaluateConfig().strict) == (256, None, False)
    assert (PredictConfig().top_k, PredictConfig().batch_size) == (5, 256)
    assert (ExportConfig().format, ExportConfig().quantize) == ("safetensors", None)
    s = ServeConfig()
    assert (s.host, s.port, s.backend, s.threads, s.max_batch_size, s.max_wait_ms, s.max_queue, s.timeout_ms,
            s.max_body_mb, s.busy_wait) == ("127.0.0.1", 8000, "auto", 0, 32, 5.0, 256, 5000.0, 10.0, False)
    b = BatchConfig()
    assert (b.top_k, b.batch_size, b.backend, b.progress) == (5, 64, "torch", True)


def test_allowed_values_agree_with_the_deploy_code():
    from tuneforge.config import BACKENDS, EXPORT_FORMATS
    from tuneforge.deploy import export, predictor
    assert BACKENDS == predictor.BACKENDS and EXPORT_FORMATS == export.FORMATS


def test_cli_imports_tuneforge_at_module_top_only():
    tree = ast.parse((ROOT / "tuneforge" / "cli.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("tuneforge")):
                    pytest.fail(f"cli.py:{inner.lineno}: tuneforge import inside {node.name}()")
