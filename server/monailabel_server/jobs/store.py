"""The job store: jobs and their events in SQLite (WAL), so history and progress survive restarts.

One table of jobs, one of events numbered per job from 1 without gaps. Each job has a kind (``train``
or ``scoring``) and a target (``model``: the trainer or the scoring method). Only the server process
writes; watchers wait on a condition that each append notifies.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = [
    "JobRecord", "JobEvent", "JobStore", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TERMINAL",
    "TRAIN", "SCORING", "BATCH_INFER", "KINDS",
]

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE = (QUEUED, RUNNING)
TRAIN, SCORING = "train", "scoring"
#: a model run over datastore images (its ``epoch``/``max_epochs`` columns count images done and to do)
BATCH_INFER = "batch_infer"
KINDS = (TRAIN, SCORING, BATCH_INFER)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    create_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    error TEXT NOT NULL DEFAULT '',
    last_log_lines TEXT NOT NULL DEFAULT '[]',
    best_metric REAL,
    best_metric_epoch INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    max_epochs INTEGER NOT NULL DEFAULT 0,
    published_version INTEGER NOT NULL DEFAULT 0,
    published_path TEXT NOT NULL DEFAULT '',
    last_sequence INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'train',
    result TEXT NOT NULL DEFAULT '{}',
    trigger TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL DEFAULT 0,
    pid_start INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (create_time DESC, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_model ON jobs (model, state);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    time REAL NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
"""

_COLUMNS = (
    "job_id, model, state, params, create_time, start_time, end_time, error, last_log_lines, best_metric, "
    "best_metric_epoch, epoch, max_epochs, published_version, published_path, last_sequence, kind, result, trigger, "
    "pid, pid_start"
)
# columns added after the first release, with their definitions (old databases get them on open)
_ADDED_COLUMNS = {
    "kind": "TEXT NOT NULL DEFAULT 'train'",
    "result": "TEXT NOT NULL DEFAULT '{}'",
    "trigger": "TEXT NOT NULL DEFAULT ''",
    "pid": "INTEGER NOT NULL DEFAULT 0",
    "pid_start": "INTEGER NOT NULL DEFAULT 0",
}
_JSON_COLUMNS = ("params", "last_log_lines", "result")


@dataclass
class JobRecord:
    """One job as stored.

    Attributes:
        job_id: the id.
        model: the trainer (or scoring method) it runs.
        state: QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED.
        params: the train request (JSON-able).
        create_time: when it was created (seconds since the epoch).
        start_time: when its process started.
        end_time: when it ended.
        error: why it failed or was cancelled.
        last_log_lines: the last lines its process logged.
        best_metric: best validation metric so far.
        best_metric_epoch: epoch of the best metric.
        epoch: last completed epoch.
        max_epochs: epochs to train.
        published_version: model version it published (0: none).
        published_path: where the published model is.
        last_sequence: sequence number of its last event.
        kind: ``train`` or ``scoring``.
        result: what the job returned (a scoring method's result).
        trigger: why it started (``client``, or what started it by itself).
        pid: its process (the leader of its process group and session; 0 before it starts).
        pid_start: the process's start time in clock ticks since boot (``/proc/<pid>/stat``), so that a
            later server never mistakes a reused pid for the job's process.
    """

    job_id: str
    model: str
    state: str
    params: Dict[str, Any]
    create_time: float
    start_time: Optional[float] = None
    end_time: Optional[float] = None
    error: str = ""
    last_log_lines: List[str] = field(default_factory=list)
    best_metric: Optional[float] = None
    best_metric_epoch: int = 0
    epoch: int = 0
    max_epochs: int = 0
    published_version: int = 0
    published_path: str = ""
    last_sequence: int = 0
    kind: str = TRAIN
    result: Any = field(default_factory=dict)
    trigger: str = ""
    pid: int = 0
    pid_start: int = 0

    @property
    def terminal(self) -> bool:
        """Whether the job has ended."""
        return self.state in TERMINAL


@dataclass
class JobEvent:
    """One event of a job.

    Attributes:
        job_id: the job.
        sequence: its number within the job, from 1.
        time: when it happened.
        payload: ``{"type": "state"|"iteration"|"epoch"|"log", ...}``.
    """

    job_id: str
    sequence: int
    time: float
    payload: Dict[str, Any]


def _row(row: Tuple[Any, ...]) -> JobRecord:
    r = list(row)
    r[3] = json.loads(r[3])
    r[8] = json.loads(r[8])
    r[17] = json.loads(r[17])
    return JobRecord(*r)


