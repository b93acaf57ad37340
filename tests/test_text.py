"""Text: reading CSV/TSV/JSONL with every kind of bad row, the three minilm modes on a real
slice of SST-2, from-scratch GRU/LSTM/Transformer learning a generated rule, predict."""
from __future__ import annotations

import io
import json
import random
import sys
import time

import pytest
import torch

import tuneforge
from conftest import DATASETS
from tuneforge.cli import main
from tuneforge.core.data.text import Vocab, read_text_file
from tuneforge.core.data.text_loader import SequenceBatchLoader
from tuneforge.errors import ConfigError, DataError

QUICK = dict(progress=False, tensorboard=False, threads=2)


# ---------------------------------------------------------------- reading files

def test_csv_with_header_quotes_and_bom(tmp_path):
    f = tmp_path / "train.csv"
    f.write_bytes(b"\xef\xbb\xbftext,label\n\"hello, world\",pos\n\"say \"\"no\"\"\nplease\",neg\n")
    s = read_text_file(f, "text", "label")
    assert s.texts == ["hello, world", 'say "no"\nplease'] and s.classes == ["neg", "pos"]
    assert s.labels.tolist() == [1, 0] and s.lines == [2, 3]


def test_headerless_tsv_with_columns_and_numeric_labels_sorted(tmp_path):
    f = tmp_path / "sentiment-train"  # no suffix: sniffed as TSV, like SST-2's files
    f.write_text("good film \t1\nbad \"film\t0\nok\t10\n", encoding="utf-8")
    s = read_text_file(f, "text", "label", columns=["text", "label"])
    assert s.classes == ["0", "1", "10"] and s.texts[1] == 'bad "film'


def test_jsonl_and_declared_encoding(tmp_path):
    j = tmp_path / "d.jsonl"
    j.write_text('{"text": "naïve", "label": "a"}\n\n{"text": "b", "label": 2}\n', encoding="utf-8")
    s = read_text_file(j, "text", "label")
    assert s.texts == ["naïve", "b"] and s.classes == ["2", "a"]
    latin = tmp_path / "l.csv"
    latin.write_bytes("text,label\ncafé,x\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"l\.csv line 2: byte 0xe9"):
        read_text_file(latin, "text", "label")
    assert read_text_file(latin, "text", "label", encoding="latin-1").texts == ["café"]
    with pytest.raises(ConfigError, match="--encoding"):
        read_text_file(latin, "text", "label", encoding="no-such-codec")


@pytest.mark.parametrize("content, match", [
    (b"text,label\na,x\nb,y,extra\n", r"bad\.csv line 3: expected 2 fields .* got 3"),
    (b"text,label\na,x\nb,\n", r"bad\.csv line 3: empty label in column 'label'"),
    (b"text,label\na,x\n\xff\xfe,y\n", r"bad\.csv line 3: byte 0xff .* not valid utf-8"),
])
def test_bad_rows_name_file_and_line(tmp_path, content, match):
    f = tmp_path / "bad.csv"
    f.write_bytes(content)
    with pytest.raises(DataError, match=match):
        read_text_file(f, "text", "label")


def test_missing_column_names_column_and_file(tmp_path):
    f = tmp_path / "cols.csv"
    f.write_text("sentence,label\nhi,x\n")
    with pytest.raises(DataError, match=r"cols\.csv: no column 'text' .*columns: sentence, label"):
        read_text_file(f, "text", "label")
    j = tmp_path / "cols.jsonl"
    j.write_text('{"sentence": "hi", "label": "x"}\n')
    with pytest.raises(DataError, match=r"cols\.jsonl line 1: no column 'text'"):
        read_text_file(j, "text", "label")


def test_skip_bad_rows_counts_and_lists_them(tmp_path):
    f = tmp_path / "mixed.csv"
    f.write_bytes(b"text,label\ngood,x\nragged,x,1\nempty,\n\xff,y\nfine,y\n")
    s = read_text_file(f, "text", "label", skip_bad_rows=True)
    assert s.texts == ["good", "fine"]
    assert [(r["line"], r["reason"].split()[0]) for r in s.skipped] == [(4, "byte"), (3, "expected"), (5, "empty")] or \
        sorted(r["line"] for r in s.skipped) == [3, 4, 5]
    assert all(r["path"] == str(f) for r in s.skipped)


def test_unknown_labels_in_val_are_reported(tmp_path):
    rows = [f"{w} {i},{'p' if w == 'good' else 'n'}" for i in range(20) for w in ("good", "bad")]
    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "val.csv").write_text("text,label\ngood x,p\nodd y,zzz\nodd z,zzz\nbad q,n\n")
    v = read_text_file(tmp_path / "val.csv", "text", "label", classes=["n", "p"])
    assert v.unknown == {"zzz": 2} and len(v) == 2
    run = tuneforge.fit(data=str(tmp_path), model="gru", epochs=1, embed_dim=16, hidden_size=16, num_layers=1,
                        out=str(tmp_path / "run"), **QUICK)
    assert run.report["data"]["unknown_labels"] == {"val": {"zzz": 2}}
    assert run.report["val"]["n"] == 2


