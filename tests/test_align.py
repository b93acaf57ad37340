"""Contrastive alignment (issue 6): real Flickr8k captions and images, real encoders
(efficientnet_lite0 at a small input size, minilm), asserted outcomes: the loss goes down, a
known pair is ranked first, zero-shot beats chance, and the bundle refuses damaged files."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tuneforge.tasks.align import workflow as A
from tuneforge.cli import main as cli_main
from tuneforge.errors import BundleError, ConfigError, DataError

from conftest import ctrl_c_in_epoch, flickr_subset

SIZE = 96  # lite0 at 96 px: a fraction of the 224 px cost, features still tell scenes apart


@pytest.fixture(scope="module")
def flickr_small(tmp_path_factory) -> dict:
    """The first 48 Flickr8k images (by name) with their 5 captions each: 240 real pairs."""
    d = tmp_path_factory.mktemp("flickr")
    names, keep = flickr_subset(d, 48)
    (d / "train.txt").write_text("\n".join(names[:40]))
    (d / "val.txt").write_text("\n".join(names[40:44]))
    (d / "test.txt").write_text("\n".join(names[44:]))
    return {"dir": d, "names": names, "rows": keep}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One feature cache for the module: the encoders' features of an image are computed once."""
    return str(tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="module")
def flickr_run(flickr_small, cache, tmp_path_factory) -> A.AlignResult:
    d = flickr_small["dir"]
    return A.align(data=str(d / "captions.csv"), image_root=str(d / "images"), train_list=str(d / "train.txt"),
                   val_list=str(d / "val.txt"), test_list=str(d / "test.txt"), image_size=SIZE, epochs=30,
                   batch_size=64, patience=0, lr=3e-3, out=str(tmp_path_factory.mktemp("align") / "run"),
                   cache_dir=cache, threads=1, progress=False)


