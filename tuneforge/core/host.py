"""What the host still has: memory this process may allocate (MemAvailable, or less under a
cgroup limit) and its resident size. Imports nothing of tuneforge, so any layer may ask
(core/memory.py plans a step with it, core/data/mapped.py decides memory vs disk)."""
from __future__ import annotations

from pathlib import Path


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _meminfo(key: str) -> int | None:
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def rss_bytes() -> int:
    """This process's resident memory now."""
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cgroup_headroom() -> int | None:
    """What the cgroup limit (v2 memory.max, or v1 limit_in_bytes) still allows, page cache that
    can be reclaimed counted as free; None without a limit."""
    for limit_f, usage_f, stat_f, cache_key in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")):
        limit, usage = _read(limit_f), _read(usage_f)
        if not limit or not usage or not limit.isdigit() or int(limit) >= 1 << 60:
            continue
        cache = 0
        for line in (_read(stat_f) or "").splitlines():
            k, _, v = line.partition(" ")
            if k == cache_key and v.isdigit():
                cache = int(v)
        return max(0, int(limit) - int(usage) + cache)
    return None


def available_bytes() -> int:
    """Memory this process may still allocate: MemAvailable, or less under a cgroup limit."""
    found = [v for v in (_meminfo("MemAvailable"), _cgroup_headroom()) if v is not None]
    return min(found) if found else 1 << 62
