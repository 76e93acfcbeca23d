"""Transfer progress for the command line: a tqdm bar on a terminal, plain whole lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["PlainProgress", "transfer_progress", "EVERY_S"]

# on a pipe: at most one line per this many seconds (and one at the end)
EVERY_S = 10.0


class PlainProgress:
    """tqdm's ``update``/``close`` as whole lines, so that a log holds no carriage-return fragments.

    Args:
        total: bytes to move.
        desc: what moves (``upload``, ``download``).
        stream: where the lines go.
    """

    def __init__(self, total: int, desc: str, stream: TextIO) -> None:
        self.total, self.desc, self.stream = total, desc, stream
        self.n = 0
        self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= EVERY_S:
            self.last = now
            self._line()

    def close(self) -> None:
        self._line()

    def _line(self) -> None:
        share = 100 * self.n // self.total if self.total else 100
        print(f"{self.desc}: {self.n >> 20}/{self.total >> 20} MiB ({share}%)", file=self.stream, flush=True)


def transfer_progress(total: int, desc: str, stream: TextIO = sys.stderr) -> Any:
    """Returns a progress bar over ``total`` bytes: tqdm on a terminal, :class:`PlainProgress` elsewhere."""
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=stream)
    return PlainProgress(total, desc, stream)
