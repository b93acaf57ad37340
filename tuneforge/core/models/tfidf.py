"""The classic text baseline: TF-IDF n-grams + a linear classifier, trained in seconds
(`--model tfidf`, registered here as a `classic` model; fitted by tasks/text/classic.py).

Two halves that share nothing but plain data:

- Training (`fit_tfidf`) uses scikit-learn (imported inside the function: it is heavy and
  optional at inference): a `TfidfVectorizer` (sublinear tf, smooth idf, L2 norm) and a
  `LinearSVC` or `LogisticRegression`, or "svm+nb": the SVM plus a complement naive Bayes over
  the same features, both linear, summed into one linear map with the NB share chosen on
  validation. It returns a `TfidfFit`: vocabulary, idf, analyzer settings, linear weights and
  bias, a softmax temperature, and an `info` dict saying what was chosen and why.
- Chinese (and other CJK) text has no spaces between words: "auto" there takes jieba's word
  segmentation (optional package) for word 1-2-grams plus character 1-3-grams across words
  ("word+char"), or character n-grams alone when jieba is not installed.
- Inference needs no scikit-learn. `TfidfFeaturizer` turns a text into the column ids of its
  known terms and their sublinear term frequencies (1 + log count), exactly as scikit-learn
  analyses it (same token regex, lowercasing, word n-grams joined by a space, char / char_wb
  n-grams; jieba's words when the vocabulary was built with them); it plays the tokenizer's part and carries no learned number but the vocabulary.
  `TfidfClassifier` (a torch module) holds idf, the weights and the temperature as tensors:
  tf x idf, the L2 norm and the linear map happen in its forward, on an EmbeddingBag-style
  batch (indices, offsets, tf), so a batch costs memory in proportion to its terms, not to the
  vocabulary, and the whole numeric part is one graph (safetensors weights, ONNX-exportable).

Probabilities: a linear SVM's margins are not log-odds. The logits are the decision scores
divided by a temperature fitted (by likelihood) on held-out scores when a validation set is given,
so that softmax(logits) is roughly calibrated; argmax and ranking are unchanged. Without
held-out texts the temperature stays 1 and `info` says that probabilities are uncalibrated.

Serialisation without pickle: `to_files(fit)` -> (JSON-able dict with the vocabulary and
settings, dict of tensors for safetensors); `from_files` reverses it.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...errors import ConfigError, DataError
from .registry import ModelSpec, register

log = logging.getLogger("tuneforge")

FORMAT = "tuneforge-tfidf"
FORMAT_VERSION = 1
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default: words of two or more word characters
ANALYZERS = ("word", "char", "char_wb", "word+char_wb", "word+char")
CLASSIFIERS = ("linearsvc", "logreg", "svm+nb")
# svm+nb: the weights of the naive-Bayes scores tried on validation (0 = the SVM alone; measured:
# TNEWS chooses 0.3 (+0.6 point), SST-2 chooses 0, where any NB share costs 0.5-1.5 points)
NB_WEIGHTS = (0.0, 0.3, 0.5, 1.0)
NB_ALPHA = 0.1
SEGMENTERS = ("jieba",)
VOCAB_FILE = "tfidf_vocab.json"
# The share of CJK characters (among non-space characters) above which "auto" uses character
# n-grams: such scripts put no spaces between words, so \w\w+ would return whole clauses.
CJK_SHARE = 0.3
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f]")
_WHITE_SPACES = re.compile(r"\s\s+")  # scikit-learn collapses runs of white space before char n-grams
DEFAULT_NGRAMS = {"word": (1, 2), "char": (1, 3), "char_wb": (1, 3)}
DEFAULT_CHAR_NGRAMS = {"word+char_wb": (2, 4), "word+char": (1, 3)}


# ---------------------------------------------------------------- analysis (no scikit-learn)


def word_ngrams(tokens: list[str], lo: int, hi: int) -> list[str]:
    """Word n-grams joined by one space, in scikit-learn's order (all unigrams first)."""
    out = list(tokens) if lo == 1 else []
    for n in range(max(lo, 2), min(hi, len(tokens)) + 1):
        out.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return out


