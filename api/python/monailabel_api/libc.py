"""The few Linux C library calls Python's ``os`` and ``mmap`` modules do not offer, typed once.

Each is looked up by name in the running process (glibc on Linux); elsewhere, or where the C
library lacks it, :func:`libc_function` gives None and the caller goes without.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any, Optional, Sequence

__all__ = ["libc_function", "last_errno"]


def _process_libc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _process_libc()


def libc_function(name: str, argtypes: Sequence[Any], restype: Any = ctypes.c_int) -> Optional[Any]:
    """The C library's function ``name`` with its argument and result types set, or None."""
    if _LIBC is None:
        return None
    try:
        function = getattr(_LIBC, name)
    except AttributeError:  # not in this C library (musl has no mallopt)
        return None
    function.argtypes = list(argtypes)
    function.restype = restype
    return function


def last_errno() -> int:
    """``errno`` as the last call through :func:`libc_function` left it."""
    return ctypes.get_errno()
