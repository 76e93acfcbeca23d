"""Disk space reserved ahead of a streamed file, shared by client and server.

A stream announces its size in its header, so the file it lands in can have its blocks reserved
before the first byte: Linux's ``fallocate`` with ``FALLOC_FL_KEEP_SIZE``, which allocates past the
end of the file without changing its size (a reader, or a resumed upload that measures the file,
sees only the bytes written). The writes that follow then skip the file system's block allocation:
on ext4 here, 128 MiB in 1 MiB writes went into the page cache in 12.5 ms instead of 21.5.

A disk without room for the whole stream says so before its first byte: :func:`reserve` raises
``ENOSPC`` (or ``EDQUOT``) at once, rather than a write failing part of the way through.

The space stays reserved until the file is truncated or removed. :func:`release` gives back what
the stream did not fill (a broken stream kept for a later resume).
"""

from __future__ import annotations

import ctypes
import errno
import os

from monailabel_api.libc import last_errno, libc_function

__all__ = ["reserve", "release"]

_KEEP_SIZE = 0x01  # FALLOC_FL_KEEP_SIZE
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


_FALLOCATE = libc_function("fallocate", [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64])


def reserve(fd: int, offset: int, length: int) -> bool:
    """Reserves ``length`` bytes of disk from ``offset`` in the open file ``fd``, keeping its size.

    Where the call or the file system lacks it, nothing is reserved and the writes allocate as
    they go.

    Returns:
        Whether the space was reserved.

    Raises:
        OSError: ENOSPC, EDQUOT or EFBIG when the file system has no room for ``length`` bytes.
    """
    if _FALLOCATE is None or length <= 0 or offset < 0:
        return False
    if _FALLOCATE(fd, _KEEP_SIZE, offset, length) == 0:
        return True
    code = last_errno()
    if code in _NO_ROOM:
        raise OSError(code, f"{os.strerror(code)}: no room for {length} bytes")
    return False


def release(fd: int) -> None:
    """Gives back the space reserved past the end of the open file ``fd`` (its size unchanged)."""
    os.ftruncate(fd, os.fstat(fd).st_size)
