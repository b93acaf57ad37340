"""Batches straight from in-memory tensors (BatchLoader: images; MultimodalLoader: image+text
rows). With the images decoded once, a Python DataLoader with worker processes only adds
copying; an index gather per batch is all we need. The order of epoch e depends only on
(seed, e) (`order.epoch_order`), which is what makes resume exact."""
from __future__ import annotations

from typing import Iterator

import torch

from .order import epoch_order, shard, shard_size
from .text_loader import pad_batch


class BatchLoader:
    rank, world = 0, 1  # this process's shard of each epoch (data-parallel: set by core/run.train_model)

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last

    def __len__(self) -> int:
        n = shard_size(len(self.labels), self.world)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = shard(epoch_order(len(self.labels), self.seed, epoch, self.shuffle), self.rank, self.world)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


class MultimodalLoader:
    """(dict batch, labels) from per-row inputs (image+text tables): tensors are gathered,
    "input_ids" (lists of ids) padded to the batch's longest (with "attention_mask"). Epoch
    e's order depends only on (seed, e), as BatchLoader's."""

    rank, world = 0, 1  # as BatchLoader's

    def __init__(self, inputs: dict, labels: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
                 pad_id: int = 0):
        self.inputs, self.labels = inputs, labels
        self.batch_size, self.shuffle, self.seed, self.pad_id = batch_size, shuffle, seed, pad_id

    def __len__(self) -> int:
        return -(-shard_size(len(self.labels), self.world) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def collate(self, idx: torch.Tensor) -> tuple[dict, torch.Tensor]:
        batch = {}
        for k, v in self.inputs.items():
            if k == "input_ids":
                batch.update(pad_batch(v, idx, self.pad_id))
            else:
                batch[k] = v[idx]
        return batch, self.labels[idx]

    def epoch(self, epoch: int = 0) -> Iterator[tuple[dict, torch.Tensor]]:
        order = shard(epoch_order(len(self.labels), self.seed, epoch, self.shuffle), self.rank, self.world)
        for i in range(len(self)):
            yield self.collate(order[i * self.batch_size:(i + 1) * self.batch_size])

    def __iter__(self) -> Iterator[tuple[dict, torch.Tensor]]:
        return self.epoch(0)
