"""The test machine's file system: whether it reserves space ahead, and a size past all of it."""

from __future__ import annotations

import os
from pathlib import Path

from monailabel_api.files import reserve


def reserves_ahead(directory: Path) -> bool:
    """Whether files in ``directory`` can have space reserved past their end (``fallocate``)."""
    probe = directory / ".reserve-probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT)
    try:
        return reserve(fd, 0, 1 << 20)
    finally:
        os.close(fd)
        probe.unlink()


def past_the_disk(directory: Path) -> int:
    """A byte count larger than the whole file system that holds ``directory``."""
    fs = os.statvfs(directory)
    return fs.f_blocks * fs.f_frsize + (1 << 30)
