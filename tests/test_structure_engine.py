"""Issue 14, training side: the engine's after-step hook (EMA teachers and targets include the
last optimizer step), the one seeded-order helper (orders unchanged), the one padding helper and
the one feature-cache naming (entry names unchanged, so existing caches stay valid)."""
from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from tuneforge.core.data.cache import ItemCache, digest, memoised
from tuneforge.core.data.loader import BatchLoader, MultimodalLoader
from tuneforge.core.data.order import epoch_order, epoch_stream
from tuneforge.core.data.text_loader import SequenceBatchLoader, concat_padded, pad_batch
from tuneforge.core.data.unlabeled import SemiLoader, UnlabeledLoader
from tuneforge.core.engine import Engine
from tuneforge.core.engine.callbacks import Callback
from tuneforge.core.strategies import Supervised
from tuneforge.core.strategies.semi import FeatureViews, MeanTeacher, SemiModel
from tuneforge.core.strategies.ssl import BYOL, SSLModel
from tuneforge.tasks.align.workflow import PairLoader


class Snapshots(Callback):
    """The given parameters after every optimizer step."""

    def __init__(self, params):
        self.params, self.after = list(params), []

    def on_batch_end(self, engine, batch, stats) -> None:
        self.after.append([p.detach().clone() for p in self.params])


def _ema(start: list, snaps: list, decay) -> list:
    """EMA by hand: t <- d_j t + (1 - d_j) s_j after every step j."""
    t = [p.clone() for p in start]
    for j, s in enumerate(snaps):
        d = decay(j)
        t = [d * a + (1 - d) * b for a, b in zip(t, s)]
    return t


def _fit(model, strategy, loader, params, epochs: int = 2) -> Snapshots:
    snaps = Snapshots(params)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    Engine(model, strategy, opt, callbacks=[snaps], epochs=epochs).fit(loader)
    return snaps


def _assert_ema(got: list, start: list, snaps: list, decay) -> None:
    want = _ema(start, snaps, decay)
    stale = _ema(start, snaps[:-1], lambda j: decay(j))  # what updating at the next step's start gave
    for g, w, s in zip(got, want, stale):
        assert torch.allclose(g, w, atol=1e-6), (g - w).abs().max()
    assert any((w - s).abs().max() > 1e-4 for w, s in zip(want, stale))  # the last step matters here


def test_mean_teacher_is_the_ema_of_every_step_including_the_last():
    torch.manual_seed(0)
    feats, labels, unl = torch.randn(12, 2, 5), torch.randint(0, 3, (12,)), torch.randn(30, 2, 5)
    model = SemiModel(nn.Linear(5, 3), teacher=True, num_classes=3)
    start = [p.detach().clone() for p in model.student.parameters()]
    strategy = MeanTeacher(Supervised(), FeatureViews(), 3, weight=1.0, ema=0.9)
    loader = SemiLoader(feats, labels, unl, batch_size=4, mu=2, steps=3, seed=1)
    snaps = _fit(model, strategy, loader, model.student.parameters())
    assert len(snaps.after) == 6 and int(model.steps) == 6
    # decay min(0.9, 1 - 1/(t + 1)), t = steps taken including this one (j + 1)
    _assert_ema(list(model.teacher.parameters()), start, snaps.after, lambda j: min(0.9, 1 - 1 / (j + 2)))


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(6, 8)
        self.backbone.feature_dim = 8

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.backbone(x))


def test_byol_target_is_the_ema_of_every_step_including_the_last():
    torch.manual_seed(0)
    model = SSLModel(_Encoder(), proj_dim=4, hidden=8, predictor=True, target=True)
    online = lambda: list(model.encoder.parameters()) + list(model.projector.parameters())
    start = [p.detach().clone() for p in online()]
    strategy = BYOL(momentum=0.8, view=lambda x, g: x + 0.1 * torch.randn(x.shape, generator=g))
    snaps = _fit(model, strategy, UnlabeledLoader(torch.randn(16, 6), batch_size=8, seed=2), online())
    assert len(snaps.after) == 4 and int(model.updates) == 4
    target = list(model.target["encoder"].parameters()) + list(model.target["projector"].parameters())
    _assert_ema(target, start, snaps.after, lambda j: 0.8)
    # simsiam has no target: its after_step is a no-op
    siam = SSLModel(_Encoder(), proj_dim=4, hidden=8, predictor=True)
    _fit(siam, BYOL(simsiam=True, view=lambda x, g: x), UnlabeledLoader(torch.randn(16, 6), batch_size=8), [], epochs=1)
    assert siam.target is None and int(siam.updates) == 0


# --- the seeded orders: the formulas each loader had before issue 14, bit for bit ---------

def _old_order(n, seed, epoch):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def _old_stream(n, count, seed, epoch, salt):
    out, k = [], 0
    while sum(len(o) for o in out) < count:
        out.append(torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_033 + epoch * 7_127 + salt * 101 + k)))
        k += 1
    return torch.cat(out)[:count]


