"""Dynamic micro-batching: requests that arrive close together run as one forward pass.

On a CPU a batch of 32 small images costs a few times one image, not 32 times, so under load
throughput grows with the batch while each request waits at most `max_wait_ms` for company.
When no other request is on its way (`arriving == 0`) a batch runs at once, so a lone client
pays no waiting at all. Inference runs on one worker thread; the event loop keeps accepting
and decoding meanwhile, and whatever queued up during a forward pass forms the next batch."""
from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(Exception):
    """More requests are waiting than `max_queue`: shed this one (HTTP 503 + Retry-After)."""


@dataclass
class _Item(Generic[T]):
    value: T
    future: asyncio.Future
    enqueued: float = field(default=0.0)


class MicroBatcher(Generic[T, R]):
    """`run_batch(list of T) -> list of R` is called on a worker thread with at most
    `max_batch_size` items, gathered for at most `max_wait_ms` after the first one arrived."""

    def __init__(self, run_batch: Callable[[list[T]], list[R]], max_batch_size: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 256, on_batch: Callable[[int, float], None] | None = None):
        self.run_batch, self.max_batch_size, self.max_wait = run_batch, max(1, max_batch_size), max_wait_ms / 1000
        self.max_queue, self.on_batch = max_queue, on_batch
        self.pending = 0  # submitted, not yet answered (queued or running)
        self.arriving = 0  # requests being read/decoded that will submit soon; see module doc
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tuneforge-infer")

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, value: T, timeout_s: float | None = None) -> R:
        """The result for `value`; Overloaded when the queue is full, TimeoutError after
        `timeout_s` (the item is then dropped from its batch if it has not run yet)."""
        if self.pending >= self.max_queue:
            raise Overloaded(f"{self.pending} requests waiting (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        item = _Item(value, loop.create_future(), loop.time())
        self.pending += 1
        try:
            self._queue.append(item)
            self._wake.set()
            return await asyncio.wait_for(item.future, timeout_s)
        finally:
            self.pending -= 1

    async def _gather(self) -> list[_Item]:
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        batch = [self._queue.popleft()]
        deadline = batch[0].enqueued + self.max_wait
        while len(batch) < self.max_batch_size:
            if self._queue:
                batch.append(self._queue.popleft())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self.arriving <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except (asyncio.TimeoutError, TimeoutError):
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [it for it in await self._gather() if not it.future.done()]  # timed-out items are dropped
            if not batch:
                continue
            t0 = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, [it.value for it in batch])
            except Exception as e:  # a bug in the model code fails this batch, not the server
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            if self.on_batch:
                self.on_batch(len(batch), loop.time() - t0)
            for it, r in zip(batch, results):
                if not it.future.done():
                    it.future.set_result(r)


def stats(batcher: MicroBatcher) -> dict[str, Any]:
    return {"pending": batcher.pending, "max_batch_size": batcher.max_batch_size,
            "max_wait_ms": batcher.max_wait * 1000, "max_queue": batcher.max_queue}