def char_ngrams(text: str, lo: int, hi: int) -> list[str]:
    """scikit-learn's `char` analyzer: n-grams across word boundaries, white-space runs collapsed."""
    text = _WHITE_SPACES.sub(" ", text)
    out = list(text) if lo == 1 else []
    for n in range(max(lo, 2), min(hi, len(text)) + 1):
        out.extend(text[i:i + n] for i in range(len(text) - n + 1))
    return out


def char_wb_ngrams(text: str, lo: int, hi: int) -> list[str]:
    """scikit-learn's `char_wb` analyzer: n-grams inside each space-padded word; a word shorter
    than n counts once, as itself padded (the loop is scikit-learn's, kept literally)."""
    out: list[str] = []
    for w in _WHITE_SPACES.sub(" ", text).split():
        w = " " + w + " "
        for n in range(lo, hi + 1):
            offset = 0
            out.append(w[offset:offset + n])
            while offset + n < len(w):
                offset += 1
                out.append(w[offset:offset + n])
            if offset == 0:
                break
    return out


def _jieba():
    """The jieba module (optional: `pip install 'tuneforge[cjk]'`), quiet; a ConfigError naming
    the package when it is missing."""
    try:
        import jieba
    except ImportError:
        raise ConfigError("tfidf: this analysis segments Chinese words with jieba, which is not installed "
                          "(pip install jieba, or 'tuneforge[cjk]')") from None
    jieba.setLogLevel(logging.WARNING)  # else it prints its dictionary loading on every first use
    return jieba


def jieba_available() -> bool:
    try:
        _jieba()
    except ConfigError:
        return False
    return True


def segment(text: str, segmenter: str) -> list[str]:
    """The words of a text without spaces between words (Chinese): jieba's segmentation (its
    accurate mode, with its own dictionary), white space dropped; punctuation stays a word."""
    return " ".join(_jieba().lcut(text)).split()


def cjk_share(texts: Iterable[str]) -> float:
    """The share of CJK (Chinese, Japanese, Korean) characters among the non-space characters."""
    cjk = total = 0
    for t in texts:
        cjk += len(_CJK.findall(t))
        total += len(t) - t.count(" ")
    return cjk / total if total else 0.0


@dataclass(frozen=True)
class Analysis:
    """How a text becomes terms (scikit-learn's settings of the same names). For "word+char_wb"
    `ngram_range` is the word range and `char_ngram_range` the char_wb one; both kinds of terms
    share one vocabulary and one L2 norm; "word+char" likewise with `char` n-grams (across word
    boundaries: what text without spaces needs). `segmenter` ("jieba"): words come from a
    Chinese word segmenter instead of `token_pattern`; `segmenter_version` records the version
    the vocabulary was built with (its dictionary decides the words)."""
    analyzer: str = "word"
    ngram_range: tuple[int, int] = (1, 2)
    char_ngram_range: tuple[int, int] | None = None
    lowercase: bool = True
    token_pattern: str = TOKEN_PATTERN
    segmenter: str | None = None
    segmenter_version: str | None = None

    def __post_init__(self):
        if self.analyzer not in ANALYZERS:
            raise ConfigError(f"tfidf analyzer {self.analyzer!r}: choose one of {', '.join(ANALYZERS)} or auto")
        for r in (self.ngram_range, self.char_ngram_range):
            if r is not None and not (1 <= r[0] <= r[1]):
                raise ConfigError(f"tfidf n-gram range {tuple(r)}: need 1 <= min <= max")
        if "+" in self.analyzer and self.char_ngram_range is None:
            raise ConfigError(f"tfidf analyzer {self.analyzer} needs char_ngram_range")
        if self.segmenter not in (None, *SEGMENTERS):
            raise ConfigError(f"tfidf segmenter {self.segmenter!r}: choose one of {', '.join(SEGMENTERS)} or none")

    def terms(self, text: str) -> list[str]:
        """The text's terms, with repeats, as scikit-learn's analyzer returns them."""
        if self.lowercase:
            text = text.lower()
        if self.analyzer == "char":
            return char_ngrams(text, *self.ngram_range)
        if self.analyzer == "char_wb":
            return char_wb_ngrams(text, *self.ngram_range)
        tokens = segment(text, self.segmenter) if self.segmenter else re.findall(self.token_pattern, text)
        words = word_ngrams(tokens, *self.ngram_range)
        if self.analyzer == "word+char_wb":
            words += char_wb_ngrams(text, *self.char_ngram_range)
        elif self.analyzer == "word+char":
            words += char_ngrams(text, *self.char_ngram_range)
        return words

    def to_dict(self) -> dict:
        return {"analyzer": self.analyzer, "ngram_range": list(self.ngram_range),
                "char_ngram_range": list(self.char_ngram_range) if self.char_ngram_range else None,
                "lowercase": self.lowercase, "token_pattern": self.token_pattern,
                **({"segmenter": self.segmenter, "segmenter_version": self.segmenter_version} if self.segmenter else {})}

    @classmethod
    def from_dict(cls, d: dict) -> Analysis:
        return cls(d["analyzer"], tuple(d["ngram_range"]),
                   tuple(d["char_ngram_range"]) if d.get("char_ngram_range") else None,
                   bool(d.get("lowercase", True)), d.get("token_pattern", TOKEN_PATTERN), d.get("segmenter"),
                   d.get("segmenter_version"))


