"""Arrays that live in files, not in process memory: the decoded images and cached frozen
features of sets larger than memory (`--cache disk`).

A file mapped copy-on-write (numpy's mode "c", MAP_PRIVATE) is paged in from the page cache as
batches gather from it and paged out by the kernel under pressure: the pages count as the
process's RssFile, not its RssAnon, and nothing is written back. Scratch arrays (a split's
rows, features computed for this run) go to a file that is unlinked as soon as it is mapped,
so the disk space comes back when the process ends, however it ends.

`choose_store` is where `--cache auto` decides (see its comment for the measurements)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..host import available_bytes

# --cache auto keeps a set in memory when it is at most this fraction of the memory available.
# Measured (BENCHMARKS.md, "Data larger than memory", CIFAR-10 at 64 px, both paths side by side in
# one process): training images/s is the same within noise (+10.7%, -3.0% mapped), and so is a pure
# gather pass; loading is faster mapped. Memory is kept for small sets because there it costs
# nothing, writes no scratch files, and reads the cache file once, sequentially, where the mapped
# path faults pages in at random in the first epoch (a slow disk's cost; the page cache was warm
# here). It holds the set twice while splitting it (1.74 GB peak for 0.74 GB decoded), and the
# model, its activations and other processes need the rest: hence a quarter of what is available.
AUTO_MEMORY_FRACTION = 0.25


def choose_store(nbytes: int, store: str = "auto") -> str:
    """'memory' or 'disk' for an array of `nbytes`: `store` itself unless it is 'auto'."""
    if store != "auto":
        return store
    return "memory" if nbytes <= AUTO_MEMORY_FRACTION * available_bytes() else "disk"


def map_npy(path: Path) -> np.ndarray:
    """The .npy file mapped copy-on-write: writable (torch.from_numpy takes it), never written
    back. Raises ValueError when the file is shorter than its header says."""
    return np.load(path, mmap_mode="c", allow_pickle=False)


def scratch_dir(cache_dir: str | Path | None) -> Path:
    """Where scratch arrays go: the cache folder (its disk is the one meant for data) or, with
    caching off, the temporary folder."""
    return Path(cache_dir) if cache_dir else Path(tempfile.gettempdir())


def scratch_numpy(shape: tuple[int, ...], dtype: np.dtype | type, where: Path) -> np.ndarray:
    """A new writable array in an unlinked file under `where` (shared mapping: what is written
    is in the page cache, written out by the kernel under pressure, never in RssAnon)."""
    where.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="scratch-", suffix=".bin", dir=where)
    try:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        os.ftruncate(fd, max(nbytes, 1))
        arr = np.memmap(name, dtype=dtype, mode="r+", shape=shape) if nbytes else np.zeros(shape, dtype)
    finally:
        os.close(fd)
        os.unlink(name)  # the mapping stays valid; the space is freed when it is dropped
    return arr


def scratch_tensor(shape: tuple[int, ...], dtype: torch.dtype, where: Path) -> torch.Tensor:
    """scratch_numpy as a tensor of any torch dtype (bf16 included: the file is bytes)."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    raw = scratch_numpy((int(np.prod(shape, dtype=np.int64)) * itemsize,), np.uint8, where)
    return torch.from_numpy(raw).view(dtype).view(shape)


def gather(rows: torch.Tensor, idx: torch.Tensor, where: Path, chunk: int = 1024) -> torch.Tensor:
    """rows[idx] written chunk by chunk into a scratch file, for a gather as large as the set
    itself (a train/val split of mapped images): only `chunk` rows are in RssAnon at a time."""
    out = scratch_tensor((len(idx), *rows.shape[1:]), rows.dtype, where)
    for i in range(0, len(idx), chunk):
        out[i:i + chunk] = rows[idx[i:i + chunk]]
    return out


def rss_anon() -> int:
    """This process's anonymous resident memory in bytes (RssAnon in /proc/self/status; 0 where
    there is none): what a mapped set does not add to."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