class JobStore:
    """Jobs and events in ``path`` (SQLite, WAL).

    Args:
        path: the database file; its folder is created.
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, definition in _ADDED_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_by_kind ON jobs (kind, create_time DESC, job_id)")

    def close(self) -> None:
        """Closes the database."""
        with self._lock:
            self._db.close()

    # -- jobs -----------------------------------------------------------------------------------------
    def create(
        self,
        model: str,
        params: Dict[str, Any],
        state: str,
        max_epochs: int = 0,
        kind: str = TRAIN,
        trigger: str = "client",
    ) -> JobRecord:
        """Creates a job with a fresh id and its first (state) event.

        Args:
            model: the trainer (or scoring method).
            params: the request.
            state: QUEUED or RUNNING.
            max_epochs: epochs to train.
            kind: ``train`` or ``scoring``.
            trigger: why the job starts.
        """
        job = JobRecord(uuid.uuid4().hex[:16], model, state, dict(params), time.time(), max_epochs=max_epochs)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO jobs (job_id, model, state, params, create_time, max_epochs, kind, trigger) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job.job_id, model, state, json.dumps(job.params), job.create_time, max_epochs, kind, trigger),
            )
            self._append(job.job_id, {"type": "state", "state": state, "message": ""})
            self._db.execute("COMMIT")
            self.changed.notify_all()
        return self.get(job.job_id)

    def get(self, job_id: str, kind: Optional[str] = None) -> JobRecord:
        """Returns a job.

        Args:
            job_id: the job.
            kind: when set, a job of another kind is NOT_FOUND too.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown id.
        """
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        job = _row(row) if row is not None else None
        if job is None or (kind is not None and job.kind != kind):
            raise MONAILabelException(
                MONAILabelError.NOT_FOUND, f"no {kind + ' ' if kind else ''}job {job_id!r}", resource=("job", job_id)
            )
        return job

    def list(
        self, offset: int = 0, limit: int = 50, model: str = "", kind: Optional[str] = None, state: str = ""
    ) -> List[JobRecord]:
        """Returns jobs, newest first.

        Args:
            offset: jobs to skip.
            limit: jobs to return at most.
            model: only this model's (or scoring method's), when set.
            kind: only ``train`` or ``scoring`` jobs, when set.
            state: only jobs in this state, when set.
        """
        where, args = [], []
        for column, value in (("kind", kind), ("model", model), ("state", state)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY create_time DESC, job_id LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [_row(r) for r in rows]

    def active(self, model: str, kind: str = TRAIN) -> List[JobRecord]:
        """Returns the queued and running jobs of a model (or scoring method), oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE kind = ? AND model = ? AND state IN (?, ?) "
                "ORDER BY create_time, job_id",
                (kind, model, *ACTIVE),
            ).fetchall()
        return [_row(r) for r in rows]

    def update(self, job_id: str, **values: Any) -> JobRecord:
        """Sets columns of a job (``params``/``last_log_lines`` as Python values).

        Args:
            job_id: the job.
            **values: column values.
        """
        for key in _JSON_COLUMNS:
            if key in values:
                values[key] = json.dumps(values[key])
        with self._lock:
            if values:
                cols = ", ".join(f"{k} = ?" for k in values)
                self._db.execute(f"UPDATE jobs SET {cols} WHERE job_id = ?", (*values.values(), job_id))
            self.changed.notify_all()
        return self.get(job_id)

    def set_state(self, job_id: str, state: str, message: str = "", **values: Any) -> JobRecord:
        """Moves a job to ``state`` and appends the state event, in one transaction.

        Args:
            job_id: the job.
            state: the new state.
            message: why.
            **values: other columns to set with it.
        """
        for key in _JSON_COLUMNS:
            if key in values:
                values[key] = json.dumps(values[key])
        values["state"] = state
        if state in TERMINAL:
            values.setdefault("end_time", time.time())
        elif state == RUNNING:
            values.setdefault("start_time", time.time())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cols = ", ".join(f"{k} = ?" for k in values)
            self._db.execute(f"UPDATE jobs SET {cols} WHERE job_id = ?", (*values.values(), job_id))
            self._append(job_id, {"type": "state", "state": state, "message": message})
            self._db.execute("COMMIT")
            self.changed.notify_all()
        return self.get(job_id)

    def fail_unfinished(self, reason: str) -> List[JobRecord]:
        """Marks every queued or running job FAILED (their server died); returns them as they were."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?)", ACTIVE).fetchall()
        jobs = [_row(r) for r in rows]
        for job in jobs:
            self.set_state(job.job_id, FAILED, reason, error=reason)
        return jobs

    def next_version(self, model: str) -> int:
        """Returns the model version the next publish gets."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(published_version) FROM jobs WHERE kind = ? AND model = ?", (TRAIN, model)
            ).fetchone()
        return int(row[0] or 0) + 1

    # -- events ---------------------------------------------------------------------------------------
    def _append(self, job_id: str, payload: Dict[str, Any]) -> int:
        now = time.time()
        self._db.execute("UPDATE jobs SET last_sequence = last_sequence + 1 WHERE job_id = ?", (job_id,))
        (seq,) = self._db.execute("SELECT last_sequence FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        self._db.execute(
            "INSERT INTO events (job_id, sequence, time, payload) VALUES (?, ?, ?, ?)",
            (job_id, seq, now, json.dumps(payload)),
        )
        return int(seq)

    def append(self, job_id: str, payloads: List[Dict[str, Any]]) -> int:
        """Appends events to a job; returns the last sequence number.

        Args:
            job_id: the job.
            payloads: the events, in order.
        """
        seq = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for payload in payloads:
                seq = self._append(job_id, payload)
            self._db.execute("COMMIT")
            self.changed.notify_all()
        return seq

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> List[JobEvent]:
        """Returns a job's events with a sequence number above ``after``, in order.

        Args:
            job_id: the job.
            after: the last sequence number already seen.
            limit: events to return at most.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT sequence, time, payload FROM events WHERE job_id = ? AND sequence > ? "
                "ORDER BY sequence LIMIT ?",
                (job_id, after, limit),
            ).fetchall()
        return [JobEvent(job_id, s, t, json.loads(p)) for s, t, p in rows]

    def wait(self, timeout: float) -> None:
        """Waits until something changes, or ``timeout`` seconds."""
        with self.changed:
            self.changed.wait(timeout)
