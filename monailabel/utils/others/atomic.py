"""Crash-safe file writes: a temporary file in the destination folder, flushed, fsynced, renamed.

Readers see the old file or the new one, never a half-written one. One implementation serves the
datastore, training's published models and stats, downloads, and the server's upload state.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, BinaryIO, Callable

__all__ = ["fsync_dir", "atomic_write", "atomic_copy", "atomic_write_json"]


def fsync_dir(folder: str | os.PathLike) -> None:
    """Makes a rename in ``folder`` durable (a no-op where folders cannot be fsynced).

    Args:
        folder: the folder.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported everywhere (Windows); the rename itself is atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Writes a file atomically and durably.

    Args:
        path: the destination; its folder is created when missing.
        write: writes the content to the binary file it is given.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copies ``src`` to ``dst`` atomically.

    Args:
        src: the file to copy.
        dst: the destination.
    """

    def _write(f: BinaryIO) -> None:
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f, 1 << 20)

    atomic_write(dst, _write)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes ``data`` as indented JSON atomically.

    Args:
        path: the destination.
        data: anything ``json.dumps`` takes.
    """
    text = json.dumps(data, indent=2).encode("utf-8")
    atomic_write(path, lambda f: f.write(text))
