"""Atomic file writes and readable storage errors, for every file a run or a bundle writes.

A write goes to a temp file next to its destination, is flushed to disk (fsync), then renamed
over the destination (os.replace, atomic on POSIX): a crash, SIGKILL or full disk at any moment
leaves either the old file or the new one, never half of one. On failure the temp file is
removed and an OSError of the storage kind (disk full, read-only, no permission) becomes a
one-line StorageError naming the path, which the CLI prints without a traceback.

    atomic_write_text(run / "report.json", text)
    atomic_write(run / "checkpoints" / "last.pt", lambda f: torch.save(state, f))
    with storage_errors(bundle_dir):     # any other writes: same one-line errors
        ...
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from ..errors import StorageError

# errno -> what the user should hear; anything else is not a storage problem and stays an OSError
_STORAGE_ERRNOS = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error (failing disk?)",
    errno.EFBIG: "file too large for this file system",
}


def temp_path(path: Path) -> Path:
    """The temp file a write of `path` goes through: hidden, in the same folder (so the rename
    stays on one file system) and per process (two writers never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def storage_error(e: OSError, path: Path | str) -> StorageError | None:
    """The StorageError an OSError of the storage kind means for `path`, else None."""
    what = _STORAGE_ERRNOS.get(e.errno or -1)
    return None if what is None else StorageError(f"cannot write {path}: {what}")


@contextlib.contextmanager
def storage_errors(path: Path | str) -> Iterator[None]:
    """Turn storage OSErrors raised inside the block into a StorageError naming `path` (or the
    file the OSError names, when it names one)."""
    try:
        yield
    except OSError as e:
        err = storage_error(e, e.filename or path)
        if err is None:
            raise
        raise err from e


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def atomic_write(path: Path | str, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` atomically: `write` gets a binary file open on the temp file (torch.save,
    safetensors bytes, fig.savefig all accept one). Creates the parent folder."""
    path = Path(path)
    tmp = temp_path(path)
    with storage_errors(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            # KeyboardInterrupt too: no stray .tmp files; SIGKILL leaves one, the next write replaces it
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def remove_stale_temps(folder: Path | str) -> None:
    """Delete temp files left in `folder` by a writer that was killed (SIGKILL, power cut)."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
