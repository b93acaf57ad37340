"""The same text in two splits, or under two labels, is warned about and recorded in
report.json's data.duplicates (as for images), naming file:line; texts TF-IDF finds no terms in."""
import json
import logging

import pytest

import tuneforge
from tuneforge.errors import DataError


def _table(path, rows):
    path.write_text("text,label\n" + "".join(f'"{t}",{l}\n' for t, l in rows))
    return path


def test_text_in_train_and_test_and_under_two_labels_is_reported(tmp_path, caplog):
    words = {"pos": ["great", "lovely", "superb", "fine"], "neg": ["awful", "dull", "poor", "bad"]}
    train = [(f"a {w} film number {i}", lab) for lab, ws in words.items() for i in range(12) for w in ws[:2]]
    train.append(("a great film number 0", "neg"))  # the same text under the other label too
    test = [(f"a {w} film take {i}", lab) for lab, ws in words.items() for i in range(3) for w in ws[2:]]
    test.append(("a lovely film number 5", "pos"))  # a training text copied into test
    tr, te = _table(tmp_path / "train.csv", train), _table(tmp_path / "test.csv", test)
    with caplog.at_level(logging.WARNING, logger="tuneforge"):
        run = tuneforge.fit(data=str(tr), test=str(te), model="tfidf", out=str(tmp_path / "run"))
    d = json.loads((run.run_dir / "report.json").read_text())["data"]["duplicates"]
    assert d["across_splits"]["count"] == 1 and d["across_splits"]["pairs"] == {"test/train": 1}
    assert any(e.startswith("test: ") and e.endswith(f"{te}:{len(test) + 1} (pos)")
               for g in d["across_splits"]["examples"] for e in g)
    assert d["across_classes"]["count"] == 1 and d["across_classes"]["pairs"] == {"neg/pos": 1}
    assert "identical texts in more than one split" in caplog.text
    html = (run.run_dir / "report.html").read_text()
    assert "<h2>Duplicates</h2>" in html or ">Duplicates<" in html


def test_distinct_texts_report_no_duplicates(tmp_path):
    rows = [(f"text {i} {'good' if i % 2 else 'bad'}", "p" if i % 2 else "n") for i in range(60)]
    run = tuneforge.fit(data=str(_table(tmp_path / "t.csv", rows)), model="tfidf", out=str(tmp_path / "run"))
    d = json.loads((run.run_dir / "report.json").read_text())["data"]["duplicates"]
    assert d["across_splits"]["count"] == 0 and d["across_classes"]["count"] == 0


def test_texts_without_tfidf_terms_are_refused_by_tfidf_and_skip_the_baseline_of_other_models(tmp_path):
    # one-letter words only: the word analyzer's token pattern (2+ characters) finds no term
    rows = [(" ".join("ab"[(i >> k) & 1] for k in range(4)), "x" if i % 2 else "y") for i in range(60)]
    data = _table(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match="no terms"):
        tuneforge.fit(data=str(data), model="tfidf", tfidf_analyzer="word", out=str(tmp_path / "a"))
    run = tuneforge.fit(data=str(data), model="gru", vocab="char", epochs=1, out=str(tmp_path / "b"), progress=False)
    baseline = json.loads((run.run_dir / "report.json").read_text())["baseline"]
    assert baseline["name"] == "tfidf" and "no terms" in baseline["skipped"]
