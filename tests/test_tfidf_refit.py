"""--tfidf-refit: the choices made on validation, fitted again on train + validation; the report's
validation scores stay the held-out fit's, test is scored by the refit model the bundle holds."""
import json

import pytest

import tuneforge
from conftest import DATASETS
from tuneforge.errors import ConfigError


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    d = tmp_path_factory.mktemp("refit")
    lines = (DATASETS / "sst2" / "sentiment-train").read_text(encoding="utf-8").splitlines()
    (d / "train.tsv").write_text("\n".join(lines[:1500]) + "\n", encoding="utf-8")
    dev = (DATASETS / "sst2" / "sentiment-dev").read_text(encoding="utf-8").splitlines()
    (d / "test.tsv").write_text("\n".join(dev[:300]) + "\n", encoding="utf-8")
    return d


def _fit(d, out, **kw):
    return tuneforge.fit(data=str(d / "train.tsv"), test=str(d / "test.tsv"), columns="text,label", model="tfidf",
                         out=str(out), **kw)


def test_refit_learns_from_val_and_keeps_the_held_out_val_scores(sst2, tmp_path):
    plain, refit = _fit(sst2, tmp_path / "a"), _fit(sst2, tmp_path / "b", tfidf_refit=True)
    a, b = plain.report, refit.report
    assert b["val"] == a["val"]  # validation is scored by the model that had not seen it
    assert b["refit"]["rows"] == a["data"]["train"] + a["data"]["val"]
    assert b["tfidf"]["train_texts"] == b["refit"]["rows"] and a["tfidf"]["train_texts"] == a["data"]["train"]
    assert b["tfidf"]["C"] == a["tfidf"]["C"] and b["tfidf"].get("nb_weight") == a["tfidf"].get("nb_weight")
    assert b["test"]["accuracy"] > 0.6  # 2 classes: well above chance
    # the bundle is the refit: its predictions give the report's test score
    ev = tuneforge.evaluate(refit.run_dir, str(sst2 / "test.tsv"))  # read with the columns it was trained on
    assert ev["test"]["accuracy"] == pytest.approx(b["test"]["accuracy"])
    vocab = json.loads((refit.run_dir / "model" / "config.json").read_text())["model_args"]["vocab_size"]
    assert vocab >= json.loads((plain.run_dir / "model" / "config.json").read_text())["model_args"]["vocab_size"]


def test_refit_without_validation_is_refused_by_name(sst2, tmp_path):
    with pytest.raises(ConfigError, match="--tfidf-refit"):
        _fit(sst2, tmp_path / "c", tfidf_refit=True, val_fraction=0)
