"""The process groups of jobs: end a whole group, find what an earlier server left running, filter logs.

Every job's worker starts a new session (``start_new_session``), so the worker, the DDP ranks it spawns
and anything they start share one process group whose id is the worker's pid. The server ends a job by
signalling that group, never a lone pid, and only while the worker is not yet reaped (until then the
kernel cannot give the number to another process). A job left RUNNING by a server that died is found
again by its recorded pid *and* start time, so a reused pid is never signalled.
"""

from __future__ import annotations

import logging
import os
import re
import signal
from typing import Iterator, List, Optional

from monailabel.utils.lifetime import process_start_time

__all__ = ["signal_group", "session_members", "kill_leftovers", "ClientLog"]

logger = logging.getLogger(__name__)


def signal_group(pgid: int, sig: int) -> bool:
    """Sends ``sig`` to a process group; returns False when the group is gone.

    Args:
        pgid: the group (a job worker's pid).
        sig: the signal.
    """
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _stat_fields(pid: int) -> Optional[List[str]]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def session_members(sid: int) -> List[int]:
    """Returns the pids of the processes in session ``sid`` (Linux ``/proc``; empty elsewhere).

    Args:
        sid: the session id (a job worker's pid).
    """
    out: List[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        # after the command name: state, ppid, pgrp, session, ...
        if fields is not None and len(fields) > 3 and fields[3] == str(sid):
            out.append(int(name))
    return out


def kill_leftovers(pid: int, start_time: int) -> List[int]:
    """Kills what remains of a job whose server died: its worker and every process of its session.

    Nothing is killed when ``pid`` now names another process (a different start time): the number was
    reused, so the job's session is gone (the kernel never reuses a number a live session still holds).

    Args:
        pid: the job's worker pid, as recorded.
        start_time: its start time, as recorded (``process_start_time``).

    Returns:
        the pids it killed.
    """
    if pid <= 0 or pid == os.getpid():
        return []
    now = process_start_time(pid)
    if now and now != start_time:
        return []
    killed = []
    for member in session_members(pid):
        fields = _stat_fields(member)
        if member == os.getpid() or fields is None or fields[0] == "Z" or process_start_time(member) < start_time:
            continue  # a zombie has ended already: only its parent's wait is missing
        try:
            os.kill(member, signal.SIGKILL)
            killed.append(member)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


# the frames of a Python traceback: header, "File ..." lines and the source lines under them
_TRACEBACK_START = ("Traceback (most recent call last):", "During handling of the above exception",
                    "The above exception was the direct cause")
_FRAME = re.compile(r"^\s+\S")


class ClientLog:
    """Turns a job's raw output lines into the lines a client may see.

    Tracebacks lose their frames (the header and the indented ``File ...`` lines), keeping the final
    ``Error: message`` line; every kept line is scrubbed of server paths. The raw lines go to the job's
    log file on the server, untouched.
    """

    def __init__(self) -> None:
        self._in_traceback = False

    def lines(self, raw: str) -> Iterator[str]:
        """Yields the client's version of one raw line (nothing for a traceback frame)."""
        from monailabel_server.errors import scrub

        if raw.startswith(_TRACEBACK_START) or raw.lstrip().startswith("Traceback (most recent call last):"):
            self._in_traceback = True
            return
        if self._in_traceback:
            if _FRAME.match(raw) or not raw.strip():
                return
            self._in_traceback = False
        yield scrub(raw, 2000)
