"""``bytes`` objects filled in place: where a download into memory lands, and where an upload's file
is read into its messages.

A download announces its size in its header, so its bytes can be received straight into the object
handed back, with no growing buffer and no final copy. An upload's chunk message is its few header
bytes and then the file's bytes, so the file can be read straight into the message gRPC sends. The
object is a ``bytes`` made uninitialized by CPython's own ``PyBytes_FromStringAndSize(NULL, n)``
(the documented way for C code to build one before it is shared) and written before anyone else
sees it.

Fresh memory is the other cost. Each 4 KiB page is faulted in on first write, about 0.5 ms per MiB
on the virtual machines measured here, which is as long as gRPC takes to receive that MiB. A large
buffer is therefore advised to use transparent huge pages (``MADV_HUGEPAGE``), where the kernel
offers them (``/sys/kernel/mm/transparent_hugepage/enabled`` set to ``madvise`` or ``always``): a
128 MiB buffer then faults in 64 times instead of 32,768, in 8 ms instead of 57.

Other Python implementations, and any failure to build the object, fall back to ``io.BytesIO``.
"""

from __future__ import annotations

import ctypes
import io
import mmap
import sys
from typing import Any, Optional, Tuple

from monailabel_api.libc import libc_function

__all__ = ["FilledBytes", "HUGE_PAGE_MIN", "unshared_bytes"]

# below this a buffer comes from the heap, whose pages are usually faulted in already
HUGE_PAGE_MIN = 8 << 20
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 14)


def _new_bytes() -> Optional[Any]:
    if sys.implementation.name != "cpython":
        return None
    make = ctypes.pythonapi.PyBytes_FromStringAndSize
    make.restype = ctypes.py_object
    make.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    return make


_NEW_BYTES = _new_bytes()
_MADVISE = libc_function("madvise", [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int])
# where a bytes object's characters start: its fixed size, less the one byte of its terminating NUL
_DATA_OFFSET = bytes.__basicsize__ - 1


def unshared_bytes(size: int) -> Optional[Tuple[bytes, memoryview]]:
    """A new ``bytes`` of ``size`` uninitialized bytes and a writable view of them, or None where this
    Python cannot make one (the caller then builds its bytes the usual way).

    The caller must fill the whole view before the object is shared, hashed or compared, and drop
    the view then.
    """
    if _NEW_BYTES is None or size <= 0:
        return None
    try:
        value = _NEW_BYTES(None, size)
        view = memoryview((ctypes.c_char * size).from_address(id(value) + _DATA_OFFSET)).cast("B")
    except (MemoryError, OSError, ValueError, TypeError):
        return None
    return value, view


class FilledBytes:
    """A writable sink of exactly ``size`` bytes whose :meth:`getvalue` is the filled ``bytes``.

    ``write`` appends, as to a file; more than ``size`` bytes is a ``ValueError``. ``getvalue``
    hands over the object itself once it is full (a copy of the part written, before).
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"size must not be negative, not {size}")
        self.size = size
        self.position = 0
        self._value: Any = None
        self._view: Optional[memoryview] = None
        self._fallback: Optional[io.BytesIO] = None
        made = unshared_bytes(size)
        if made is not None:
            self._value, self._view = made
            address = id(self._value) + _DATA_OFFSET
            if size >= HUGE_PAGE_MIN and _MADVISE is not None:
                start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
                end = (address + size) // _HUGE_PAGE * _HUGE_PAGE
                if end > start:
                    _MADVISE(start, end - start, _MADV_HUGEPAGE)  # advice only: an error changes nothing
        if self._view is None:
            self._fallback = io.BytesIO()

    @property
    def in_place(self) -> bool:
        """Whether the bytes are received in place (False: through the ``BytesIO`` fallback)."""
        return self._fallback is None

    def write(self, data: Any) -> int:
        n = len(data)
        if self.position + n > self.size:
            raise ValueError(f"{self.position + n} bytes written to a buffer of {self.size}")
        if self._view is not None:
            self._view[self.position:self.position + n] = data
        else:
            assert self._fallback is not None
            self._fallback.write(data)
        self.position += n
        return n

    def getvalue(self) -> bytes:
        if self._fallback is not None:
            return self._fallback.getvalue()
        if self.size == 0:
            return b""
        if self.position < self.size:
            assert self._view is not None
            return bytes(self._view[:self.position])
        self._view = None  # the object is whole: nothing writes it any more
        value: bytes = self._value
        return value