class TfidfFeaturizer:
    """Text -> (column ids of its known terms, sublinear tf = 1 + log count), ids ascending.
    Unknown terms are dropped, as scikit-learn's transform drops them."""

    def __init__(self, vocabulary: dict[str, int], analysis: Analysis):
        self.vocabulary = vocabulary
        self.analysis = analysis

    @property
    def size(self) -> int:
        return len(self.vocabulary)

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(int64 column ids, float32 sublinear tf) of one text."""
        if not isinstance(text, str):
            raise TypeError(f"tfidf featurizer: expected a text (str), got {type(text).__name__}")
        vocab = self.vocabulary
        counts = Counter(j for j in map(vocab.get, self.analysis.terms(text)) if j is not None)
        idx = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
        tf = np.array([1.0 + math.log(counts[j]) for j in idx.tolist()], dtype=np.float32)
        return idx, tf

    def batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices, offsets, tf): EmbeddingBag's flat layout, text i owning
        indices[offsets[i]:offsets[i+1]]."""
        return collate([self.encode(t) for t in texts])

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **self.analysis.to_dict(),
                "vocabulary": self.vocabulary}

    @classmethod
    def from_dict(cls, d: dict, where: str = "tfidf vocabulary") -> TfidfFeaturizer:
        if d.get("format") != FORMAT or not isinstance(d.get("vocabulary"), dict):
            raise ConfigError(f"{where}: not a {FORMAT} vocabulary")
        if d.get("format_version", 0) > FORMAT_VERSION:
            raise ConfigError(f"{where}: format {d['format_version']} is newer than this tuneforge understands")
        vocab = d["vocabulary"]
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ConfigError(f"{where}: damaged vocabulary (columns are not 0..{len(vocab) - 1})")
        analysis = Analysis.from_dict(d)
        if analysis.segmenter == "jieba":
            version = getattr(_jieba(), "__version__", None)
            if version != analysis.segmenter_version:
                log.warning("%s: words were segmented with jieba %s, this is jieba %s: a different dictionary "
                            "can split some texts differently", where, analysis.segmenter_version, version)
        return cls(vocab, analysis)

    def save(self, folder: str | Path) -> str:
        """Write the vocabulary and settings as JSON into `folder`; returns the file name (the
        bundle's tokenizer protocol)."""
        (Path(folder) / VOCAB_FILE).write_text(json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")),
                                               encoding="utf-8")
        return VOCAB_FILE

    @classmethod
    def load(cls, path: str | Path) -> TfidfFeaturizer:
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: cannot read the tfidf vocabulary ({e})") from None
        return cls.from_dict(doc, str(path))