def test_cli_error_names_the_file_and_line(tmp_path, capsys):
    f = tmp_path / "t.csv"
    f.write_text("text,label\na,x\nb\n")
    assert main(["fit", "--data", str(f), "--model", "gru", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert f"{f} line 3: expected 2 fields" in capsys.readouterr().err


# ---------------------------------------------------------------- batching

def test_bucketed_batches_cover_every_text_once_with_little_padding():
    seqs = [[1] * n for n in torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(0)).tolist()]
    ld = SequenceBatchLoader(seqs, torch.arange(1000), 32, shuffle=True, seed=3)
    seen, padded = [], 0
    for x, y in ld.epoch(1):
        seen += y.tolist()
        padded += int((x["attention_mask"] == 0).sum())
        assert x["input_ids"].shape == x["attention_mask"].shape
    assert sorted(seen) == list(range(1000))
    assert padded < 0.1 * sum(map(len, seqs))  # random batches would pad ~half
    assert [y.tolist() for _, y in ld.epoch(1)] == [y.tolist() for _, y in ld.epoch(1)]  # (seed, epoch) fixes the order
    ev = SequenceBatchLoader(seqs, torch.arange(1000), 100)
    order = torch.cat([y for _, y in ev.epoch(0)])
    assert ev.unsort(order.float()).tolist() == list(range(1000))


# ---------------------------------------------------------------- from-scratch models learn a rule

def rule_data(folder, n_train=500, n_test=200, seed=0):
    """Texts of random words; label 'yes' iff the word 'zebra' occurs: needs the whole sequence."""
    rnd = random.Random(seed)
    words = [f"w{i}" for i in range(40)]

    def make(n):
        out = []
        for i in range(n):
            toks = [rnd.choice(words) for _ in range(rnd.randint(4, 24))]
            yes = i % 2 == 0
            if yes:
                toks[rnd.randrange(len(toks))] = "zebra"
            out.append((" ".join(toks), "yes" if yes else "no"))
        return out
    for name, n in (("train", n_train), ("test", n_test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in make(n)))
    return folder


@pytest.mark.parametrize("model", ["gru", "lstm", "transformer"])
def test_from_scratch_models_learn_a_generated_rule(tmp_path, model):
    data = rule_data(tmp_path)
    run = tuneforge.fit(data=str(data), model=model, epochs=7, batch_size=32, embed_dim=32, hidden_size=64,
                        num_layers=1 if model != "transformer" else 2, lr=3e-3, patience=0, out=str(tmp_path / "run"),
                        **QUICK)
    assert run.report["test"]["accuracy"] >= 0.9, run.report["test"]  # chance: 0.5
    cfg = json.loads((run.run_dir / "model" / "config.json").read_text())
    assert cfg["task"] == "text-classification" and cfg["preprocessing"]["tokenizer"] == "vocab.json"
    vocab = Vocab.from_json(json.loads((run.run_dir / "model" / "vocab.json").read_text()))
    assert "zebra" in vocab.index
    preds = tuneforge.predict(run.run_dir, ["w1 w2 zebra w3 w4", "w1 w2 w3 w4 w5 w6"], top_k=1)
    assert [p["label"] for p in preds] == ["yes", "no"]


def test_char_vocab_and_predict_from_a_file_and_stdin(tmp_path, monkeypatch, capsys):
    data = rule_data(tmp_path, 300, 60)
    run = tuneforge.fit(data=str(data), model="gru", vocab="char", epochs=1, embed_dim=16, hidden_size=16,
                        out=str(tmp_path / "run"), **QUICK)
    assert Vocab.from_json(json.loads((run.run_dir / "model" / "vocab.json").read_text())).level == "char"
    (tmp_path / "in.txt").write_text("w1 zebra\nw2 w3\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("w9 w8\n\nzebra\n"))
    assert main(["predict", str(run.run_dir), "single text", str(tmp_path / "in.txt"), "-", "--top-k", "1"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [l["text"] for l in lines] == ["single text", "w1 zebra", "w2 w3", "w9 w8", "zebra"]
    assert all(l["label"] in ("yes", "no") for l in lines)
    ev = tuneforge.evaluate(run.run_dir, tmp_path / "test.jsonl", progress=False)
    assert ev["test"]["n"] == 60 and (run.run_dir / "eval-test.jsonl" / "report.html").is_file()


# ---------------------------------------------------------------- minilm: frozen, full, LoRA on real SST-2

@pytest.fixture(scope="module")
def sst2_slice(tmp_path_factory):
    src = DATASETS / "sst2"
    if not src.is_dir():
        pytest.fail(f"real test data missing: {src}")
    dst = tmp_path_factory.mktemp("sst2")
    lines = (src / "sentiment-train").read_text(encoding="utf-8").splitlines()
    # 200 sentences (not phrases) for training, 100 dev sentences for test
    sents = [l for l in lines if len(l.split()) >= 8][:200]
    (dst / "sentiment-train").write_text("\n".join(sents) + "\n", encoding="utf-8")
    dev = (src / "sentiment-dev").read_text(encoding="utf-8").splitlines()[:100]
    (dst / "sentiment-test").write_text("\n".join(dev) + "\n", encoding="utf-8")
    return dst


MINILM = dict(model="minilm", columns="text,label", max_length=32, batch_size=16, val_fraction=0.0, **QUICK)


def test_minilm_frozen_encoder_caches_features_and_beats_chance(sst2_slice, tmp_path):
    run = tuneforge.fit(data=str(sst2_slice), freeze="backbone", epochs=30, lr=1e-2, out=str(tmp_path / "r"), **MINILM)
    assert run.report["test"]["accuracy"] >= 0.65, run.report["test"]  # chance ~0.5
    h = run.report and [json.loads(l) for l in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    bundle = run.run_dir / "model"
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["task"] == "text-classification" and cfg["preprocessing"]["max_length"] == 32
    assert (bundle / "tokenizer" / "tokenizer.json").is_file() and "tokenizer/tokenizer.json" in cfg["files"]
    assert not [f for f in bundle.rglob("*") if f.suffix in (".pkl", ".pt", ".bin")]  # nothing pickled
    p = tuneforge.predict(run.run_dir, ["a wonderful , moving and funny film", "dull , tedious and badly acted"], top_k=2)
    assert [x["label"] for x in p] == ["1", "0"] and len(p[0]["top"]) == 2
    # ONNX: checked at export on the training table's texts; same answers as eager PyTorch.
    from tuneforge.deploy.predictor import Predictor
    info = tuneforge.export(run.run_dir, tmp_path / "onnx", format="onnx")
    assert info["onnx"]["max_abs_diff"] < 1e-4 and info["onnx"]["checked_on"] >= 16
    texts = ["a wonderful , moving and funny film", "dull", "an uneven film , " * 12]  # unequal lengths, one batch
    eager, onnx = (Predictor(tmp_path / "onnx", backend=b) for b in ("torch", "onnx"))
    a, b = (q.top_k([q.prepare(text=t) for t in texts], 2) for q in (eager, onnx))
    assert [x["label"] for x in a] == [x["label"] for x in b]
    assert all(abs(x["top"][0]["probability"] - y["top"][0]["probability"]) < 1e-4 for x, y in zip(a, b))


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_minilm_full_and_lora_fine_tuning_lower_the_loss(sst2_slice, tmp_path, mode):
    kw = dict(lora=True, lr=2e-3) if mode == "lora" else dict(lr=1e-4)
    run = tuneforge.fit(data=str(sst2_slice), epochs=2, out=str(tmp_path / "r"), **kw, **MINILM)
    h = [json.loads(l) for l in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert h[-1]["train_loss"] < h[0]["train_loss"] - 0.05, [x["train_loss"] for x in h]
    assert run.report["test"]["accuracy"] >= 0.6, run.report["test"]
    if mode == "lora":  # the bundle holds a plain encoder with the adapters merged, and predicts the same
        cfg = json.loads((run.run_dir / "model" / "config.json").read_text())
        assert cfg["model_args"]["lora"] is False
        model = tuneforge.load(run.run_dir)
        assert not any("lora" in k for k in model.state_dict())
    texts = ["a wonderful film", "a boring mess"]
    probs = [x["top"][0]["probability"] for x in tuneforge.predict(run.run_dir, texts, top_k=1)]
    assert all(0.5 <= q <= 1 for q in probs)


def test_any_local_hf_folder_is_the_same_code_path_as_minilm():
    from tuneforge.core.models import create_model, model_spec
    from tuneforge.core.models.text import hf_model_path, load_tokenizer
    path = hf_model_path("minilm")
    assert model_spec(f"hf:{path}").modality == "text"
    tok = load_tokenizer(path)
    batch = dict(tok(["a fine film", "bad"], padding=True, return_tensors="pt"))
    torch.manual_seed(0)
    a = create_model("minilm", 2, pooling="mean").eval()
    b = create_model(f"hf:{path}", 2, pooling="mean").eval()
    with torch.no_grad():
        assert torch.allclose(a.features(batch), b.features(batch), atol=1e-6)
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        create_model("hf:/no/such/folder", 2)


def test_text_bundle_is_served_with_the_same_answers(tmp_path, live_server):
    """A text bundle goes through the same Predictor and server as images: JSON text in, the
    same top-k as `tuneforge predict`, an image upload refused with a message."""
    import httpx
    from tuneforge.deploy.predictor import Predictor
    from tuneforge.deploy.serve.app import ServeSettings, create_app
    data = rule_data(tmp_path, 400, 40)
    run = tuneforge.fit(data=str(data), model="gru", epochs=5, batch_size=32, embed_dim=32, hidden_size=32,
                        lr=3e-3, patience=0, out=str(tmp_path / "run"), **QUICK)
    texts = ["w1 w2 zebra w3", "w4 w5 w6 w7 w8", "zebra", "w9 " * 30]
    want = tuneforge.predict(run.run_dir, texts, top_k=2)
    pred = Predictor(run.run_dir)
    got = pred.top_k([pred.prepare(text=t) for t in texts], k=2)  # one padded batch of unequal lengths
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert all(abs(g["top"][0]["probability"] - w["top"][0]["probability"]) < 1e-5 for g, w in zip(got, want))
    base = live_server(create_app(run.run_dir, ServeSettings(backend="torch")))
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    for t, w in zip(texts, want):
        r = httpx.post(f"{base}/v1/predict", json={"text": t}, timeout=30)
        assert r.status_code == 200 and r.json()["label"] == w["label"], r.text
    r = httpx.post(f"{base}/v1/predict", files={"file": ("x.jpg", b"\xff\xd8", "image/jpeg")}, timeout=30)
    assert 400 <= r.status_code < 500 and "text" in r.json()["detail"]
    assert httpx.get(f"{base}/v1/info").json()["inputs"] == ["text"]
