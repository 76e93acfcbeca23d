"""Processes that never outlive their parent: ``PR_SET_PDEATHSIG`` on Linux, a watchdog elsewhere.

A training job's worker and each DDP rank it spawns call :func:`die_with_parent` first thing, so that
killing the server (with any signal, ``kill -9`` included) ends every process of every job: the worker
dies with the server, and its ranks die with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Optional

__all__ = ["die_with_parent", "process_start_time"]

_PR_SET_PDEATHSIG = 1


def _prctl_pdeathsig(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent: Optional[int] = None) -> None:
    """Makes this process end (SIGKILL) as soon as its parent does.

    On Linux the kernel sends the signal (``PR_SET_PDEATHSIG``; note that it fires when the parent
    *thread* that started this process ends, so parents start such children from a thread that lives
    as long as they do). A parent that died before the call is caught by comparing ``getppid`` with
    ``parent``. Elsewhere a daemon thread polls ``getppid`` once a second.

    Args:
        parent: the pid this process expects as its parent; None: the current parent.
    """
    expected = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux") and _prctl_pdeathsig(signal.SIGKILL):
        if os.getppid() != expected:  # the parent died before prctl took effect
            os._exit(1)
        return

    def _watch() -> None:
        while os.getppid() == expected:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != expected:
        os._exit(1)
    threading.Thread(target=_watch, name="parent-watchdog", daemon=True).start()


def process_start_time(pid: int) -> int:
    """Returns a process's start time in clock ticks since boot (``/proc/<pid>/stat``), or 0 if unknown.

    With the pid it names one process for good: a pid the kernel reuses gets another start time.

    Args:
        pid: the process.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return 0
    # the command name (field 2) may hold spaces and parentheses: fields after it follow the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall: starttime
    except (IndexError, ValueError):
        return 0