def collate(encoded: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-text (ids, tf) pairs -> one (indices, offsets, tf) batch."""
    lengths = [len(i) for i, _ in encoded]
    offsets = np.zeros(len(encoded), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    idx = np.concatenate([i for i, _ in encoded]) if encoded else np.zeros(0, np.int64)
    tf = np.concatenate([t for _, t in encoded]) if encoded else np.zeros(0, np.float32)
    return torch.from_numpy(idx), torch.from_numpy(offsets), torch.from_numpy(tf)


# ---------------------------------------------------------------- the module


class TfidfClassifier(nn.Module):
    """logits = (W . l2normalise(tf * idf) + b) / temperature, for bags of term ids.

    `linear` is an EmbeddingBag(V, K, mode="sum"): with the tf-idf values as per-sample
    weights it is exactly a linear layer applied to the sparse vector, without the vector."""

    def __init__(self, vocab_size: int, num_classes: int):
        super().__init__()
        self.linear = nn.EmbeddingBag(vocab_size, num_classes, mode="sum")
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.register_buffer("idf", torch.ones(vocab_size))
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, tf: torch.Tensor) -> torch.Tensor:
        w = tf * self.idf[indices]
        # per-text squared norms: every term looks up the same 1x1 table of ones, weighted by w^2
        ones = torch.ones(1, 1, dtype=w.dtype, device=w.device)
        sq = F.embedding_bag(torch.zeros_like(indices), ones, offsets, mode="sum", per_sample_weights=w * w)
        scores = self.linear(indices, offsets, per_sample_weights=w)
        # a text with no known term is the zero vector (scikit-learn's normalize leaves it so)
        scores = scores / sq.sqrt().clamp_min(1e-12)
        return (scores + self.bias) / self.temperature

    def scores(self, indices: torch.Tensor, offsets: torch.Tensor, tf: torch.Tensor) -> torch.Tensor:
        """The classifier's raw decision scores (scikit-learn's decision_function per class)."""
        return self(indices, offsets, tf) * self.temperature


def _build(num_classes: int, vocab_size: int) -> TfidfClassifier:
    return TfidfClassifier(vocab_size, num_classes)


register("tfidf", ModelSpec(_build, 0, "", "classic: TF-IDF n-grams + linear SVM, no weights needed, trains in seconds",
                            "text", classic=True))


# ---------------------------------------------------------------- a trained model, as plain data


@dataclass
class TfidfFit:
    """A trained TF-IDF model as plain data: everything inference needs, nothing pickled."""
    featurizer: TfidfFeaturizer
    idf: np.ndarray          # (V,) float64
    weight: np.ndarray       # (K, V) float32: logits = weight @ x + bias, x the L2-normalised tf-idf
    bias: np.ndarray         # (K,)
    temperature: float = 1.0
    classifier: str = "linearsvc"
    C: float = 1.0
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def module(self) -> TfidfClassifier:
        """The torch module with these weights, in eval mode."""
        m = TfidfClassifier(self.featurizer.size, self.num_classes)
        m.load_state_dict(tensors_of(self))
        return m.eval()


def tensors_of(fit: TfidfFit) -> dict[str, torch.Tensor]:
    """The module's state dict (what goes into model.safetensors)."""
    return {"linear.weight": torch.from_numpy(np.ascontiguousarray(fit.weight.T, dtype=np.float32)),
            "bias": torch.from_numpy(np.asarray(fit.bias, dtype=np.float32)),
            "idf": torch.from_numpy(np.asarray(fit.idf, dtype=np.float32)),
            "temperature": torch.tensor(float(fit.temperature))}


