"""Batches of variable-length sequences (token ids or numeric steps) with dynamic padding.

A batch is padded to its own longest member, not to max_length. Training batches are
length-bucketed: the epoch's shuffled order is cut into chunks of `bucket` batches, each chunk
is sorted by length and cut into batches, and the batches are shuffled again, so a batch holds
sequences of similar length (little padding) while the epoch stays random. Evaluation batches
are formed in length order; `order` maps them back to the input order. As with BatchLoader,
epoch e's order depends only on (seed, e)."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from .order import epoch_generator, shard, shard_size


class SequenceBatchLoader:
    rank, world = 0, 1  # this process's shard of each epoch (data-parallel: set by core/run.train_model)

    def __init__(self, seqs: list, labels: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
                 pad_id: int = 0, bucket: int = 50, sort: bool = True):
        """`seqs`: lists of token ids, or float tensors (T, F) for numeric sequences."""
        self.seqs, self.labels = seqs, labels
        self.batch_size, self.shuffle, self.seed, self.pad_id, self.bucket = batch_size, shuffle, seed, pad_id, bucket
        self.lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        self.numeric = bool(seqs) and torch.is_tensor(seqs[0])
        self.order = torch.argsort(self.lengths, stable=True) if sort and not shuffle else torch.arange(len(seqs))

    def __len__(self) -> int:
        return -(-shard_size(len(self.seqs), self.world) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.seqs)

    def collate(self, idx: torch.Tensor) -> tuple[dict, torch.Tensor]:
        if self.numeric:
            lens = self.lengths[idx]
            t = int(lens.max()) if len(idx) else 0
            mask = (torch.arange(t)[None, :] < lens[:, None]).long()
            feats = self.seqs[int(idx[0])].shape[1]
            x = torch.zeros(len(idx), t, feats)
            for r, i in enumerate(idx.tolist()):
                x[r, :len(self.seqs[i])] = self.seqs[i]
            return {"values": x, "attention_mask": mask}, self.labels[idx]
        return pad_batch(self.seqs, idx, self.pad_id), self.labels[idx]

    def batches(self, epoch: int = 0) -> list[torch.Tensor]:
        n, bs = len(self.seqs), self.batch_size
        if not self.shuffle:
            order = shard(self.order, self.rank, self.world)
            return [order[i:i + bs] for i in range(0, len(order), bs)]
        g = epoch_generator(self.seed, epoch)  # the epoch's order, then the order of its batches
        perm = shard(torch.randperm(n, generator=g), self.rank, self.world)
        n, out = len(perm), []
        chunk = bs * max(1, self.bucket)
        for s in range(0, n, chunk):
            part = perm[s:s + chunk]
            part = part[torch.argsort(self.lengths[part], stable=True)]
            out += [part[i:i + bs] for i in range(0, len(part), bs)]
        return [out[i] for i in torch.randperm(len(out), generator=g).tolist()]

    def epoch(self, epoch: int = 0) -> Iterator[tuple[dict, torch.Tensor]]:
        for idx in self.batches(epoch):
            yield self.collate(idx)

    def __iter__(self):
        return self.epoch(0)

    def unsort(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of an evaluation output (in batch order) back in input order."""
        out = torch.empty_like(x)
        out[self.order] = x
        return out


def pad_batch(seqs: list, idx: torch.Tensor | None, pad_id: int) -> dict[str, torch.Tensor]:
    """Rows `idx` of token-id lists (all rows: None), padded to the longest of them: the dict
    batch text encoders take. The one place token batches are padded."""
    rows = list(seqs) if idx is None else [seqs[i] for i in idx.tolist()]
    t = max(map(len, rows)) if rows else 0
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for r, s in enumerate(rows):
        ids[r, :len(s)], mask[r, :len(s)] = torch.as_tensor(s, dtype=torch.long), 1
    return {"input_ids": ids, "attention_mask": mask}


def concat_padded(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Two padded dict batches as one, padded to the longer (the padding is masked out)."""
    t = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    grow = lambda x, value: F.pad(x, (0, t - x.shape[1]), value=value)
    return {"input_ids": torch.cat([grow(a["input_ids"], pad_id), grow(b["input_ids"], pad_id)]),
            "attention_mask": torch.cat([grow(a["attention_mask"], 0), grow(b["attention_mask"], 0)])}
