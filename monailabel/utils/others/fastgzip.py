"""Gzip through ISA-L (``isal``) when it is installed, the standard library otherwise.

``.nii.gz`` volumes and masks are gzip streams: ISA-L's deflate/inflate are several times faster than
zlib's at the low levels masks are written with, and its output is ordinary gzip that any reader
(nibabel, ITK, 3D Slicer) opens. Everything here has the standard library's signatures, so callers do
not care which one runs.
"""

from __future__ import annotations

import gzip
import zlib
from typing import IO, Any, Tuple, Type

_igzip: Any = None
_isal_zlib: Any = None
try:  # an optional accelerator: the server and SDK work without it
    from isal import igzip, isal_zlib

    _igzip, _isal_zlib = igzip, isal_zlib
except ImportError:  # pragma: no cover - depends on the environment
    pass

__all__ = ["BACKEND", "ERRORS", "GzipFile", "compress", "decompress", "install_nibabel_reader"]

#: What reading corrupt or truncated gzip data raises, whichever implementation runs.
ERRORS: Tuple[Type[BaseException], ...] = (OSError, EOFError, zlib.error) + (
    (_isal_zlib.error,) if _isal_zlib is not None else ()
)

#: Which implementation runs: ``"isal"`` or ``"zlib"``.
BACKEND = "isal" if _igzip is not None else "zlib"
# ISA-L has levels 0-3; zlib's 1 and ISA-L's 1 are both "fast", and ISA-L's 3 compresses like zlib's 6
_ISAL_MAX_LEVEL = 3


def _level(level: int) -> int:
    return min(max(level, 0), _ISAL_MAX_LEVEL) if _igzip is not None else level


def GzipFile(fileobj: IO[bytes], mode: str = "rb", compresslevel: int = 1, mtime: int = 0) -> Any:  # noqa: N802
    """A gzip file object over ``fileobj`` (``gzip.GzipFile``'s interface).

    Args:
        fileobj: the underlying binary file.
        mode: ``rb`` or ``wb``.
        compresslevel: deflate level (clamped to ISA-L's 0-3 when it runs).
        mtime: the header's modification time (0: the same bytes for the same data).
    """
    if _igzip is not None:
        return _igzip.IGzipFile(fileobj=fileobj, mode=mode, compresslevel=_level(compresslevel), mtime=mtime)
    return gzip.GzipFile(fileobj=fileobj, mode=mode, compresslevel=compresslevel, mtime=mtime)


def compress(data: bytes, compresslevel: int = 1) -> bytes:
    """Gzip-compresses ``data`` in one call (header mtime 0)."""
    if _igzip is not None:
        return _igzip.compress(data, compresslevel=_level(compresslevel), mtime=0)
    return gzip.compress(data, compresslevel=compresslevel, mtime=0)


def decompress(data: bytes) -> bytes:
    """Inflates a whole gzip stream."""
    return _igzip.decompress(data) if _igzip is not None else gzip.decompress(data)


_installed = False


def install_nibabel_reader() -> None:
    """Makes nibabel read ``.gz`` files through ISA-L (writing stays nibabel's own); idempotent.

    MONAI's ``LoadImage`` reads ``.nii.gz`` through nibabel, so decoding a compressed volume into a
    session or an infer call inflates at ISA-L's speed.
    """
    global _installed
    if _installed or _igzip is None:
        return
    from nibabel import openers

    entry = openers.Opener.compress_ext_map.get(".gz")
    if entry is None:
        return
    original, names = entry

    def gzip_open(filename: Any, mode: str = "rb", compresslevel: int = 9, mtime: int = 0,
                  keep_open: bool = False) -> Any:
        if mode in ("r", "rb"):
            return _igzip.open(filename, "rb")
        return original(filename, mode, compresslevel, mtime, keep_open)

    openers.Opener.compress_ext_map[".gz"] = (gzip_open, names)
    _installed = True