def to_files(fit: TfidfFit) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON-able dict: settings, vocabulary, classifier and info; tensors for safetensors)."""
    meta = {**fit.featurizer.to_dict(), "num_classes": fit.num_classes, "classifier": fit.classifier,
            "C": fit.C, "info": fit.info}
    return meta, tensors_of(fit)


def from_files(meta: dict, tensors: dict[str, torch.Tensor]) -> TfidfFit:
    """The inverse of `to_files` (e.g. from json.load and safetensors' load_file)."""
    featurizer = TfidfFeaturizer.from_dict(meta)
    need = {"linear.weight", "bias", "idf", "temperature"}
    if not need <= set(tensors):
        raise ConfigError(f"tfidf weights: missing {', '.join(sorted(need - set(tensors)))}")
    weight = tensors["linear.weight"].float().numpy().T
    if weight.shape != (meta["num_classes"], featurizer.size):
        raise ConfigError(f"tfidf weights: shape {tuple(weight.shape)} does not fit {meta['num_classes']} classes "
                          f"x {featurizer.size} terms")
    return TfidfFit(featurizer, tensors["idf"].double().numpy(), np.ascontiguousarray(weight),
                    tensors["bias"].float().numpy(), float(tensors["temperature"]), meta.get("classifier", "linearsvc"),
                    float(meta.get("C", 1.0)), dict(meta.get("info") or {}))


# ---------------------------------------------------------------- training (scikit-learn)


def choose_analysis(texts: Sequence[str], analyzer: str = "auto",
                    ngrams: tuple[int, int] | None = None,
                    char_ngrams: tuple[int, int] | None = None) -> tuple[Analysis, str]:
    """The analysis to use and a plain-words reason. "auto": when CJK characters make up more
    than CJK_SHARE of the training text, jieba's words (1-2-grams) + character 1-3-grams if jieba
    is installed, else character 1-3-grams (char_wb); otherwise word 1-2-grams. Word analyzers
    on CJK text segment with jieba when it is installed (\\w\\w+ would return whole clauses)."""
    if analyzer not in (*ANALYZERS, "auto"):
        raise ConfigError(f"tfidf analyzer {analyzer!r}: choose one of auto, {', '.join(ANALYZERS)}")
    sample = texts if len(texts) <= 20000 else texts[:: max(1, len(texts) // 20000)]
    share = cjk_share(sample)
    cjk = share > CJK_SHARE
    segmenter = "jieba" if cjk and analyzer.startswith(("word", "auto")) and jieba_available() else None
    if analyzer == "auto":
        if cjk:
            analyzer = "word+char" if segmenter else "char_wb"
            why = (f"{share:.0%} of the characters are CJK (> {CJK_SHARE:.0%}): words are not space-separated, so "
                   + ("jieba's words and character n-grams" if segmenter else
                      "character n-grams (install jieba for its words too: +1 point on TNEWS)"))
        else:
            analyzer = "word"
            why = f"{share:.0%} of the characters are CJK (<= {CJK_SHARE:.0%}): space-separated words, so word n-grams"
    else:
        why = f"analyzer {analyzer} as asked" + (", words segmented by jieba (CJK text)" if segmenter else "")
        if cjk and analyzer.startswith("word") and not segmenter:
            log.warning("tfidf: %.0f%% of the characters are CJK but jieba is not installed: word n-grams will be "
                        "whole clauses (pip install jieba, or use --tfidf-analyzer char)", 100 * share)
    version = getattr(_jieba(), "__version__", None) if segmenter else None
    if "+" in analyzer:
        return Analysis(analyzer, tuple(ngrams or (1, 2)), tuple(char_ngrams or DEFAULT_CHAR_NGRAMS[analyzer]),
                        segmenter=segmenter, segmenter_version=version), why
    return Analysis(analyzer, tuple(ngrams or DEFAULT_NGRAMS[analyzer]),
                    segmenter=segmenter if analyzer == "word" else None,
                    segmenter_version=version if analyzer == "word" else None), why


def _vectorizer(analysis: Analysis, min_df: int, max_features: int | None):
    from sklearn.feature_extraction.text import TfidfVectorizer
    common = {"sublinear_tf": True, "norm": "l2", "min_df": min_df, "max_features": max_features,
              "dtype": np.float64}
    if "+" in analysis.analyzer or analysis.segmenter:
        # one vocabulary and one norm over both kinds of terms: the featurizer's own analysis
        # (its word and char_wb halves are each checked against scikit-learn's in the tests)
        return TfidfVectorizer(analyzer=analysis.terms, **common)
    return TfidfVectorizer(analyzer=analysis.analyzer, ngram_range=analysis.ngram_range,
                           lowercase=analysis.lowercase, token_pattern=analysis.token_pattern, **common)


def _classifier(kind: str, C: float, class_weight: str | None, seed: int):
    if kind == "linearsvc":
        from sklearn.svm import LinearSVC
        return LinearSVC(C=C, class_weight=class_weight, random_state=seed)
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=C, class_weight=class_weight, max_iter=1000, random_state=seed)


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the cross-entropy of softmax(scores / T) (a 1-D search on log T)."""
    def nll(log_t: float) -> float:
        z = scores / math.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(z)), labels]))
    lo, hi = math.log(1e-3), math.log(1e3)
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden section: NLL is unimodal in log T for fixed scores
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(a) < nll(b):
            hi = b
        else:
            lo = a
    return math.exp((lo + hi) / 2)


def _class_rows(clf, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, V) weights and (K,) biases, row k for class id k. scikit-learn keeps one row for two
    classes (score > 0 means the second); as two logits [-s/2, s/2] the softmax is sigmoid(s),
    the same probability and argmax. A class absent from training gets a bias it never wins with."""
    coef, intercept = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    w = np.zeros((num_classes, coef.shape[1]), dtype=np.float32)
    b = np.full(num_classes, -1e4, dtype=np.float32)
    w[clf.classes_], b[clf.classes_] = coef, intercept
    return w, b


def _centred_std(scores: np.ndarray) -> float:
    """The spread of scores around each text's mean score (a per-text shift changes no softmax)."""
    return float((scores - scores.mean(1, keepdims=True)).std()) or 1.0


def _svm_plus_nb(X, y: np.ndarray, fit: TfidfFit, Xval, yval: np.ndarray | None,
                 fixed: float | None = None) -> tuple[float, dict]:
    """Fold a complement naive Bayes over the same features into the SVM's linear map:
    weight = W_svm / s_svm + w * W_nb / s_nb (each scaled by its spread on the training texts),
    w chosen on validation among NB_WEIGHTS (0 keeps the SVM alone); 0.3 without validation;
    `fixed` when given (a refit on more texts with the share an earlier fit chose).
    Both are linear in the same L2-normalised tf-idf vector, so the sum is one linear layer and
    the bundle and the featurizer do not change. Returns (w, info)."""
    from sklearn.naive_bayes import ComplementNB
    nb = ComplementNB(alpha=NB_ALPHA).fit(X, y)
    w_nb = np.zeros_like(fit.weight)
    # centred over the classes it saw: ComplementNB's scores carry no bias, and centring shifts
    # each text's scores by one constant
    w_nb[nb.classes_] = nb.feature_log_prob_ - nb.feature_log_prob_.mean(0)
    present = nb.classes_
    s_svm = _centred_std(np.asarray(X @ fit.weight[present].T) + fit.bias[present])
    s_nb = _centred_std(np.asarray(X @ w_nb[present].T))
    w_svm, b_svm = fit.weight / s_svm, np.where(fit.bias <= -1e4, -1e4, fit.bias / s_svm).astype(np.float32)
    w_nb /= s_nb
    accs = {}
    if fixed is not None:
        weight, tried = float(fixed), f"{fixed:g}, as given"
    elif Xval is None:
        weight, tried = 0.3, "0.3 (no validation texts to choose on)"
    else:
        a, b = np.asarray(Xval @ w_svm.T) + b_svm, np.asarray(Xval @ w_nb.T)
        accs = {w: float(((a + w * b).argmax(1) == yval).mean()) for w in NB_WEIGHTS}
        weight = max(NB_WEIGHTS, key=lambda w: (accs[w], -w))  # ties: the smaller NB share
        tried = f"{weight:g}, chosen on validation from {', '.join(f'{w:g}' for w in NB_WEIGHTS)}"
    fit.weight = (w_svm + weight * w_nb).astype(np.float32)
    fit.bias = b_svm
    return weight, {"nb_weight": weight, "nb_alpha": NB_ALPHA, "nb_choice": tried,
                    "nb_val_accuracy": {f"{w:g}": round(v, 4) for w, v in accs.items()}}


def fit_tfidf(texts: Sequence[str], labels: Sequence[int], num_classes: int, analyzer: str = "auto",
              ngrams: tuple[int, int] | None = None, classifier: str = "auto", C: float | None = None,
              seed: int = 0, *, char_ngrams: tuple[int, int] | None = None, min_df: int | None = None,
              max_features: int | None = 2_000_000, class_weight: str | None = None,
              val_texts: Sequence[str] | None = None, val_labels: Sequence[int] | None = None,
              nb_weight: float | None = None) -> TfidfFit:
    """Train TF-IDF features + a linear classifier on `texts` (labels are class ids 0..K-1).

    analyzer: auto | word | char | char_wb | word+char_wb | word+char (see `choose_analysis`).
    classifier: linearsvc (as accurate as logistic regression here and several times faster),
    logreg (multinomial, probabilities from its own likelihood), svm+nb (the SVM plus a complement
    naive Bayes folded into the same linear layer, its share chosen on validation: see
    `_svm_plus_nb`), or auto: svm+nb when validation texts are given, else linearsvc. C defaults
    to 0.5 for the SVM and 10 for logistic regression. min_df drops terms seen in fewer texts
    (mostly typos and one-off n-grams: most of the vocabulary, little of the accuracy); None: 1
    for CJK text (its rare character n-grams still help: +0.3 point on TNEWS), 2 otherwise.
    max_features keeps the most frequent terms so the vocabulary JSON stays bounded. nb_weight
    fixes svm+nb's NB share instead of choosing it (e.g. refitting on train + validation). With
    val_texts/val_labels the softmax temperature is fitted on their scores and `info` holds the
    validation accuracy."""
    if classifier not in (*CLASSIFIERS, "auto"):
        raise ConfigError(f"tfidf classifier {classifier!r}: choose one of auto, {', '.join(CLASSIFIERS)}")
    if len(texts) != len(labels) or not len(texts):
        raise ConfigError(f"tfidf: {len(texts)} texts and {len(labels)} labels (need the same number, at least one)")
    y = np.asarray(labels, dtype=np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise ConfigError(f"tfidf: labels must be class ids 0..{num_classes - 1}, found {y.min()}..{y.max()}")
    if len(np.unique(y)) < 2:
        raise ConfigError("tfidf: the training texts hold a single class; a classifier needs at least two")
    has_val = val_texts is not None and len(val_texts) > 0
    if classifier == "auto":
        classifier = "svm+nb" if has_val else "linearsvc"
    C = float(C if C is not None else (10.0 if classifier == "logreg" else 0.5))
    analysis, why = choose_analysis(texts, analyzer, ngrams, char_ngrams)
    if min_df is None:
        min_df = 1 if cjk_share(texts[:: max(1, len(texts) // 20000)]) > CJK_SHARE else 2
    t0 = time.perf_counter()
    vec = _vectorizer(analysis, min_df if len(texts) >= 50 else 1, max_features)
    try:
        X = vec.fit_transform(texts)
    except ValueError as e:  # scikit-learn's "empty vocabulary": not one term survived the analysis
        if "vocabulary" not in str(e):
            raise
        raise DataError(f"TF-IDF: the {len(texts)} training texts give no terms with {why} ({e}); texts of one-letter "
                        "words or symbols only need --tfidf-analyzer char") from None
    t_feat = time.perf_counter() - t0
    clf = _classifier("logreg" if classifier == "logreg" else "linearsvc", C, class_weight, seed)
    clf.fit(X, y)
    fit = from_sklearn(vec, clf, num_classes)
    if classifier == "svm+nb":
        yv = np.asarray(val_labels, dtype=np.int64) if has_val else None
        _, nb_info = _svm_plus_nb(X, y, fit, vec.transform(val_texts) if has_val and nb_weight is None else None,
                                  yv, nb_weight)
        fit.classifier = fit.info["classifier"] = "svm+nb"
        fit.info.update(nb_info)
    fit.info.update(why=why, min_df=vec.min_df, max_features=max_features, C=C, class_weight=class_weight,
                    train_texts=len(texts), featurize_s=round(t_feat, 2), train_s=round(time.perf_counter() - t0, 2))
    if has_val:
        yv = np.asarray(val_labels, dtype=np.int64)
        scores = predict_scores(fit, val_texts)
        fit.temperature = fit_temperature(scores, yv) if len(np.unique(yv)) > 1 else 1.0
        fit.info.update(val_accuracy=float((scores.argmax(1) == yv).mean()), temperature=fit.temperature,
                        calibration=f"temperature {fit.temperature:.3g} fitted on {len(yv)} validation texts")
    return fit


def predict_scores(fit: TfidfFit, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
    """Raw decision scores (N, K) through the torch module (no scikit-learn)."""
    m = fit.module()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            out.append(m.scores(*fit.featurizer.batch(texts[i:i + batch_size])).numpy())
    return np.concatenate(out) if out else np.zeros((0, fit.num_classes), np.float32)


def from_sklearn(vectorizer, classifier, num_classes: int) -> TfidfFit:
    """A fitted scikit-learn TfidfVectorizer + linear classifier (LinearSVC, LogisticRegression,
    anything with coef_/intercept_/classes_ and integer class ids) as a `TfidfFit`. Refuses
    vectorizer settings the featurizer does not reproduce, naming them."""
    v = vectorizer
    analyzer = v.analyzer
    if callable(analyzer):
        bound = getattr(analyzer, "__self__", None)
        if not (isinstance(bound, Analysis) and analyzer.__name__ == "terms"):
            raise ConfigError("tfidf: a callable analyzer is only reproducible when it is Analysis.terms")
        analysis = bound
    else:
        analysis = Analysis(analyzer, tuple(v.ngram_range), None, bool(v.lowercase), v.token_pattern)
    unsupported = {"sublinear_tf": (v.sublinear_tf, True), "use_idf": (v.use_idf, True), "norm": (v.norm, "l2"),
                   "binary": (v.binary, False), "strip_accents": (v.strip_accents, None),
                   "stop_words": (v.stop_words, None), "preprocessor": (v.preprocessor, None),
                   "tokenizer": (v.tokenizer, None), "input": (v.input, "content")}
    bad = [f"{k}={got!r}" for k, (got, want) in unsupported.items() if got != want]
    if bad:
        raise ConfigError(f"tfidf: vectorizer settings not reproduced at inference: {', '.join(bad)}")
    coef, intercept = _class_rows(classifier, num_classes)
    vocab = {t: int(j) for t, j in v.vocabulary_.items()}
    kind = "logreg" if type(classifier).__name__ == "LogisticRegression" else "linearsvc"
    info = {"analyzer": analysis.analyzer, "ngram_range": list(analysis.ngram_range),
            "char_ngram_range": list(analysis.char_ngram_range) if analysis.char_ngram_range else None,
            "segmenter": analysis.segmenter, "vocabulary_size": len(vocab), "classifier": kind,
            "calibration": "uncalibrated: temperature 1 (no validation texts given)"}
    return TfidfFit(TfidfFeaturizer(vocab, analysis), np.asarray(v.idf_, dtype=np.float64), coef, intercept,
                    classifier=kind, C=float(getattr(classifier, "C", 1.0)), info=info)
