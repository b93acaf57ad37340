"""The seeded orders every loader draws its batches in. Epoch e's order is a function of
(seed, e) only, never of what ran before: that is what makes `--resume` exact (a run resumed
at epoch e draws the same batches an uninterrupted run would have).

Two formulas, both kept bit for bit because resumed runs and recipe accuracies depend on them:
`epoch_order` (one permutation per epoch: BatchLoader, SequenceBatchLoader, PairLoader,
MultimodalLoader) and `epoch_stream` (permutations laid end to end, one stream per `salt`:
UnlabeledLoader, SemiLoader)."""
from __future__ import annotations

import torch


def epoch_generator(seed: int, epoch: int, salt: int | None = None, cycle: int = 0) -> torch.Generator:
    """The generator of epoch `epoch`'s order; with `salt`, of permutation `cycle` of stream `salt`."""
    if salt is None:
        return torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.Generator().manual_seed(seed * 1_000_033 + epoch * 7_127 + salt * 101 + cycle)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """A permutation of range(n) for the epoch (range(n) itself without `shuffle`)."""
    return torch.randperm(n, generator=epoch_generator(seed, epoch)) if shuffle else torch.arange(n)


def epoch_stream(n: int, count: int, seed: int, epoch: int, salt: int) -> torch.Tensor:
    """`count` indices into range(n): permutations seeded by (seed, epoch, salt) laid end to end,
    so every item is seen once before any is seen twice, whatever `count` is. Streams of
    different `salt` (labelled, unlabeled) are independent."""
    out, total, cycle = [], 0, 0
    while n and total < count:
        out.append(torch.randperm(n, generator=epoch_generator(seed, epoch, salt, cycle)))
        total += n
        cycle += 1
    return torch.cat(out)[:count] if out else torch.zeros(0, dtype=torch.long)


def shard_size(n: int, world: int) -> int:
    """Samples each of `world` ranks takes per epoch from `n`: n / world rounded up (`shard`)."""
    return -(-n // world) if world > 1 else n


def shard(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank `rank`'s part of an epoch's order, for data-parallel training over `world` processes:
    every world-th index from `rank` on, the order padded first with its own beginning to a
    multiple of `world`, so every rank takes the same number of samples (and steps) and every
    sample is seen once per epoch across the ranks (the fewer than `world` padding ones twice),
    still in an order that is a function of (seed, epoch) only. world 1: `order` itself."""
    if world <= 1:
        return order
    pad = shard_size(len(order), world) * world - len(order)
    if pad:
        order = torch.cat([order, order[:pad].repeat(-(-pad // max(len(order), 1)))[:pad]])
    return order[rank::world]
