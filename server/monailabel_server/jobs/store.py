"""The job store: jobs and their events in the database, so history and progress survive restarts.

One table of jobs, one of events numbered per job from 1 without gaps. Each job has a kind (``train``
or ``scoring``) and a target (``model``: the trainer or the scoring method). The database is the
embedded SQLite file by default, or the one ``MONAI_LABEL_DATABASE_URL`` names (PostgreSQL, shared by
several replicas). Each job records the replica that runs it (``owner``); each replica records a
heartbeat in ``replicas``, so the others can tell when it died (see :class:`JobStore.replica_alive`).
Watchers in this process wait on a condition each append notifies; other replicas' appends are seen
by polling.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from monailabel.db import Migration, database_url, migrate, open_database
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.utils.lifetime import process_start_time

__all__ = [
    "JobRecord", "JobEvent", "JobNode", "JobStore", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TERMINAL",
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

#: the notification channel of job changes on a shared database
_CHANNEL = "monailabel_jobs"

_COLUMNS = (
    "job_id, model, state, params, create_time, start_time, end_time, error, last_log_lines, best_metric, "
    "best_metric_epoch, epoch, max_epochs, published_version, published_path, last_sequence, kind, result, trigger, "
    "pid, pid_start, owner"
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


def _add_missing_columns(db: Any, conn: Any) -> None:
    """Adds the columns a jobs table of an older (embedded) database lacks."""
    if db.dialect != "sqlite":
        return
    have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    for name, definition in _ADDED_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")


_MIGRATIONS = [
    Migration(1, "jobs and events", [
        *(stmt for stmt in _SCHEMA.split(";") if stmt.strip()),
        _add_missing_columns,
        "CREATE INDEX IF NOT EXISTS jobs_by_kind ON jobs (kind, create_time DESC, job_id)",
    ]),
    Migration(2, "replicas and the replica that runs each job", [
        "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
        "CREATE TABLE IF NOT EXISTS replicas (replica_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, "
        "pid_start INTEGER NOT NULL, started REAL NOT NULL, heartbeat REAL NOT NULL)",
    ]),
    Migration(3, "the nodes (replicas) of train jobs that span several", [
        "CREATE TABLE IF NOT EXISTS job_nodes (job_id TEXT NOT NULL, node INTEGER NOT NULL, replica_id TEXT NOT NULL, "
        "state TEXT NOT NULL, spec TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', pid INTEGER NOT NULL DEFAULT 0, "
        "pid_start INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (job_id, node))",
    ]),
]


@dataclass
class JobNode:
    """One node (replica) of a train job that spans several.

    Attributes:
        job_id: the job.
        node: 0 for the replica that runs the job (it serves the rendezvous), 1.. for those that joined.
        replica_id: the replica.
        state: RUNNING, then SUCCEEDED, FAILED or CANCELLED.
        spec: node 0's train request (the rendezvous and the records every node trains on).
        error: why this node's part failed.
        pid: the node's worker process.
        pid_start: that process's start time.
    """

    job_id: str
    node: int
    replica_id: str
    state: str
    spec: Dict[str, Any]
    error: str = ""
    pid: int = 0
    pid_start: int = 0


@dataclass
class Replica:
    """A server replica as recorded.

    Attributes:
        replica_id: its id.
        host: its machine.
        pid: its process.
        pid_start: its process's start time (clock ticks since boot).
        heartbeat: when it last said it was alive.
    """

    replica_id: str
    host: str
    pid: int
    pid_start: int
    heartbeat: float


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
        owner: the replica that runs it ("" while queued).
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
    owner: str = ""

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


def model_lock(kind: str, model: str) -> str:
    """The lock name that serialises starting jobs of a model (or scoring method), on every replica."""
    return f"job:{kind}:{model}"


def _row(row: Tuple[Any, ...]) -> JobRecord:
    r = list(row)[: len(_COLUMNS.split(','))]
    r[3] = json.loads(r[3])
    r[8] = json.loads(r[8])
    r[17] = json.loads(r[17])
    return JobRecord(*r)


class JobStore:
    """Jobs and events in the database (``MONAI_LABEL_DATABASE_URL``, else the SQLite file ``path``).

    Args:
        path: the embedded database file; its folder is created.
        url: the database; empty for ``MONAI_LABEL_DATABASE_URL`` or else ``path``.
    """

    def __init__(self, path: Path, url: str = "") -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        self.db = open_database(url or database_url(path))
        migrate(self.db, "jobs", _MIGRATIONS)
        self._generation = 0
        # on a shared database other replicas' appends arrive as notifications (LISTEN/NOTIFY)
        self._unlisten = self.db.listen(_CHANNEL, lambda _payload: self._notify())

    @property
    def listening(self) -> bool:
        """Whether other replicas' changes wake waiters at once (PostgreSQL), rather than being polled for."""
        return self._unlisten is not None

    @property
    def generation(self) -> int:
        """A counter of changes seen by this process (its own, and other replicas' when listening)."""
        with self._lock:
            return self._generation

    def close(self) -> None:
        """Closes the database."""
        if self._unlisten is not None:
            self._unlisten()
        self.db.close()

    # -- jobs -----------------------------------------------------------------------------------------
    def create(
        self,
        model: str,
        params: Dict[str, Any],
        state: str,
        max_epochs: int = 0,
        kind: str = TRAIN,
        trigger: str = "client",
        conflict: Optional[Callable[[List[JobRecord]], None]] = None,
    ) -> JobRecord:
        """Creates a job with a fresh id and its first (state) event.

        With ``conflict``, the model's active jobs are read in the same transaction, under a lock that
        every replica's create of that model takes (so "one job per model" holds cluster-wide), and
        ``conflict`` is called with them when there are any (it raises to refuse).

        Args:
            model: the trainer (or scoring method).
            params: the request.
            state: QUEUED or RUNNING.
            max_epochs: epochs to train.
            kind: ``train`` or ``scoring``.
            trigger: why the job starts.
        """
        job = JobRecord(uuid.uuid4().hex[:16], model, state, dict(params), time.time(), max_epochs=max_epochs)
        with self.db.write(lock=model_lock(kind, model)) as c:
            if conflict is not None:
                active = self.active(model, kind)
                if active:
                    conflict(active)
            c.execute(
                "INSERT INTO jobs (job_id, model, state, params, create_time, max_epochs, kind, trigger) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job.job_id, model, state, json.dumps(job.params), job.create_time, max_epochs, kind, trigger),
            )
            self._append(c, job.job_id, {"type": "state", "state": state, "message": ""})
        self._notify()
        return self.get(job.job_id)

    def _notify(self) -> None:
        with self._lock:
            self._generation += 1
            self.changed.notify_all()

    def get(self, job_id: str, kind: Optional[str] = None) -> JobRecord:
        """Returns a job.

        Args:
            job_id: the job.
            kind: when set, a job of another kind is NOT_FOUND too.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown id.
        """
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
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
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY create_time DESC, job_id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        return [_row(r) for r in rows]

    def active(self, model: str, kind: str = TRAIN) -> List[JobRecord]:
        """Returns the queued and running jobs of a model (or scoring method), oldest first."""
        rows = self.db.execute(
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
        if values:
            cols = ", ".join(f"{k} = ?" for k in values)
            self.db.execute(f"UPDATE jobs SET {cols} WHERE job_id = ?", (*values.values(), job_id))
        self._notify()
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
        with self.db.write() as c:
            cols = ", ".join(f"{k} = ?" for k in values)
            c.execute(f"UPDATE jobs SET {cols} WHERE job_id = ?", (*values.values(), job_id))
            self._append(c, job_id, {"type": "state", "state": state, "message": message})
        self._notify()
        return self.get(job_id)

    def fail_unfinished(self, reason: str) -> List[JobRecord]:
        """Marks every queued or running job FAILED (their server died); returns them as they were."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?)", ACTIVE).fetchall()
        jobs = [_row(r) for r in rows]
        for job in jobs:
            self.set_state(job.job_id, FAILED, reason, error=reason)
        return jobs

    def next_version(self, model: str) -> int:
        """Returns the model version the next publish gets."""
        row = self.db.execute(
            "SELECT MAX(published_version) FROM jobs WHERE kind = ? AND model = ?", (TRAIN, model)
        ).fetchone()
        return int(row[0] or 0) + 1

    # -- events ---------------------------------------------------------------------------------------
    def _append(self, c: Any, job_id: str, payload: Dict[str, Any]) -> int:
        now = time.time()
        self.db.notify(c, _CHANNEL, job_id)  # delivered to the other replicas when the transaction commits
        # the UPDATE locks the job's row, so concurrent appends (any replica's) number events without gaps
        c.execute("UPDATE jobs SET last_sequence = last_sequence + 1 WHERE job_id = ?", (job_id,))
        (seq,) = c.execute("SELECT last_sequence FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        c.execute(
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
        with self.db.write() as c:
            for payload in payloads:
                seq = self._append(c, job_id, payload)
        self._notify()
        return seq

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> List[JobEvent]:
        """Returns a job's events with a sequence number above ``after``, in order.

        Args:
            job_id: the job.
            after: the last sequence number already seen.
            limit: events to return at most.
        """
        rows = self.db.execute(
            "SELECT sequence, time, payload FROM events WHERE job_id = ? AND sequence > ? "
            "ORDER BY sequence LIMIT ?",
            (job_id, after, limit),
        ).fetchall()
        return [JobEvent(job_id, s, t, json.loads(p)) for s, t, p in rows]

    def wait(self, timeout: float, seen: Optional[int] = None) -> None:
        """Waits until something changes, or ``timeout`` seconds.

        Args:
            timeout: seconds at most.
            seen: the :attr:`generation` the caller read before it looked; a change since then returns at once
                (so a change between the caller's look and this wait is never slept through).
        """
        with self.changed:
            if seen is not None and self._generation != seen:
                return
            self.changed.wait(timeout)

    # -- replicas -------------------------------------------------------------------------------------
    def register_replica(self, replica_id: str) -> None:
        """Records this process as a live replica (host, pid, start time) with a first heartbeat."""
        now = time.time()
        pid = os.getpid()
        self.db.execute(
            "INSERT INTO replicas (replica_id, host, pid, pid_start, started, heartbeat) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (replica_id) DO UPDATE SET heartbeat = excluded.heartbeat",
            (replica_id, socket.gethostname(), pid, process_start_time(pid), now, now),
        )

    def heartbeat(self, replica_id: str) -> None:
        """Says that a replica is alive (re-registering it when another replica had declared it dead)."""
        if self.db.execute("UPDATE replicas SET heartbeat = ? WHERE replica_id = ?",
                           (time.time(), replica_id)).rowcount == 0:
            self.register_replica(replica_id)

    def unregister_replica(self, replica_id: str) -> None:
        """Removes a replica that stops cleanly."""
        self.db.execute("DELETE FROM replicas WHERE replica_id = ?", (replica_id,))

    def replicas(self) -> List[Replica]:
        """Returns the recorded replicas."""
        rows = self.db.execute("SELECT replica_id, host, pid, pid_start, heartbeat FROM replicas").fetchall()
        return [Replica(str(r[0]), str(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows]

    @staticmethod
    def replica_alive(replica: Optional[Replica], timeout_s: float, now: Optional[float] = None) -> bool:
        """Whether a replica is alive: its heartbeat is recent and, on this host, its process still runs.

        Args:
            replica: the replica (None: not recorded, so not alive).
            timeout_s: heartbeats older than this mean it died.
            now: the time (default: now).
        """
        if replica is None:
            return False
        if replica.heartbeat < (time.time() if now is None else now) - timeout_s:
            return False
        if replica.host == socket.gethostname():
            return process_start_time(replica.pid) == replica.pid_start
        return True

    def claim(self, job_id: str, owner: str) -> bool:
        """Makes ``owner`` the replica that runs a queued job; False when another replica claimed it first."""
        return bool(self.db.execute(
            "UPDATE jobs SET owner = ? WHERE job_id = ? AND state = ? AND owner = ''", (owner, job_id, QUEUED)
        ).rowcount == 1)

    def fail_orphan(self, job_id: str, owner: str, state: str, reason: str) -> bool:
        """Marks a job FAILED if it is still in ``state`` under ``owner`` (a dead replica); False otherwise.

        The check and the change are one transaction, so when several replicas find the same dead
        replica, the job fails (and gets its state event) once.
        """
        with self.db.write() as c:
            changed = c.execute(
                "UPDATE jobs SET state = ?, error = ?, end_time = ? WHERE job_id = ? AND state = ? AND owner = ?",
                (FAILED, reason, time.time(), job_id, state, owner),
            ).rowcount
            if changed:
                self._append(c, job_id, {"type": "state", "state": FAILED, "message": reason})
        self._notify()
        return bool(changed)

    def forget_replicas(self, replica_ids: List[str]) -> None:
        """Removes dead replicas' rows."""
        for replica_id in replica_ids:
            self.db.execute("DELETE FROM replicas WHERE replica_id = ?", (replica_id,))

    # -- nodes of a job across replicas ------------------------------------------------------------------
    def add_node(self, job_id: str, node: int, replica_id: str, spec: Dict[str, Any]) -> bool:
        """Records ``replica_id`` as node ``node`` of a job; False when another replica took that node first."""
        return bool(self.db.execute(
            "INSERT INTO job_nodes (job_id, node, replica_id, state, spec) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id, node) DO NOTHING",
            (job_id, node, replica_id, RUNNING, json.dumps(spec)),
        ).rowcount == 1)

    def nodes(self, job_id: str) -> List[JobNode]:
        """Returns the nodes of a job, node 0 first (none for a job on one replica)."""
        rows = self.db.execute(
            "SELECT job_id, node, replica_id, state, spec, error, pid, pid_start FROM job_nodes WHERE job_id = ? "
            "ORDER BY node", (job_id,)).fetchall()
        return [JobNode(str(r[0]), int(r[1]), str(r[2]), str(r[3]), json.loads(r[4]), str(r[5]), int(r[6]),
                        int(r[7])) for r in rows]

    def running_node_jobs(self) -> List[str]:
        """Returns the running jobs that span several replicas."""
        rows = self.db.execute(
            "SELECT n.job_id FROM job_nodes n JOIN jobs j ON j.job_id = n.job_id WHERE n.node = 0 AND j.state = ?",
            (RUNNING,)).fetchall()
        return [str(r[0]) for r in rows]

    def update_node(self, job_id: str, node: int, **values: Any) -> None:
        """Sets columns (``state``, ``error``, ``pid``, ``pid_start``) of one node of a job."""
        if not values or set(values) - {"state", "error", "pid", "pid_start"}:
            raise ValueError(f"not node columns: {sorted(values)}")
        sets = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE job_nodes SET {sets} WHERE job_id = ? AND node = ?", (*values.values(), job_id, node))

    def count_by_state(self) -> Dict[Tuple[str, str], int]:
        """Returns how many jobs there are of each ``(kind, state)``."""
        rows = self.db.execute("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state").fetchall()
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}
