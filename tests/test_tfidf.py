"""The TF-IDF baseline (core/models/tfidf.py): inference reproduces scikit-learn exactly without
importing it, the weights round-trip without pickle, and a model trained on real text learns."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.svm import LinearSVC

from tuneforge.core.models import tfidf as tfidf_mod
from tuneforge.core.models.tfidf import (Analysis, TfidfFeaturizer, TfidfFit, fit_temperature, fit_tfidf, from_files,
                                         from_sklearn, predict_scores, to_files)
from tuneforge.errors import ConfigError

from conftest import DATASETS


def _read(path, n: int | None = None) -> tuple[list[str], list[str]]:
    if not path.is_file():
        pytest.fail(f"real test data missing: {path} (set TUNEFORGE_DATASETS to the datasets folder)")
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text, _, label = line.rstrip("\n").rpartition("\t")
            texts.append(text)
            labels.append(label)
            if n and len(texts) == n:
                break
    return texts, labels


@pytest.fixture(scope="module")
def sst2() -> dict:
    tr, ytr = _read(DATASETS / "sst2" / "sentiment-train", 3000)
    dv, ydv = _read(DATASETS / "sst2" / "sentiment-dev")
    # odd inputs scikit-learn handles in its own way: runs of white space, tabs, accents, an
    # empty text, one-letter words, repeats
    odd = ["Hello  World\tTAB  x ", "", "a", "C'est l'été déjà — ÉCOLE über", "ab ab ab ab"]
    return {"train": tr, "ytrain": np.array(ytr, dtype=int), "dev": dv + odd,
            "ydev": np.array(ydv + ["0"] * len(odd), dtype=int)}


@pytest.fixture(scope="module")
def tnews() -> dict:
    tr, ytr = _read(DATASETS / "tnews" / "train.tsv", 6000)
    dv, ydv = _read(DATASETS / "tnews" / "dev.tsv", 1500)
    classes = sorted(set(ytr))
    ids = {c: i for i, c in enumerate(classes)}
    return {"train": tr, "ytrain": np.array([ids[c] for c in ytr]), "dev": dv,
            "ydev": np.array([ids.get(c, -1) for c in ydv]), "classes": classes}


def _dense(fit: TfidfFit, texts: list[str]) -> np.ndarray:
    """The featurizer's output as scikit-learn's matrix: tf * idf, each row L2-normalised."""
    idx, offsets, tf = fit.featurizer.batch(texts)
    indptr = np.append(offsets.numpy(), len(idx))
    X = sparse.csr_matrix((tf.numpy() * fit.idf[idx.numpy()], idx.numpy(), indptr),
                          shape=(len(texts), fit.featurizer.size)).toarray()
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms == 0, 1, norms)


@pytest.mark.parametrize("data,analyzer,ngrams", [
    ("sst2", "word", (1, 2)), ("sst2", "word", (2, 3)), ("sst2", "char_wb", (1, 3)), ("sst2", "char", (2, 4)),
    ("tnews", "char", (1, 3)), ("tnews", "char_wb", (1, 4)), ("tnews", "word", (1, 2))])
def test_featurizer_reproduces_sklearn_transform(data, analyzer, ngrams, request):
    d = request.getfixturevalue(data)
    vec = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True, min_df=2).fit(d["train"][:2000])
    fit = from_sklearn(vec, LinearSVC().fit(vec.transform(d["train"][:2000]), d["ytrain"][:2000]), int(d["ytrain"].max()) + 1)
    texts = d["dev"][:600] + d["dev"][-5:]
    want = vec.transform(texts).toarray()
    got = _dense(fit, texts)
    # enough texts with known terms for a real comparison (word n-grams of Chinese, which has no
    # spaces, hit in only ~7% of texts: why "auto" uses characters there)
    assert want.any(axis=1).sum() >= 30
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_word_plus_char_terms_are_the_two_sklearn_analyzers_concatenated(sst2):
    a = Analysis("word+char_wb", (1, 2), (2, 4))
    word = TfidfVectorizer(ngram_range=(1, 2)).build_analyzer()
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).build_analyzer()
    for t in sst2["dev"][:200] + sst2["dev"][-5:]:
        assert a.terms(t) == word(t) + char(t)


@pytest.mark.parametrize("kind", ["linearsvc", "logreg"])
def test_module_logits_equal_sklearn_decision_function(tnews, sst2, kind):
    for d in (tnews, sst2):
        k = int(d["ytrain"].max()) + 1
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
        X = vec.fit_transform(d["train"][:2000])
        clf = (LinearSVC(C=0.5) if kind == "linearsvc" else LogisticRegression(max_iter=200)).fit(X, d["ytrain"][:2000])
        fit = from_sklearn(vec, clf, k)
        texts = d["dev"][:500]
        got = predict_scores(fit, texts)
        want = clf.decision_function(vec.transform(texts))
        if k == 2:  # one score s for two classes, as the logit pair [-s/2, s/2]
            np.testing.assert_allclose(got[:, 1] - got[:, 0], want, atol=1e-4)
            np.testing.assert_allclose(got.sum(1), 0, atol=1e-5)
        else:
            np.testing.assert_allclose(got, want, atol=1e-4)
        assert (got.argmax(1) == clf.predict(vec.transform(texts))).all()
        if kind == "logreg":  # softmax of the logits is scikit-learn's own probability
            with torch.no_grad():
                p = fit.module()(*fit.featurizer.batch(texts)).softmax(1).numpy()
            np.testing.assert_allclose(p, clf.predict_proba(vec.transform(texts)), atol=1e-4)


def test_round_trip_through_json_and_safetensors_without_pickle(tnews, tmp_path):
    fit = fit_tfidf(tnews["train"][:3000], tnews["ytrain"][:3000], len(tnews["classes"]),
                    val_texts=tnews["train"][3000:4000], val_labels=tnews["ytrain"][3000:4000])
    meta, tensors = to_files(fit)
    (tmp_path / "tfidf.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    raw = (tmp_path / "model.safetensors").read_bytes()
    assert raw[8:10] == b'{"' and not raw.startswith((b"\x80", b"PK"))  # a safetensors header, no pickle or torch zip
    back = from_files(json.loads((tmp_path / "tfidf.json").read_text(encoding="utf-8")),
                      load_file(str(tmp_path / "model.safetensors")))
    texts = tnews["dev"][:300]
    with torch.no_grad():
        a = fit.module()(*fit.featurizer.batch(texts))
        b = back.module()(*back.featurizer.batch(texts))
    assert torch.equal(a, b)
    assert back.temperature == pytest.approx(fit.temperature) and back.info == json.loads(json.dumps(fit.info))
    # the featurizer alone, as a bundle's tokenizer file
    name = fit.featurizer.save(tmp_path)
    assert TfidfFeaturizer.load(tmp_path / name).vocabulary == fit.featurizer.vocabulary
    broken = dict(meta, vocabulary={"x": 0, "y": 5})
    with pytest.raises(ConfigError, match="damaged vocabulary"):
        from_files(broken, tensors)


def test_auto_analyzer_reads_the_script_and_says_why(tnews, sst2, monkeypatch):
    zh = fit_tfidf(tnews["train"][:1000], tnews["ytrain"][:1000], len(tnews["classes"]))
    en = fit_tfidf(sst2["train"][:1000], sst2["ytrain"][:1000], 2)
    assert (zh.info["analyzer"], zh.info["ngram_range"], zh.info["char_ngram_range"]) == ("word+char", [1, 2], [1, 3])
    assert zh.info["segmenter"] == "jieba" and "CJK" in zh.info["why"] and "jieba" in zh.info["why"]
    assert zh.info["min_df"] == 1 and en.info["min_df"] == 2
    assert en.info["analyzer"] == "word" and en.info["ngram_range"] == [1, 2] and "space-separated" in en.info["why"]
    assert en.info["segmenter"] is None
    # without jieba: character n-grams, and the reason says what installing it would bring
    monkeypatch.setattr(tfidf_mod, "jieba_available", lambda: False)
    zh = fit_tfidf(tnews["train"][:1000], tnews["ytrain"][:1000], len(tnews["classes"]))
    assert zh.info["analyzer"] == "char_wb" and zh.info["segmenter"] is None and "install jieba" in zh.info["why"]


def test_jieba_word_plus_char_terms_are_sklearns_analyzers_over_the_segmented_text(tnews, sst2):
    import jieba
    a = Analysis("word+char", (1, 2), (1, 3), segmenter="jieba")
    word = TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\S+").build_analyzer()
    char = TfidfVectorizer(analyzer="char", ngram_range=(1, 3)).build_analyzer()
    texts = tnews["dev"][:200] + ["Apple  发布 iPhone，价格？", "", "   "]
    for t in texts:
        assert a.terms(t) == word(" ".join(jieba.lcut(t.lower()))) + char(t)
    assert any(" " in term for term in a.terms(tnews["dev"][0]))  # word bigrams are there


def test_jieba_analysis_predicts_as_sklearn_over_the_same_terms(tnews):
    import jieba
    fit = fit_tfidf(tnews["train"][:3000], tnews["ytrain"][:3000], len(tnews["classes"]), classifier="linearsvc")
    assert fit.featurizer.analysis.segmenter == "jieba"
    assert fit.featurizer.analysis.segmenter_version == jieba.__version__
    word = TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\S+").build_analyzer()
    char = TfidfVectorizer(analyzer="char", ngram_range=(1, 3)).build_analyzer()
    vec = TfidfVectorizer(analyzer=lambda t: word(" ".join(jieba.lcut(t.lower()))) + char(t), sublinear_tf=True,
                          min_df=1)
    clf = LinearSVC(C=0.5, random_state=0).fit(vec.fit_transform(tnews["train"][:3000]), tnews["ytrain"][:3000])
    assert vec.vocabulary_ == fit.featurizer.vocabulary
    texts = tnews["dev"][:400]
    np.testing.assert_allclose(predict_scores(fit, texts), clf.decision_function(vec.transform(texts)), atol=1e-4)


def test_svm_plus_nb_is_one_linear_layer_with_its_nb_share_chosen_on_validation(tnews, sst2):
    for d, k in ((tnews, len(tnews["classes"])), (sst2, 2)):
        tr, y = d["train"][:2500], d["ytrain"][:2500]
        va, yv = d["train"][2500:3000], d["ytrain"][2500:3000]
        fit = fit_tfidf(tr, y, k, analyzer="char", ngrams=(1, 3), min_df=2, val_texts=va, val_labels=yv)
        assert fit.classifier == "svm+nb"  # auto, with validation texts
        w = fit.info["nb_weight"]
        assert set(fit.info["nb_val_accuracy"]) == {"0", "0.3", "0.5", "1"}
        assert fit.info["nb_val_accuracy"][f"{w:g}"] == max(fit.info["nb_val_accuracy"].values())
        # the same sum from scikit-learn's own SVM and complement naive Bayes
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
        X = vec.fit_transform(tr)
        svm, nb = LinearSVC(C=0.5, random_state=0).fit(X, y), ComplementNB(alpha=0.1).fit(X, y)

        def both(X):
            a = svm.decision_function(X)
            a = np.stack([-a / 2, a / 2], 1) if a.ndim == 1 else a
            b = nb.predict_joint_log_proba(X)
            return a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        a, b = both(X)
        sa, sb = a.std(), b.std()
        a, b = both(vec.transform(d["dev"][:400]))
        got = predict_scores(fit, d["dev"][:400])
        np.testing.assert_allclose(got - got.mean(1, keepdims=True), a / sa + w * b / sb, atol=1e-4)
    # without validation texts auto is the SVM alone; svm+nb asked for takes the measured 0.3
    assert fit_tfidf(tr, y, 2, analyzer="word").classifier == "linearsvc"
    fit = fit_tfidf(tr, y, 2, analyzer="word", classifier="svm+nb")
    assert fit.info["nb_weight"] == 0.3 and "no validation" in fit.info["nb_choice"]
    # a refit keeps the share chosen before, validation texts or not
    fit = fit_tfidf(tr, y, 2, analyzer="word", classifier="svm+nb", nb_weight=1.0, val_texts=va, val_labels=yv)
    assert fit.info["nb_weight"] == 1.0 and fit.info["nb_choice"] == "1, as given" and fit.info["nb_val_accuracy"] == {}


def test_jieba_vocabulary_round_trips_and_says_when_jieba_is_missing_or_another_version(tnews, monkeypatch, caplog):
    fit = fit_tfidf(tnews["train"][:800], tnews["ytrain"][:800], len(tnews["classes"]))
    d = json.loads(json.dumps(fit.featurizer.to_dict(), ensure_ascii=False))
    assert d["segmenter"] == "jieba" and d["analyzer"] == "word+char"
    back = TfidfFeaturizer.from_dict(d)
    for t in tnews["dev"][:50]:
        assert [a.tolist() for a in back.encode(t)] == [a.tolist() for a in fit.featurizer.encode(t)]
    with caplog.at_level("WARNING", logger="tuneforge"):
        TfidfFeaturizer.from_dict(dict(d, segmenter_version="0.1"), "v.json")
    assert "v.json: words were segmented with jieba 0.1" in caplog.text
    monkeypatch.setitem(sys.modules, "jieba", None)  # as if not installed
    with pytest.raises(ConfigError, match="pip install jieba"):
        TfidfFeaturizer.from_dict(d)


def test_trained_on_a_small_real_subset_it_beats_chance_by_a_margin(tnews, sst2):
    fit = fit_tfidf(sst2["train"], sst2["ytrain"], 2)
    n = 872  # the real dev texts, not the odd ones appended
    acc = (predict_scores(fit, sst2["dev"][:n]).argmax(1) == sst2["ydev"][:n]).mean()
    assert acc > 0.68, acc  # chance 0.51; 3,000 sentences give about 0.72
    fit = fit_tfidf(tnews["train"], tnews["ytrain"], len(tnews["classes"]))
    known = tnews["ydev"] >= 0
    pred = predict_scores(fit, tnews["dev"]).argmax(1)
    acc = (pred[known] == tnews["ydev"][known]).mean()
    majority = np.bincount(tnews["ydev"][known]).max() / known.sum()
    assert acc > majority + 0.2, (acc, majority)  # majority class ~0.11; 6,000 texts give about 0.45


def test_temperature_makes_svm_probabilities_more_likely_on_held_out_texts(sst2):
    fit = fit_tfidf(sst2["train"][:2000], sst2["ytrain"][:2000], 2, analyzer="word",
                    val_texts=sst2["train"][2000:3000], val_labels=sst2["ytrain"][2000:3000])
    scores = predict_scores(fit, sst2["dev"][:872])
    y = sst2["ydev"][:872]

    def nll(t: float) -> float:
        z = torch.from_numpy(scores / t)
        return float(torch.nn.functional.cross_entropy(z, torch.from_numpy(y)))
    assert fit.temperature != 1.0 and "fitted on 1000" in fit.info["calibration"]
    assert nll(fit.temperature) < nll(1.0)
    # the search finds the minimum: nearby temperatures are no better on the scores it was fitted on
    t = fit_temperature(scores, y)
    assert nll(t) <= min(nll(t * 0.9), nll(t * 1.1))


def test_bad_settings_are_refused_by_name(sst2):
    with pytest.raises(ConfigError, match="analyzer 'chars'"):
        fit_tfidf(sst2["train"][:100], sst2["ytrain"][:100], 2, analyzer="chars")
    with pytest.raises(ConfigError, match="classifier 'svm'.*svm\\+nb"):
        fit_tfidf(sst2["train"][:100], sst2["ytrain"][:100], 2, classifier="svm")
    with pytest.raises(ConfigError, match="labels must be class ids 0..1"):
        fit_tfidf(sst2["train"][:100], sst2["ytrain"][:100] + 1, 2)
    vec = TfidfVectorizer(stop_words="english").fit(sst2["train"][:100])
    with pytest.raises(ConfigError, match="sublinear_tf=False.*stop_words='english'"):
        from_sklearn(vec, LinearSVC().fit(vec.transform(sst2["train"][:100]), sst2["ytrain"][:100]), 2)


def test_inference_side_imports_no_sklearn():
    code = ("import sys, tuneforge.core.models.tfidf as t; "
            "f = t.TfidfFeaturizer({'good': 0, 'film': 1, 'good film': 2}, t.Analysis('word', (1, 2))); "
            "m = t.TfidfClassifier(3, 2); m(*f.batch(['A good film', 'nothing'])); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_texts_without_known_terms_get_the_bias_and_the_graph_exports_to_onnx(sst2, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    fit = fit_tfidf(sst2["train"][:500], sst2["ytrain"][:500], 2, analyzer="word",
                    val_texts=sst2["train"][500:800], val_labels=sst2["ytrain"][500:800])
    m = fit.module()
    with torch.no_grad():
        empty = m(*fit.featurizer.batch(["", "qqqq zzzz"]))  # nothing known: the zero vector, as in scikit-learn
    np.testing.assert_allclose(empty.numpy(), np.tile(fit.bias / fit.temperature, (2, 1)), rtol=1e-6)
    path = tmp_path / "tfidf.onnx"
    torch.onnx.export(m, fit.featurizer.batch(sst2["dev"][:4]), str(path), dynamo=False, opset_version=17,
                      input_names=["indices", "offsets", "tf"], output_names=["logits"],
                      dynamic_axes={"indices": {0: "terms"}, "offsets": {0: "batch"}, "tf": {0: "terms"},
                                    "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path))
    for texts in (sst2["dev"][:64], sst2["dev"][-5:], ["", "a fine film"]):
        idx, offsets, tf = fit.featurizer.batch(texts)
        got = session.run(None, {"indices": idx.numpy(), "offsets": offsets.numpy(), "tf": tf.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, m(idx, offsets, tf).numpy(), atol=1e-5)
