"""Numeric sequences: both table layouts, masking that makes padding irrelevant, classification
and regression learning a generated rule through the same engine."""
from __future__ import annotations

import json
import random

import pytest
import torch

import tuneforge
from tuneforge.core.data.sequences import read_sequences
from tuneforge.core.data.text_loader import SequenceBatchLoader
from tuneforge.errors import DataError
from tuneforge.core.models import create_model

QUICK = dict(progress=False, tensorboard=False, threads=2)


def make_sequences(n, seed):
    """Random-length sequences of 2 features; class 'pos' iff the sum of feature 0 is > 0."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        steps = [[rnd.gauss(0, 1), rnd.gauss(0, 1)] for _ in range(rnd.randint(3, 30))]
        out.append((f"s{seed}_{i}", steps, sum(s[0] for s in steps)))
    return out


def write_wide(path, seqs, regression=False):
    path.write_text("id,values,label\n" + "".join(
        f'{sid},"{json.dumps(steps)}",{total if regression else ("pos" if total > 0 else "neg")}\n' for sid, steps, total in seqs))


def write_long(path, seqs):
    rows = [(sid, t, a, b, "pos" if total > 0 else "neg") for sid, steps, total in seqs for t, (a, b) in enumerate(steps)]
    random.Random(1).shuffle(rows)  # steps out of order: the time column orders them
    path.write_text("seq,t,a,b,label\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_both_layouts_read_the_same_sequences(tmp_path):
    seqs = make_sequences(20, 0)
    write_wide(tmp_path / "w.csv", seqs)
    write_long(tmp_path / "l.csv", seqs)
    w = read_sequences(tmp_path / "w.csv", "label", sequence_column="values")
    l = read_sequences(tmp_path / "l.csv", "label", id_column="seq", time_column="t")
    assert w.classes == l.classes == ["neg", "pos"]
    by_id = dict(zip(l.ids, l.seqs))
    for (sid, steps, _), x in zip(seqs, w.seqs):
        assert torch.allclose(x, torch.tensor(steps)) and torch.allclose(by_id[sid], x)
    (tmp_path / "s.csv").write_text("values,label\n1 2 3,a\n4;5,b\n")
    assert [x.squeeze(1).tolist() for x in read_sequences(tmp_path / "s.csv", "label", sequence_column="values").seqs] == [[1, 2, 3], [4, 5]]


def test_bad_sequences_name_file_and_line(tmp_path):
    (tmp_path / "b.csv").write_text("values,label\n1 2,a\n1 x,b\n")
    with pytest.raises(DataError, match=r"b\.csv line 3: column 'values' is not a list of numbers"):
        read_sequences(tmp_path / "b.csv", "label", sequence_column="values")
    (tmp_path / "m.csv").write_text("seq,t,v,label\n1,0,0.5,a\n1,1,0.1,b\n")
    with pytest.raises(DataError, match="sequence '1' has several labels"):
        read_sequences(tmp_path / "m.csv", "label", id_column="seq", time_column="t")


@pytest.mark.parametrize("kind", ["gru", "lstm", "transformer"])
def test_padding_does_not_change_a_sequence_s_features(kind):
    torch.manual_seed(0)
    model = create_model(kind, 2, None, False, None, 0.0, input_dim=2, embed_dim=16, hidden_size=16, num_layers=2,
                         max_length=64).eval()
    seqs = [torch.randn(5, 2), torch.randn(40, 2)]
    with torch.no_grad():
        alone = model(SequenceBatchLoader(seqs[:1], torch.zeros(1), 1).collate(torch.tensor([0]))[0])
        padded = model(SequenceBatchLoader(seqs, torch.zeros(2), 2).collate(torch.tensor([0, 1]))[0])
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


@pytest.mark.parametrize("layout, model", [("wide", "gru"), ("long", "lstm")])
def test_rnn_learns_the_sign_of_a_sum(tmp_path, layout, model):
    write = write_wide if layout == "wide" else write_long
    write(tmp_path / "train.csv", make_sequences(600, 1))
    write(tmp_path / "test.csv", make_sequences(200, 2))
    cols = dict(sequence_column="values") if layout == "wide" else dict(id_column="seq", time_column="t")
    run = tuneforge.fit(data=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"), model=model, epochs=8,
                        batch_size=32, embed_dim=32, hidden_size=32, num_layers=1, lr=5e-3, patience=0,
                        out=str(tmp_path / "run"), **cols, **QUICK)
    assert run.report["test"]["accuracy"] >= 0.85, run.report["test"]  # chance ~0.5
    cfg = json.loads((run.run_dir / "model" / "config.json").read_text())
    assert cfg["task"] == "sequence-classification" and len(cfg["preprocessing"]["scale"]["mean"]) == 2


def test_gru_regresses_a_sum(tmp_path):
    write_wide(tmp_path / "train.csv", make_sequences(600, 3), regression=True)
    write_wide(tmp_path / "test.csv", make_sequences(200, 4), regression=True)
    run = tuneforge.fit(data=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"), model="gru", task="regression",
                        sequence_column="values", epochs=10, batch_size=32, embed_dim=32, hidden_size=32, num_layers=1,
                        lr=5e-3, patience=0, out=str(tmp_path / "run"), **QUICK)
    targets = torch.tensor([t for _, _, t in make_sequences(200, 4)])
    r = run.report["test"]
    assert r["rmse"] < 0.5 * float(targets.std()), (r, float(targets.std()))  # predicting the mean gives ~1x
