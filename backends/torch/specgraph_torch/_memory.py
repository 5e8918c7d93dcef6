"""CPU allocator setting for inference loops: keep freed feature maps in the process.

PyTorch's CPU tensors come from the C allocator. glibc hands blocks above its mmap
threshold (a few MB, i.e. most feature maps at 384-640 px) back to the kernel on free,
so every forward pass page-faults the same memory in again, zero-filled; on a
memory-bound CPU that costs as much as the convs themselves (SpineNet-Mobile: ~30%).
TensorFlow's CPU allocator caches; this gives PyTorch the same behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from specgraph import ArgumentError, Problem

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def reuse_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Make glibc keep freed blocks up to ``limit_bytes`` for reuse (process-wide).

    Returns False (and changes nothing) where the C library is not glibc. Memory the
    process has used stays mapped to it, so its resident size does not shrink after a
    large batch; call it in inference servers and benchmarks, not in training jobs that
    need the memory back.
    """
    ArgumentError.expect(limit_bytes, int, "limit_bytes", "a number of bytes (int)")
    if limit_bytes < 0:
        raise ArgumentError(Problem(f"expected a number of bytes >= 0, got {limit_bytes}", "limit_bytes"))
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = ctypes.c_int(min(limit_bytes, 2**31 - 1)).value
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
