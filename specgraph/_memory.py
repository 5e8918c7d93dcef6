"""The resource guard: refuse, before allocating, a model that cannot fit in this machine's memory."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import ResourceError
from ._plan import Plan

__all__ = ["available_memory", "check_memory", "format_bytes"]


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KB``; decimal units, as memory is usually quoted."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB", "EB"):
        if abs(n) < 1000 or unit == "EB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _read_int(path: str, field: str | None = None) -> int | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    if field is None:
        value = text.strip()
        return int(value) if value.isdigit() else None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else None  # meminfo is in kB
    return None


def available_memory() -> int | None:
    """Bytes this process can still allocate: the smallest of the kernel's MemAvailable and the
    container's (cgroup v2 or v1) limit minus its usage; None where neither can be read."""
    candidates = [_read_int("/proc/meminfo", "MemAvailable")]
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         (v1 + "limit_in_bytes", v1 + "usage_in_bytes")):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None and cap < 1 << 60:  # v1 reports "no limit" as ~2**63
            candidates.append(max(cap - used, 0))
    known = [c for c in candidates if c is not None]
    if known:
        return min(known)
    try:  # not Linux: physical memory is the best bound we have
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(plan: Plan, *, available: int | None = None) -> None:
    """Raise :class:`ResourceError` when ``plan``'s weights plus its activations at batch 1 (float32,
    see :func:`specgraph.stats`) exceed ``available`` bytes (default: :func:`available_memory`).

    Backends call it before allocating; ``compile(..., check_memory=False)`` skips it."""
    from ._stats import stats

    available = available_memory() if available is None else available
    if available is None:
        return
    s = stats(plan)
    need = s.param_bytes + s.activation_bytes
    if need > available:
        raise ResourceError(
            f"{plan.spec_name} {plan.variant} needs {format_bytes(need)}: {s.params:,} parameters = "
            f"{format_bytes(s.param_bytes)} of float32 weights, plus {format_bytes(s.activation_bytes)} of "
            f"activations at batch 1 (training); this machine has {format_bytes(available)} available. Shrink "
            "the variant or the input size, or pass check_memory=False to build it anyway")
