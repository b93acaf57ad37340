"""Settings in groups: a setting the chosen kind of task never reads is refused by name (and the
refused command leaves nothing behind); config.yaml is written once, after every setting is
resolved, so it agrees with report.json; verbs share one definition of a setting."""
from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import save_file

import tuneforge
from tuneforge.config import AlignConfig, FitConfig, PretrainConfig, build
from tuneforge.core.models import create_model
from tuneforge.errors import ConfigError
from tuneforge.tasks import PLUGINS

from test_sequences import QUICK, make_sequences, write_wide


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ["text,label"] + [f"{w} film number {i},{l}" for i in range(20) for w, l in (("great", "pos"), ("awful", "neg"))]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("setting, value", [("tta", True), ("augment", "flip"), ("image_size", 64), ("channels_last", False)])
def test_an_image_setting_on_a_text_fit_is_refused_naming_the_flag_and_the_kind(texts, tmp_path, setting, value):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=rf"--{setting.replace('_', '-')} is not read when fitting text data"):
        tuneforge.fit(data=str(texts), model="gru", out=str(out), **{setting: value}, **QUICK)
    assert not out.exists()  # a refused command leaves nothing behind


def test_lora_on_a_fusion_fit_is_refused(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("image,title,label\na.jpg,a shirt,shirts\n")
    with pytest.raises(ConfigError, match=r"--lora is not read when fitting image\+text data"):
        tuneforge.fit(data=str(table), image_column="image", text_column="title", modalities="image,text", lora=True,
                      out=str(tmp_path / "run"), **QUICK)
    assert not (tmp_path / "run").exists()


def test_an_image_recipe_on_text_is_refused_naming_the_recipe(texts, tmp_path):
    with pytest.raises(ConfigError, match=r"from --recipe fast\) is not read when fitting text data"):
        tuneforge.fit(data=str(texts), recipe="fast", model="gru", out=str(tmp_path / "run"), **QUICK)


def test_a_setting_at_its_default_is_not_refused(texts, tmp_path):
    """A config.yaml of another kind lists every setting at its value: defaults pass."""
    run = tuneforge.fit(data=str(texts), model="gru", tta=False, augment=FitConfig.augment, epochs=1, vocab="word",
                        embed_dim=16, hidden_size=16, num_layers=1, out=str(tmp_path / "run"), **QUICK)
    assert run.report["epochs_run"] == 1


def test_every_fit_setting_is_read_by_some_kind_of_task():
    read = set().union(*(p.reads(FitConfig) for p in PLUGINS.values()))
    assert {f.name for f in FitConfig.offered()} <= read


def test_verbs_share_one_definition_of_a_setting():
    """--ema means one thing with one default rule in fit and pretrain; align's projection width
    is --proj-dim like pretrain's (its old name --embed-dim still works)."""
    assert FitConfig.__dataclass_fields__["ema"].default is None is PretrainConfig.__dataclass_fields__["ema"].default
    assert FitConfig.groups()["ema"] == PretrainConfig.groups()["ema"] == "ema"
    assert build(AlignConfig, {"data": "t.csv", "embed_dim": 64}).proj_dim == 64
    assert "embed_dim" not in {f.name for f in AlignConfig.offered()}


def _config_agrees_with_report(run) -> dict:
    saved = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    report = json.loads((run.run_dir / "report.json").read_text())
    assert saved == report["config"]
    return saved


def test_config_yaml_is_written_after_resolution_regression(tmp_path):
    write_wide(tmp_path / "train.csv", make_sequences(120, 3), regression=True)
    run = tuneforge.fit(data=str(tmp_path / "train.csv"), model="gru", task="regression", sequence_column="values",
                        epochs=1, batch_size=32, embed_dim=16, hidden_size=16, num_layers=1, out=str(tmp_path / "run"),
                        **QUICK)
    assert _config_agrees_with_report(run)["monitor"] == "val_loss"  # regression selects on the loss


def test_config_yaml_is_written_after_resolution_init_and_resume_works(cifar3, tmp_path):
    weights = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("seed-cnn", 3).backbone.state_dict().items()}, str(weights))
    kw = dict(data=str(cifar3), model="seed-cnn", init=str(weights), batch_size=32, cache_dir="", **QUICK)
    run = tuneforge.fit(**kw, epochs=1, out=str(tmp_path / "run"))
    saved = _config_agrees_with_report(run)
    assert saved["init"] == str(weights) and saved["weights"] is None
    resumed = tuneforge.fit(resume=str(run.run_dir), epochs=2, progress=False)  # init + weights would be refused
    assert resumed.report["epochs_run"] == 2
    _config_agrees_with_report(resumed)
