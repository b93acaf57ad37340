"""Progress of the long phases of a command (decoding images, extracting frozen features,
training), one mechanism for all of them: a rich bar on a terminal; elsewhere (logs of CI and
batch jobs) a plain line at most every `every` seconds, and nothing at all for a phase that ends
before its first line is due, so short runs keep short logs.

    with phase("decoding images", total=len(files), unit="images") as p:
        for ...:
            p.advance()

A terminal shows one live display at a time: a phase started while another one is live (the
epoch bar inside the training bar, feature extraction from a callback) becomes a row of it."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Callable, Iterator

log = logging.getLogger("tuneforge")

_live = None  # the rich Progress on screen now, if any


def is_tty() -> bool:
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    """'45 s', '12 min', '2.5 h': how long, to the precision an estimate has."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def echo(line: str) -> None:
    """A line above the live display if one is on screen, else on stderr."""
    if _live is not None:
        _live.console.print(line)
    else:
        print(line, file=sys.stderr, flush=True)


def _rich(transient: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    return RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), transient=transient)


class Phase:
    """One phase of `total` units. `live`: a rich bar (default: when stderr is a terminal);
    otherwise a log line at most every `every` seconds (`every=None`: none). `transient`: a bar
    that owns the display removes it at the end (feature extraction); the training bar stays.
    `keep`: a row added to another phase's display stays there after close."""

    INFO_EVERY = 0.5

    def __init__(self, name: str, total: int, unit: str = "items", live: bool | None = None,
                 every: float | None = 10.0, transient: bool = True, keep: bool = False):
        self.name, self.total, self.unit = name, total, unit
        self.live = is_tty() if live is None else live
        self.every, self.transient, self.keep = every, transient, keep
        self.done, self.printed = 0, False
        self.info_t = float("-inf")  # when a live bar's text was last drawn
        self.own = None  # the rich display this phase started (and stops)
        self.task = None

    def start(self) -> "Phase":
        global _live
        self.t0 = self.last = time.perf_counter()
        if self.live:
            if _live is None:
                self.own = _live = _rich(self.transient)
                _live.start()
            self.task = _live.add_task(self.name, total=self.total, info="")
        return self

    def advance(self, n: int = 1, info: str | Callable[[], str] | None = None) -> None:
        """`n` more done. `info`: the text beside the bar or line; a function is called only when
        it is drawn (a live bar's text at most every INFO_EVERY s, a line when one is due), so
        what it reads (a loss on a GPU) is not fetched on every step."""
        self.done += n
        if self.task is not None and _live is not None:
            if callable(info):
                now = time.perf_counter()
                due = now - self.info_t >= self.INFO_EVERY or self.done >= self.total
                info = info() if due else None
                if due:
                    self.info_t = now
            _live.update(self.task, advance=n, **({"info": info} if info is not None else {}))
            return
        now = time.perf_counter()
        if self.every is not None and now - self.last >= self.every and self.done < self.total:
            self.last, self.printed = now, True
            info = info() if callable(info) else info
            rate = self.done / (now - self.t0)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d %s (%.0f%%), %.3g %s/s, ~%s left%s", self.name, self.done, self.total, self.unit,
                     100 * self.done / max(self.total, 1), rate, self.unit, duration(left), f" ({info})" if info else "")

    def close(self) -> None:
        global _live
        if self.task is not None and _live is not None and not self.keep:
            _live.remove_task(self.task)
        if self.own is not None:
            self.own.stop()
            if _live is self.own:
                _live = None
        self.task = self.own = None
        if self.printed:  # a phase that said it was running also says it ended
            log.info("%s: %d %s in %s", self.name, self.done, self.unit, duration(time.perf_counter() - self.t0))
            self.printed = False


@contextlib.contextmanager
def phase(name: str, total: int, unit: str = "items", **kw) -> Iterator[Phase]:
    """A `Phase`, closed however the block ends."""
    p = Phase(name, total, unit, **kw).start()
    try:
        yield p
    finally:
        p.close()