def test_seeded_orders_are_those_of_before():
    for seed, epoch in ((0, 0), (0, 3), (7, 1), (123, 9)):
        assert torch.equal(epoch_order(50, seed, epoch), _old_order(50, seed, epoch))
        assert torch.equal(epoch_order(50, seed, epoch, shuffle=False), torch.arange(50))
        for salt in (1, 2, 3):
            assert torch.equal(epoch_stream(7, 40, seed, epoch, salt), _old_stream(7, 40, seed, epoch, salt))
        # every loader draws from them
        x, y = torch.arange(50)[:, None], torch.arange(50)
        order = _old_order(50, seed, epoch)
        assert torch.equal(torch.cat([b for _, b in BatchLoader(x, y, 8, True, seed).epoch(epoch)]), order)
        assert torch.equal(torch.cat([b for _, b in MultimodalLoader({"v": x}, y, 8, True, seed).epoch(epoch)]), order)
        pair = PairLoader(x.float()[:, None], x.float(), y, y, 10, shuffle=True, seed=seed)
        assert torch.equal(torch.cat([ids for *_, ids in pair.epoch(epoch)]), order)
        semi = SemiLoader(x, y, torch.arange(30)[:, None], 4, mu=2, steps=5, seed=seed)
        (_, u), lab = next(iter(semi.epoch(epoch)))
        assert torch.equal(lab, _old_stream(50, 20, seed, epoch, 2)[:4])
        assert torch.equal(u.flatten(), _old_stream(30, 40, seed, epoch, 3)[:8])
        unl = UnlabeledLoader(torch.arange(30)[:, None], 8, seed)
        assert torch.equal(torch.cat([b[0] for b in unl.epoch(epoch)]).flatten(), _old_stream(30, 24, seed, epoch, 1))
    # the sequence loader: the epoch's permutation, then its batches shuffled with the same generator
    seqs = [[1] * (i % 7 + 1) for i in range(40)]
    ld = SequenceBatchLoader(seqs, torch.arange(40), 4, shuffle=True, seed=5, bucket=2)
    g = torch.Generator().manual_seed(5 * 100_003 + 2)
    perm, out = torch.randperm(40, generator=g), []
    for s in range(0, 40, 8):
        part = perm[s:s + 8]
        part = part[torch.argsort(ld.lengths[part], stable=True)]
        out += [part[i:i + 4] for i in range(0, len(part), 4)]
    want = [out[i] for i in torch.randperm(len(out), generator=g).tolist()]
    assert all(torch.equal(a, b) for a, b in zip(ld.batches(2), want))


def test_one_padding_helper():
    seqs = [[5, 6, 7], [8], [9, 10]]
    b = pad_batch(seqs, torch.tensor([1, 0]), pad_id=3)
    assert b["input_ids"].tolist() == [[8, 3, 3], [5, 6, 7]] and b["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert torch.equal(pad_batch(seqs, None, 0)["input_ids"], pad_batch(seqs, torch.arange(3), 0)["input_ids"])
    got, _ = MultimodalLoader({"input_ids": seqs, "has_text": torch.ones(3)}, torch.zeros(3), 2, pad_id=3).collate(torch.tensor([1, 0]))
    assert torch.equal(got["input_ids"], b["input_ids"]) and torch.equal(got["attention_mask"], b["attention_mask"])
    # two padded batches as one: the shorter padded, its mask zero there (interior zeros kept)
    c = concat_padded({"input_ids": torch.tensor([[1, 2]]), "attention_mask": torch.tensor([[1, 0]])}, b)
    assert c["input_ids"].tolist() == [[1, 2, 0], [8, 3, 3], [5, 6, 7]]
    assert c["attention_mask"].tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 1]]


def test_feature_cache_entries_keep_their_names(tmp_path):
    """Entry names as multimodal and align wrote them before the one cache API: caches stay valid."""
    key = "minilm:True:64:" + hashlib.sha256(json.dumps([[1, 2], [3]]).encode()).hexdigest()
    assert f"text-{digest(key)}" == f"text-{hashlib.sha256(key.encode()).hexdigest()[:32]}"
    assert digest(json.dumps([[1, 2], [3]]), length=64) == hashlib.sha256(json.dumps([[1, 2], [3]]).encode()).hexdigest()
    h = hashlib.sha256("txt:v1:abc:64:2".encode())
    for t in ("a dog", "ünïcode"):
        h.update(t.encode("utf-8") + b"\0")
    assert digest("txt:v1:abc:64:2", *(t + "\0" for t in ("a dog", "ünïcode"))) == h.hexdigest()[:32]
    # one safetensors entry: computed once, then read back; "" turns caching off
    calls = []
    compute = lambda: calls.append(1) or {"x": torch.arange(3.0)}
    for _ in range(2):
        assert torch.equal(memoised(str(tmp_path), "e", compute)["x"], torch.arange(3.0))
    assert len(calls) == 1 and (tmp_path / "features" / "e.safetensors").is_file()
    memoised("", "e", compute)
    assert len(calls) == 2
    # per-item entries: KEY[:2]/KEY.npy and KEY.mirrored.npy, all views or nothing
    items = ItemCache(str(tmp_path), "ns")
    items.save("abcdef", ("", "mirrored"), torch.ones(2, 3).numpy())
    assert (tmp_path / "features" / "ns" / "ab" / "abcdef.mirrored.npy").is_file()
    assert items.load("abcdef", ("", "mirrored")).shape == (2, 3) and items.load("abcdef", ("", "other")) is None
    assert ItemCache("", "ns").load("abcdef", ("",)) is None
