"""Freed memory kept for reuse: large buffers from the heap instead of fresh mappings per call.

glibc's allocator serves every allocation over 32 MiB (and smaller ones, below its adaptive threshold)
with a mapping of its own, and unmaps it when freed. An inference allocates and frees several such
buffers per call: the image as float32, the model's scores, the mask. Each new mapping is faulted in
page by page and each unmapping costs again, which on the machines measured here is about 0.4 ms per
MiB in faults and 0.07 ms per MiB to unmap. For a 256x256x128 click that is more than the transforms
themselves: NormalizeIntensity, a two-channel score map and an argmax took 58 ms with the defaults
and 28 ms with freed memory kept.

:func:`retain_freed_memory` makes the allocator take large buffers from the heap (no mappings of
their own), in one arena (so a model thread's buffers are reused by the next call's thread), and
return memory to the system only once more than ``keep_bytes`` is free at the heap's top. The
server's resident memory then stays near its peak, up to ``keep_bytes`` above what it uses, as
allocators built for servers (jemalloc, tcmalloc) behave too.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Optional

from monailabel_api.libc import libc_function

__all__ = ["retain_freed_memory", "retained_bytes"]

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TOP_PAD = 64 << 20  # the heap grows by this much beyond each request: fewer brk calls as it grows

_applied: Optional[int] = None


def retain_freed_memory(keep_bytes: int) -> bool:
    """Tunes the C allocator of this whole process to keep up to ``keep_bytes`` of freed memory.

    Args:
        keep_bytes: free memory at the heap's top kept before any is returned to the system (at most
            2 GiB); 0 or less leaves the allocator as it is.

    Returns:
        Whether the allocator took the settings (False where it is not glibc's, or ``keep_bytes`` <= 0).
    """
    global _applied
    if keep_bytes <= 0:
        return False
    if _applied is not None:
        return _applied == keep_bytes
    mallopt = libc_function("mallopt", [ctypes.c_int, ctypes.c_int])
    if mallopt is None:
        return False
    keep = min(int(keep_bytes), (1 << 31) - 1)
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, keep), (_M_TOP_PAD, min(_TOP_PAD, keep))))
    if ok:
        _applied = keep
        logger.info("allocator: large buffers from the heap, up to %d MiB of freed memory kept", keep >> 20)
    return ok


def retained_bytes() -> int:
    """What :func:`retain_freed_memory` set in this process (0 if nothing): job processes inherit it."""
    return _applied or 0