def test_alignment_lowers_its_loss(flickr_run):
    h = json.loads((flickr_run.run_dir / "report.json").read_text())
    hist = [json.loads(line) for line in (flickr_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 30
    # InfoNCE over batches of 64 starts near log(64) ~ 4.2; the heads must bring it well below
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    assert h["data"]["images"] == {"train": 40, "val": 4, "test": 4} and h["data"]["train_pairs"] == 200
    assert 0.01 <= h["temperature"] <= 1.0  # learned, within CLIP's clamp


def test_retrieval_ranks_a_known_pair_first(flickr_run, flickr_small, cache, tmp_path):
    # text -> images over the 40 training images, through a saved embeddings file and a folder
    folder = tmp_path / "train_images"
    folder.mkdir()
    for n in flickr_small["names"][:40]:
        os.symlink(flickr_small["dir"] / "images" / n, folder / n)
    target = flickr_small["names"][7]
    caption = next(r["caption"] for r in flickr_small["rows"] if r["image"] == target)
    info = A.embed(flickr_run.run_dir, folder, tmp_path / "emb.safetensors", cache_dir=cache)
    assert info["images"] == 40 and info["dim"] == 256
    for images in (tmp_path / "emb.safetensors", folder):
        res = A.retrieve(flickr_run.run_dir, query=caption, images=images, top_k=3, cache_dir=cache)
        assert Path(res[0]["results"][0]["path"]).name == target, res
        scores = [r["score"] for r in res[0]["results"]]
        assert scores == sorted(scores, reverse=True)
    # image -> texts: the image's own caption beats captions of other images
    others = [r["caption"] for r in flickr_small["rows"] if r["image"] in flickr_small["names"][20:30]][::5]
    res = A.retrieve(flickr_run.run_dir, image=folder / target, texts=[*others, caption], top_k=1, cache_dir=cache)
    assert res[0]["results"][0]["text"] == caption


def test_recall_on_train_and_chance(flickr_run, flickr_small, cache):
    d = flickr_small["dir"]
    train_rows = d / "train_rows.csv"
    with open(train_rows, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption"])
        w.writeheader()
        w.writerows([r for r in flickr_small["rows"] if r["image"] in set(flickr_small["names"][:40])])
    m = A.evaluate_retrieval(flickr_run.run_dir, train_rows, image_root=str(d / "images"), cache_dir=cache)
    assert m["n_images"] == 40 and m["n_texts"] == 200
    # fitted pairs: far above a random ranking (R@5 = 5/40 for text -> image)
    assert m["text_to_image"]["R@5"] > m["chance"]["text_to_image"]["R@5"] + 0.5
    assert m["image_to_text"]["R@1"] > 0.5
    test = flickr_run.report["retrieval"]["test"]
    assert test["n_images"] == 4 and test["n_texts"] == 20 and test["chance"]["text_to_image"]["R@1"] == 0.25


def test_align_resume_is_exact(flickr_small, cache, tmp_path, monkeypatch, capsys):
    """Interrupted after 2 of 4 epochs, `align --resume RUN` (the CLI flag) ends with the heads,
    losses and recalls of the uninterrupted run, bit for bit (flip on: the per-epoch view draws too)."""
    d = flickr_small["dir"]
    kw = dict(data=str(d / "captions.csv"), image_root=str(d / "images"), train_list=str(d / "train.txt"),
              val_list=str(d / "val.txt"), test_list=str(d / "test.txt"), image_size=SIZE, epochs=4, batch_size=32,
              patience=0, lr=3e-3, flip=True, cache_dir=cache, threads=1, progress=False)
    full = A.align(out=str(tmp_path / "full"), **kw)
    restore = ctrl_c_in_epoch(monkeypatch, 2)  # Ctrl-C in the third epoch
    cut = A.align(out=str(tmp_path / "cut"), **kw)
    assert cut.report["stopped_because"] == "interrupted" and cut.report["epochs_run"] == 2
    restore()

    assert cli_main(["align", "--resume", str(tmp_path / "cut")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["run"] == str(tmp_path / "cut")
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [h["train_loss"] for h in a["engine"]["history"]] == [h["train_loss"] for h in b["engine"]["history"]]
    resumed = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert resumed["epochs_run"] == 4 and resumed["retrieval"] == full.report["retrieval"]
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 4


def test_retrieval_metrics_exact():
    img = torch.eye(3)
    txt = torch.eye(3)[[0, 0, 1, 2, 1]]  # captions 0,1 of image 0; 2,4 of image 1; 3 of image 2
    m = A.retrieval_metrics(img, txt, torch.tensor([0, 0, 1, 2, 1]))
    assert m["text_to_image"]["R@1"] == 1.0 and m["image_to_text"]["R@1"] == 1.0
    swapped = A.retrieval_metrics(img, txt, torch.tensor([1, 1, 0, 2, 0]))  # images 0 and 1 mislabelled
    assert swapped["text_to_image"]["R@1"] == pytest.approx(1 / 5)
    # random ranking of 5 texts, 2 positives, top 1: 2/5; 1 positive: 1/5
    assert m["chance"]["image_to_text"]["R@1"] == pytest.approx((2 / 5 + 2 / 5 + 1 / 5) / 3)


def test_zeroshot_beats_chance(cifar3, tmp_path):
    """Align on CIFAR train images captioned in words ('a truck on the road ...'), then name the
    test images' classes by prompts never used as captions."""
    words = {"airplane": ["an airplane in the sky", "a plane flying", "a jet aircraft"],
             "frog": ["a frog sitting", "a green frog on a leaf", "a small amphibian"],
             "truck": ["a truck on the road", "a big lorry", "a delivery truck parked"]}
    table = tmp_path / "captions.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for c, caps in words.items():
            for i, img in enumerate(sorted((cifar3 / "train" / c).iterdir())):
                w.writerow([img, caps[i % 3]])
    cache = str(tmp_path / "cache")
    run = A.align(data=str(table), image_size=64, epochs=15, batch_size=32, val_fraction=0.1, test_fraction=0.0, lr=3e-3,
                  out=str(tmp_path / "run"), cache_dir=cache, threads=1, progress=False, patience=0)
    rep = A.zeroshot(run.run_dir, data=cifar3, prompts=["a photo of a {}.", "a picture of the {}."], cache_dir=cache,
                     out=tmp_path / "zs", progress=False)
    assert rep["test"]["n"] == 90 and rep["baselines"]["chance"] == pytest.approx(1 / 3)
    assert rep["test"]["accuracy"] > 1 / 3 + 0.2
    assert (tmp_path / "zs" / "report.json").is_file() and (tmp_path / "zs" / "report.html").is_file()
    # a plain folder with --classes: predictions, no report
    preds = A.zeroshot(run.run_dir, data=cifar3 / "test" / "frog", classes="airplane,frog,truck", cache_dir=cache,
                       progress=False)["predictions"]
    assert len(preds) == 30 and sum(p["label"] == "frog" for p in preds) > 10


def test_zeroshot_alternatives_score_the_best_kind():
    """'shoes|sandals' scores an image by its nearest kind: a sandal image belongs to footwear
    even though the mean of the two kinds' embeddings is nearer to the other class."""
    table = {"shoes": [1.0, 0.0, 0.0], "sandals": [0.0, 1.0, 0.0], "clothing": [-0.3, 0.9, 0.3]}
    pair = A.Aligned.__new__(A.Aligned)
    pair.class_embeddings = lambda names, prompts: torch.nn.functional.normalize(
        torch.tensor([table[n] for n in names]), dim=-1)
    pair.model = SimpleNamespace(heads=SimpleNamespace(scale=lambda: torch.tensor(10.0)))
    sandal = torch.nn.functional.normalize(torch.tensor([[0.1, 1.0, 0.0]]), dim=-1)
    kinds = pair.class_scores(sandal, ["shoes|sandals", "clothing"], ["{}"])
    assert kinds.shape == (1, 2) and kinds.argmax(1).item() == 0
    assert kinds[0, 0] == pytest.approx(10 * (sandal @ torch.tensor([0.0, 1.0, 0.0])).item())
    mean = torch.nn.functional.normalize(torch.tensor([[0.5, 0.5, 0.0]]), dim=-1)  # one averaged embedding instead
    assert (sandal @ mean.T).item() < (sandal @ pair.class_embeddings(["clothing"], []).T).item()


def test_zeroshot_class_name_needs_words(tmp_path, capsys):
    for bad in ("Footwear", "Footwear=", "Footwear=| |"):
        assert cli_main(["zeroshot", str(tmp_path), "--data", str(tmp_path), "--class-name", bad]) == 2
        err = capsys.readouterr().err
        assert "--class-name" in err and repr(bad) in err


def test_bundle_is_portable_and_checked(flickr_run, tmp_path, capsys):
    import shutil
    moved = tmp_path / "elsewhere"
    shutil.copytree(flickr_run.run_dir / "model", moved)
    cfg = json.loads((moved / "config.json").read_text())
    assert cfg["task"] == "image-text-alignment" and any(k.startswith("tokenizer/") for k in cfg["files"])
    # the CLI on the moved bundle: text -> images as JSON lines
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for f in sorted((Path(flickr_run.config.image_root)).iterdir())[:5]:
        os.symlink(f, img_dir / f.name)
    assert cli_main(["retrieve", str(moved), "--query", "a dog", "a girl", "--images", str(img_dir), "--top-k", "2",
                     "--cache-dir", ""]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["query"] for x in lines] == ["a dog", "a girl"] and len(lines[0]["results"]) == 2
    # a modified weight file is refused by name
    with open(moved / "model.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    with pytest.raises(BundleError, match="model.safetensors"):
        A.retrieve(moved, query="a dog", images=img_dir)


def test_errors_name_the_flag(flickr_small, tmp_path):
    d = flickr_small["dir"]
    with pytest.raises(ConfigError, match="--batch-size"):
        A.align(data=str(d / "captions.csv"), batch_size=1, out=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="--train-list"):
        A.align(data=str(d / "captions.csv"), test_list="x.txt", out=str(tmp_path / "r"))
    (tmp_path / "none.txt").write_text("not_an_image.jpg\n")
    with pytest.raises(DataError, match="--train-list"):
        A.align(data=str(d / "captions.csv"), image_root=str(d / "images"), train_list=str(tmp_path / "none.txt"),
                out=str(tmp_path / "r"), progress=False)


def test_training_the_last_image_stage(flickr_small, cache, tmp_path):
    """--train-image-stages 1: efficientnet_lite0's final 1x1 conv + BN learn too, on cached maps;
    the bundle holds the changed encoder and retrieval uses it (not stale cached features)."""
    from safetensors.torch import load_file
    from tuneforge.core.models.efficientnet import EfficientNetLiteBackbone
    d = flickr_small["dir"]
    run = A.align(data=str(d / "captions.csv"), image_root=str(d / "images"), train_list=str(d / "train.txt"),
                  val_list=str(d / "val.txt"), image_size=SIZE, epochs=20, batch_size=64, patience=0, lr=3e-3,
                  train_image_stages=1, out=str(tmp_path / "run"), cache_dir=cache, threads=1, progress=False)
    hist = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    saved = load_file(str(run.run_dir / "model" / "model.safetensors"))["image_encoder.net._conv_head.weight"]
    assert not torch.equal(saved, EfficientNetLiteBackbone(0).net._conv_head.weight.detach())
    target = flickr_small["names"][3]
    caption = next(r["caption"] for r in flickr_small["rows"] if r["image"] == target)
    res = A.retrieve(run.run_dir, query=caption, images=d / "images", top_k=1, cache_dir=cache)
    assert Path(res[0]["results"][0]["path"]).name == target
