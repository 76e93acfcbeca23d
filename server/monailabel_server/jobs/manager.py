"""Runs training and scoring jobs in child processes, one per model (or scoring method) at a time.

A job has a kind: ``train`` runs a trainer, ``scoring`` a scoring method, ``batch_infer`` an infer task
over datastore images (MONAI Label's ``/batch/infer``), saving each mask as an ``original`` label. Batch
inference runs in a worker process like the others rather than on the server's model workers: a run
over a whole datastore takes minutes to hours, and there it would hold the interactive queue, could not
be cancelled as a process group, and a crash in it would be the server's; the price is a second copy
of the model in the worker's memory. A job's process is
``python -m monailabel_server.jobs.worker``; a thread per job tails its output into the store (marked
lines are progress events, the rest log lines) and decides the job's end state from
its exit: 0 SUCCEEDED, after a cancel CANCELLED, else FAILED with the reason (the error it reported,
the signal that killed it, or its exit code) and its last log lines. The server never runs training or
scoring code itself, so a crash of either cannot take it down.

Job processes belong to the server. Each worker leads its own session and process group (its DDP ranks
join it); it dies with the server (``PR_SET_PDEATHSIG``, so even ``kill -9`` of the server ends it, and
its ranks die with it the same way). Workers are started from one long-lived thread because the kernel
ties that signal to the parent *thread*. A cancel or a shutdown signals the whole group. The store
records each worker's pid and start time, so a server that starts after a crash fails the jobs left
RUNNING and kills whatever is left of them, never a process that merely reuses a pid. A worker holds
its model's lock file for its whole life, so two processes never publish the same model.

What clients see of a job's output is scrubbed: no traceback frames and no server paths (see
``processes.ClientLog``); the raw output is in the job's ``job.log`` on the server.

A train job can span several replicas (``nodes``; the server's ``train_nodes`` by default for a
``multi_gpu`` job): the replica that runs it is node 0 and serves a c10d rendezvous on a free port;
the other live replicas see the job in the shared database on their next heartbeat, each takes a free
node (a row in ``job_nodes``, so no node is taken twice) and starts its own worker with node 0's
request. Every worker is a ``torchrun`` agent (see ``monailabel.tasks.train.distributed.run_nodes``):
torch assigns the ranks, rank 0 (on whichever node) forwards progress into the job's events and alone
publishes into the shared model folder, and node 0's worker decides the job's end. A node's replica
that dies fails the job (node 0 kills its own worker); a job that ends, or whose node 0 died, has its
other nodes' workers killed by their replicas.

When a train job publishes a new model version and the app's ``auto_update_scoring`` is on, the app's
scoring methods run again (``MONAILabelApp.async_scoring``), as MONAI Label does after training.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, cast

import monailabel
import monailabel_server
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.utils.lifetime import process_start_time
from monailabel_server.jobs import params as job_params
from monailabel_server.jobs.processes import ClientLog, kill_leftovers, signal_group
from monailabel_server.jobs.protocol import EVENT_MARK, EXIT_CANCELLED
from monailabel_server.jobs.store import (
    BATCH_INFER,
    CANCELLED,
    FAILED,
    KINDS,
    QUEUED,
    RUNNING,
    SCORING,
    SUCCEEDED,
    TRAIN,
    JobEvent,
    JobNode,
    JobRecord,
    JobStore,
    Replica,
)
from monailabel_server.memory import retained_bytes

__all__ = ["JobManager"]

logger = logging.getLogger(__name__)

LAST_LOG_LINES = 20


_WHAT = {TRAIN: "trainer", SCORING: "scoring method", BATCH_INFER: "model"}
_DONE = {TRAIN: "training finished", SCORING: "scoring finished", BATCH_INFER: "batch inference finished"}


def lock_name(kind: str, model: str) -> str:
    """Returns the lock file name of a model (or scoring method): ``<kind>-<model>.lock``, file-safe."""
    return f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}.lock"


def _file_digest(path: str) -> Dict[str, Any]:
    """``{"sha256", "size"}`` of a file."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return {"sha256": digest.hexdigest(), "size": size}


def _free_port(addr: str) -> int:
    """A port free on ``addr`` now (the rendezvous binds it a moment later)."""
    with socket.socket() as s:
        try:
            s.bind((addr, 0))
        except OSError:
            s.bind(("", 0))
        return int(s.getsockname()[1])


def _spans_nodes(job: JobRecord) -> bool:
    """Whether a job is a train job across several replicas (its start recorded ``nodes``)."""
    return job.kind == TRAIN and int(job.params.get("nodes") or 1) > 1


class _Running:
    def __init__(self, proc: subprocess.Popen[str], cancel_file: Path, kind: str, log_file: Path,
                 node: int = 0) -> None:
        self.proc = proc
        self.node = node  # > 0: this replica's part of a job that another replica runs
        self.spans = False  # node 0 of a job across replicas
        self.cancel_file = cancel_file
        self.kind = kind
        self.log_file = log_file
        self.client_log = ClientLog()
        # the group may be signalled only until the worker is reaped (then its pid may be reused)
        self.reap_lock = threading.Lock()
        self.reaped = False
        self.exited = threading.Event()
        self.cancel_requested = False
        self.error: Optional[Dict[str, Any]] = None
        self.stats: Optional[Dict[str, Any]] = None
        self.result: Any = None
        self.logs: Deque[str] = collections.deque(maxlen=LAST_LOG_LINES)
        self.thread: Optional[threading.Thread] = None


class JobManager:
    """Starts, follows, cancels and lists the training and scoring jobs of an app.

    Args:
        app: the app (its trainers validate requests; the worker loads its own copy).
        app_dir: the app folder the worker loads.
        studies: the studies folder (or URI) the worker opens.
        conf: the app's config.
        db_path: the job database (default ``<studies>/.monailabel/jobs.db``; ``MONAI_LABEL_DATABASE_URL``
            names a shared one).
        cancel_grace_s: seconds a cancelled job gets to stop on its own before SIGTERM, and then SIGKILL.
        replica_id: this replica's id (default: a fresh one).
        heartbeat_s: seconds between this replica's heartbeats (and its checks of the others').
        replica_timeout_s: a replica whose heartbeat is older than this is dead: its running jobs are
            marked FAILED by the others.
        train_nodes: nodes a ``multi_gpu`` train job spans when its request does not say (``nodes``).
        node_addr: the address other nodes reach this replica's ranks at (default: the host name).
        join_timeout_s: seconds a job across nodes waits for all of them.
    """

    def __init__(
        self,
        app: MONAILabelApp,
        app_dir: Path,
        studies: str,
        conf: Dict[str, str],
        db_path: Optional[Path] = None,
        cancel_grace_s: float = 10.0,
        replica_id: str = "",
        heartbeat_s: float = 2.0,
        replica_timeout_s: float = 15.0,
        train_nodes: int = 1,
        node_addr: str = "",
        join_timeout_s: float = 120.0,
    ) -> None:
        self.app = app
        self.app_dir = Path(app_dir).resolve()
        # the worker runs in its job folder: a relative studies folder must reach it as an absolute path
        self.studies = str(Path(studies).resolve()) if Path(studies).exists() else studies
        self.conf = dict(conf)
        if db_path is None:
            base = Path(studies) if Path(studies).is_dir() else self.app_dir
            db_path = base / ".monailabel" / "jobs.db"
        self.root = Path(db_path).parent / "jobs"
        self.store = JobStore(Path(db_path))
        self.cancel_grace_s = cancel_grace_s
        self._lock = threading.RLock()
        self._running: Dict[str, _Running] = {}
        self._nodes: Dict[str, _Running] = {}  # this replica's parts of jobs other replicas run
        self.train_nodes = max(1, int(train_nodes))
        self.node_addr = node_addr or socket.gethostname()
        self.join_timeout_s = join_timeout_s
        self._stopping = False
        self.audit: Optional[Any] = None  # the server's AuditLog: model publishes are recorded there
        self.locks = self.root / "locks"
        self.locks.mkdir(parents=True, exist_ok=True)
        # the one thread that starts workers: it lives as long as the manager, and a worker's
        # PR_SET_PDEATHSIG fires when the thread that started it ends
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-spawn")
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.heartbeat_s = heartbeat_s
        self.replica_timeout_s = replica_timeout_s
        self._stopped = threading.Event()
        self.store.register_replica(self.replica_id)
        self.sweep_dead_replicas(startup=True)
        self._heart = threading.Thread(target=self._beat, name="job-heartbeat", daemon=True)
        self._heart.start()

    # -- replicas ---------------------------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stopped.wait(self.heartbeat_s):
            try:
                self.store.heartbeat(self.replica_id)
                self.sweep_dead_replicas()
                self._cancels_from_other_replicas()
                self._watch_nodes()
                self._join_node_jobs()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the heartbeats
                logger.exception("replica heartbeat failed")

    def _cancels_from_other_replicas(self) -> None:
        """Cancels this replica's jobs that another replica was asked to cancel (it left the cancel file)."""
        with self._lock:
            asked = [i for i, r in self._running.items() if not r.cancel_requested and r.cancel_file.exists()]
        for job_id in asked:
            try:
                self.cancel(job_id)  # the signals (a scoring job has no cancel hook) go from here
            except MONAILabelException:
                pass  # it ended meanwhile

    # -- jobs across replicas ---------------------------------------------------------------------------
    def _alive(self, replicas: Optional[List[Replica]] = None) -> set[str]:
        """The ids of the live replicas (this one always), of ``replicas`` or else of those recorded."""
        found = self.store.replicas() if replicas is None else replicas
        return {r.replica_id for r in found if self.store.replica_alive(r, self.replica_timeout_s)} | {self.replica_id}

    def _join_node_jobs(self) -> None:
        """Takes a free node of each running job across replicas that this replica is not part of yet."""
        if self._stopping:
            return
        for job_id in self.store.running_node_jobs():
            with self._lock:
                if job_id in self._running or job_id in self._nodes:
                    continue
                nodes = self.store.nodes(job_id)
                if not nodes or any(n.replica_id == self.replica_id for n in nodes):
                    continue
                spec = nodes[0].spec
                taken = {n.node for n in nodes}
                for node in range(1, int(spec.get("nodes") or 1)):
                    if node not in taken and self.store.add_node(job_id, node, self.replica_id, {}):
                        self._launch_node(self.store.get(job_id), node, spec)
                        break

    def _launch_node(self, job: JobRecord, node: int, spec: Dict[str, Any]) -> None:
        request = dict(spec, rdzv_host=False, node_addr=self.node_addr)
        job_dir = self.root / job.job_id / f"node-{node}"
        try:
            running = self._spawn(job, request, job_dir, self.root / job.job_id / "cancel", lock=False, node=node)
        except OSError as exc:
            self.store.update_node(job.job_id, node, state=FAILED, error=f"worker did not start: {exc}")
            return
        self._nodes[job.job_id] = running
        self.store.update_node(job.job_id, node, pid=running.proc.pid, pid_start=process_start_time(running.proc.pid))
        self.store.append(job.job_id, [{"type": "log", "text": f"node {node} (replica {self.replica_id}) joined"}])
        logger.info("train job %s (%s): joined as node %d, pid %d", job.job_id, job.model, node, running.proc.pid)

    def _watch_nodes(self) -> None:
        """Ends parts of jobs across replicas that cannot go on: a lost node fails the job on node 0, and a
        job that ended (or whose node 0 died) has this replica's part killed."""
        alive = self._alive()
        with self._lock:
            mine = dict(self._running)
            parts = dict(self._nodes)
        for job_id, running in mine.items():
            if running.error is not None or not running.spans:
                continue
            lost = [n for n in self.store.nodes(job_id)[1:] if n.state == RUNNING and n.replica_id not in alive]
            if lost:
                reason = (f"node {lost[0].node} of the job (replica {lost[0].replica_id}) stopped (no heartbeat); "
                          "a run across nodes cannot go on without it")
                logger.warning("train job %s: %s", job_id, reason)
                running.error = {"message": reason}
                self._signal(running, signal.SIGKILL)
        for job_id, running in parts.items():
            job = self.store.get(job_id)
            if job.terminal or job.owner not in alive:
                logger.info("train job %s is %s: ending node %d here", job_id,
                            job.state if job.terminal else "without its node 0", running.node)
                running.cancel_requested = True
                self._signal(running, signal.SIGKILL)

    def _nodes_of(self, task: Any, params: Dict[str, Any]) -> int:
        """How many replicas a train job spans: its ``nodes``, the trainer's, or ``train_nodes`` when multi_gpu."""
        from monailabel.tasks.train.basic_train import BasicTrainTask
        from monailabel.tasks.train.request import resolve_request

        if not isinstance(task, BasicTrainTask):
            # only BasicTrainTask's runner takes part in a rendezvous: any other trainer would train
            # (and publish) on every node by itself
            if int(params.get("nodes") or 1) > 1:
                raise MONAILabelException(
                    MONAILabelError.INVALID_INPUT,
                    f"trainer {type(task).__name__} does not train across nodes (only BasicTrainTask does); "
                    "leave 'nodes' unset or 1",
                )
            return 1
        if params.get("nodes") is not None:
            return int(params["nodes"])
        resolved = resolve_request(task.config(), {k: v for k, v in params.items()
                                                   if k not in ("train_ids", "val_ids")})
        if resolved.get("nodes") is not None:
            return int(resolved["nodes"])
        return self.train_nodes if resolved.get("multi_gpu") else 1

    def replica_alive(self, replica_id: str) -> bool:
        """Whether a replica (of any server on the database) is alive."""
        found = [r for r in self.store.replicas() if r.replica_id == replica_id]
        return self.store.replica_alive(found[0] if found else None, self.replica_timeout_s)

    def sweep_dead_replicas(self, startup: bool = False) -> List[JobRecord]:
        """Marks FAILED the running jobs of replicas that died (and, on a cluster's first start, queued jobs).

        A replica is dead when its heartbeat is older than ``replica_timeout_s``, or when it ran on this
        host and its process is gone (so a server restarted after a crash fails its jobs at once). Its
        leftover processes are killed when they ran on this host; the model's next queued job starts.

        Args:
            startup: this replica just started (with no other replica alive, queued jobs fail too, as
                their server is gone).

        Returns:
            the jobs marked FAILED, as they were.
        """
        replicas = {r.replica_id: r for r in self.store.replicas()}
        alive = self._alive(list(replicas.values()))
        reason = "server restarted while the job was queued or running" if startup else \
            "server replica running the job stopped (no heartbeat); the job was lost"
        failed: List[JobRecord] = []
        alone = alive == {self.replica_id}
        candidates = self.store.list(0, 1 << 30, state=RUNNING)
        if startup and alone:
            candidates += self.store.list(0, 1 << 30, state=QUEUED)
        for job in candidates:
            if job.state == RUNNING and job.owner in alive:
                continue
            if not self.store.fail_orphan(job.job_id, job.owner, job.state, reason):
                continue
            failed.append(job)
            owner = replicas.get(job.owner)
            here = owner is None or owner.host == socket.gethostname()
            killed = kill_leftovers(job.pid, job.pid_start) if job.state == RUNNING and job.pid and here else []
            logger.warning("job %s (%s) was %s when its server stopped: FAILED%s", job.job_id, job.model,
                           job.state, f"; killed its leftover processes {killed}" if killed else "")
            if not self._stopping and not (startup and alone):  # a lone first replica failed the queue too
                with self._lock:
                    queued = [j for j in self.store.active(job.model, job.kind) if j.state == QUEUED]
                    if queued:
                        self._launch(queued[0])
        self.store.forget_replicas([i for i in replicas if i not in alive])
        return failed

    # -- queries ----------------------------------------------------------------------------------------
    def trainers(self) -> Dict[str, Dict[str, Any]]:
        """Returns ``{name: {"description", "config", "stats"}}`` for each trainer of the app."""
        info = self.app.info()
        stats = info.get("train_stats") or {}
        return {
            name: {
                "description": (t or {}).get("description") or "",
                "config": (t or {}).get("config") or {},
                "stats": stats.get(name) or {},
            }
            for name, t in (info.get("trainers") or {}).items()
        }

    def get(self, job_id: str, kind: Optional[str] = None) -> JobRecord:
        """Returns a job (of ``kind`` when set; NOT_FOUND when unknown)."""
        return self.store.get(job_id, kind)

    def list(
        self, offset: int, limit: int, model: str = "", kind: Optional[str] = None, state: str = ""
    ) -> List[JobRecord]:
        """Returns jobs, newest first, optionally of one kind, model (or scoring method) and state."""
        return self.store.list(offset, limit, model, kind, state)

    def nodes(self, job: JobRecord) -> List[JobNode]:
        """Returns the nodes of a train job that spans several replicas (none for any other job)."""
        return self.store.nodes(job.job_id) if _spans_nodes(job) else []

    def pid(self, job_id: str) -> Optional[int]:
        """Returns the pid of a running job's process, or None."""
        with self._lock:
            running = self._running.get(job_id)
            return running.proc.pid if running is not None else None

    # -- start ------------------------------------------------------------------------------------------
    def start(
        self, model: str, params: Dict[str, Any], queue: bool = False, kind: str = TRAIN, trigger: str = "client"
    ) -> JobRecord:
        """Validates a request and starts (or queues) a job.

        Args:
            model: the trainer (kind ``train``) or the scoring method (kind ``scoring``).
            params: the request (for training, ``train_ids``/``val_ids`` name datastore images).
            queue: wait behind the model's queued or running job instead of failing.
            kind: ``train`` or ``scoring``.
            trigger: why the job starts (``client``, or what started it by itself).

        Raises:
            MONAILabelException: NOT_FOUND for an unknown trainer or scoring method, INVALID_INPUT for bad
                parameters, PRECONDITION_FAILED without labeled data (training), CONFLICT when the model has
                a job and not ``queue``.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        if self._stopping:
            raise MONAILabelException(MONAILabelError.UNAVAILABLE, "the server is stopping")
        tasks: Dict[str, Any] = self._tasks(kind)
        task = tasks.get(model)
        if task is None:
            names = ", ".join(sorted(tasks)) or "none"
            what = _WHAT[kind]
            raise MONAILabelException(MONAILabelError.NOT_FOUND, f"no {what} {model!r} ({what}s: {names})")
        params = dict(params)
        client = trigger == "client"  # the app's own requests may set server keys (paths, process counts)
        if kind == TRAIN:
            max_epochs = job_params.validate(task, params, client)
            job_params.records(self.app.datastore(), params)  # raises for unknown ids or no labeled data
            nodes = self._nodes_of(task, params)
            if nodes > 1:
                alive = len(self._alive())
                if alive < nodes:
                    raise MONAILabelException(
                        MONAILabelError.PRECONDITION_FAILED,
                        f"a train job across {nodes} nodes needs {nodes} live replicas on this database; "
                        f"{alive} {'is' if alive == 1 else 'are'} alive. Start more replicas (the same --database "
                        "and app) or ask for fewer nodes ('nodes')",
                    )
                params["nodes"] = nodes
        elif kind == BATCH_INFER:
            max_epochs = 0
            job_params.validate_batch_infer(self.app.datastore(), params)
        else:
            max_epochs = 0
            job_params.validate_scoring(task, params, client)
        found: List[JobRecord] = []

        def conflict(active: List[JobRecord]) -> None:
            found.extend(active)
            if not queue:
                raise MONAILabelException(
                    MONAILabelError.CONFLICT,
                    f"{_WHAT[kind]} {model!r} has a {active[0].state.lower()} {kind} job {active[0].job_id}; "
                    "cancel it, wait for it, or start with queue=true",
                )

        with self._lock:
            # the check and the insert are one transaction under the model's lock, on every replica
            job = self.store.create(model, params, QUEUED, max_epochs=max_epochs, kind=kind, trigger=trigger,
                                    conflict=conflict)
            if not found:
                job = self._launch(job)
        return job

    def _tasks(self, kind: str) -> Dict[str, Any]:
        if kind == TRAIN:
            return dict(self.app.trainers())
        if kind == BATCH_INFER:
            return dict(self.app.infer_tasks())
        return dict(self.app.scoring_methods())

    def start_many(self, kind: str, names: List[str], params: Dict[str, Any], queue: bool = False,
                   trigger: str = "client") -> List[JobRecord]:
        """Starts (or queues) one job per name, with the same parameters (MONAI Label's train-all and score-all).

        Every name is checked first (it exists, its parameters are valid, it has no active job unless
        ``queue``), so that on an error no job starts.

        Args:
            kind: ``train`` or ``scoring``.
            names: the trainers or scoring methods; empty means all of the app's.
            params: the request for each job.
            queue: wait behind a queued or running job instead of failing.
            trigger: why the jobs start.

        Raises:
            MONAILabelException: as :meth:`start`, for the first name that cannot start; INVALID_INPUT for a
                name given twice, PRECONDITION_FAILED when the app has none.
        """
        tasks = self._tasks(kind)
        names = list(names) or sorted(tasks)
        if not names:
            raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED, f"the app has no {_WHAT[kind]}s")
        if len(set(names)) != len(names):
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"a {_WHAT[kind]} is named twice in {names}")
        with self._lock:
            for name in names:  # the checks start() makes, without starting anything
                task = tasks.get(name)
                if task is None:
                    raise MONAILabelException(
                        MONAILabelError.NOT_FOUND,
                        f"no {_WHAT[kind]} {name!r} ({_WHAT[kind]}s: {', '.join(sorted(tasks)) or 'none'})")
                checked = dict(params)
                if kind == TRAIN:
                    job_params.validate(task, checked, trigger == "client")
                    job_params.records(self.app.datastore(), checked)
                    self._nodes_of(task, checked)
                else:
                    job_params.validate_scoring(task, checked, trigger == "client")
                active = self.store.active(name, kind)
                if active and not queue:
                    raise MONAILabelException(
                        MONAILabelError.CONFLICT,
                        f"{_WHAT[kind]} {name!r} has a {active[0].state.lower()} {kind} job {active[0].job_id}; "
                        "cancel it, wait for it, or start with queue=true; no job was started")
            return [self.start(name, params, queue=queue, kind=kind, trigger=trigger) for name in names]

    def submit(self, kind: str, request: Dict[str, Any], trigger: str = "app") -> Optional[JobRecord]:
        """Queues work the app asks for (``MONAILabelApp.async_scoring`` / ``async_training``).

        A method (or model) that already has a queued job gets no second one: that job will see the
        latest state anyway. Errors are logged, not raised: the app's request is a wish, not a call.

        Args:
            kind: ``scoring`` (``request["method"]``) or ``train`` (``request["model"]``).
            request: the request, with the method or model name.
            trigger: why.

        Returns:
            the job (queued, running, or the queued one it joined), or None when it could not start.
        """
        params = dict(request)
        name = str(params.pop("method" if kind == SCORING else "model", "") or "")
        try:
            with self._lock:
                queued = [j for j in self.store.active(name, kind) if j.state == QUEUED]
                if queued:
                    return queued[0]
                return self.start(name, params, queue=True, kind=kind, trigger=trigger)
        except MONAILabelException as exc:
            logger.warning("%s job for %r not started (%s): %s", kind, name, trigger, exc.msg)
            return None

    def _launch(self, job: JobRecord) -> JobRecord:
        if not self.store.claim(job.job_id, self.replica_id):
            return self.store.get(job.job_id)  # another replica runs it
        try:
            request = job_params.request(self.app.datastore(), job.params) if job.kind == TRAIN else dict(job.params)
        except MONAILabelException as exc:
            return self.store.set_state(job.job_id, FAILED, exc.msg, error=exc.msg)
        job_dir = self.root / job.job_id
        nodes = int(request.get("nodes") or 1) if job.kind == TRAIN else 1
        if nodes > 1:
            request.update(nodes=nodes, rdzv_endpoint=f"{self.node_addr}:{_free_port(self.node_addr)}",
                           rdzv_id=job.job_id, rdzv_host=True, node_addr=self.node_addr,
                           join_timeout=self.join_timeout_s, distributed_timeout=600)
            self.store.add_node(job.job_id, 0, self.replica_id, dict(request, rdzv_host=False))
            self.store.append(job.job_id, [{"type": "log", "text": (
                f"node 0 (replica {self.replica_id}) serves the rendezvous at {request['rdzv_endpoint']}; "
                f"waiting for {nodes - 1} more node(s)")}])
        running = self._spawn(job, request, job_dir, job_dir / "cancel", lock=True)
        running.spans = nodes > 1
        self._running[job.job_id] = running
        proc = running.proc
        job = self.store.set_state(
            job.job_id, RUNNING, f"{job.kind} process started", pid=proc.pid, pid_start=process_start_time(proc.pid)
        )
        running.thread = threading.Thread(
            target=self._follow, args=(job.job_id, running), name=f"{job.kind}-{job.job_id}", daemon=True
        )
        running.thread.start()
        logger.info("%s job %s (%s) started: pid %d", job.kind, job.job_id, job.model, proc.pid)
        return job

    def _spawn(self, job: JobRecord, request: Dict[str, Any], job_dir: Path, cancel_file: Path, lock: bool,
               node: int = 0) -> _Running:
        """Starts a job's worker process (node 0's, or another node's part of a job across replicas)."""
        job_dir.mkdir(parents=True, exist_ok=True)
        log_file = job_dir / "job.log"
        spec = {
            "app_dir": str(self.app_dir),
            "studies": self.studies,
            "conf": self.conf,
            "kind": job.kind,
            "model": job.model,
            "request": request,
            "cancel_file": str(cancel_file),
            "log_file": str(log_file),
            "lock_file": str(self.locks / lock_name(job.kind, job.model)) if lock else "",
            "server_pid": os.getpid(),
            "retain_memory_bytes": retained_bytes(),  # the job's transforms reuse memory as the server's do
        }
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # regular packages (not namespace ones): their __file__ is always set
        roots = {str(Path(cast(str, m.__file__)).resolve().parents[1]) for m in (monailabel, monailabel_server)}
        env["PYTHONPATH"] = os.pathsep.join([*sorted(roots), *filter(None, [os.environ.get("PYTHONPATH")])])
        proc = self._spawner.submit(
            subprocess.Popen,
            [sys.executable, "-m", "monailabel_server.jobs.worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            cwd=str(job_dir),
            env=env,
            start_new_session=True,  # its own session and process group: cancel and shutdown end all of it
        ).result()
        running = _Running(proc, cancel_file, job.kind, log_file, node=node)
        if node:
            running.thread = threading.Thread(target=self._follow, args=(job.job_id, running),
                                              name=f"{job.kind}-{job.job_id}-node{node}", daemon=True)
            running.thread.start()
        return running

    # -- follow -----------------------------------------------------------------------------------------
    def _follow(self, job_id: str, running: _Running) -> None:
        assert running.proc.stdout is not None
        with open(running.log_file, "a", encoding="utf-8", errors="replace") as log:
            for raw in running.proc.stdout:
                line = raw.rstrip("\n")
                if not line.startswith(EVENT_MARK):
                    log.write(raw if raw.endswith("\n") else raw + "\n")
                    log.flush()
                try:
                    self._handle_line(job_id, running, line)
                except Exception:  # noqa: BLE001 - a bad line must not stop the job's bookkeeping
                    logger.exception("job %s: cannot record %r", job_id, line[:200])
        running.proc.stdout.close()
        rc = self._reap(running)
        if running.node:
            self._finish_node(job_id, running, rc)
            return
        try:
            self._finish(job_id, running, rc)
            ended = self.store.get(job_id)
            if _spans_nodes(ended):
                self.store.update_node(job_id, 0, state=ended.state)
        finally:
            with self._lock:
                self._running.pop(job_id, None)
                job = self.store.get(job_id)
                if not self._stopping:
                    queued = [j for j in self.store.active(job.model, job.kind) if j.state == QUEUED]
                    if queued:
                        self._launch(queued[0])
        self._after(self.store.get(job_id))

    def _finish_node(self, job_id: str, running: _Running, rc: int) -> None:
        """Records how this replica's part of a job across replicas ended (node 0 decides the job's end)."""
        with self._lock:
            self._nodes.pop(job_id, None)
        if rc == 0:
            self.store.update_node(job_id, running.node, state=SUCCEEDED)
            return
        if running.cancel_requested or rc == EXIT_CANCELLED:
            self.store.update_node(job_id, running.node, state=CANCELLED)
            return
        error = str((running.error or {}).get("message") or f"exit code {rc}")
        self.store.update_node(job_id, running.node, state=FAILED, error=error[:1000])
        text = f"node {running.node} (replica {self.replica_id}) failed: {error}"
        self.store.append(job_id, [{"type": "log", "text": text[:1000]}])

    def _reap(self, running: _Running) -> int:
        """Waits for the worker to exit, ends anything left in its group, then reaps it."""
        pid = running.proc.pid
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: its pid is still ours
        except ChildProcessError:
            pass
        with running.reap_lock:
            signal_group(pid, signal.SIGKILL)  # a rank that outlived its worker
            rc = running.proc.wait()
            running.reaped = True
        running.exited.set()
        return rc

    def _after(self, job: JobRecord) -> None:
        """Runs the app's scoring again once a train job has published a new model version (if configured)."""
        if job.kind != TRAIN or not job.published_version or self._stopping:
            return
        if not getattr(self.app, "_auto_update_scoring", False) or not self.app.scoring_methods():
            return
        logger.info("train job %s published %s v%d: scoring again", job.job_id, job.model, job.published_version)
        trigger = f"auto: {job.model} v{job.published_version} published by train job {job.job_id}"
        for method in self.app.scoring_methods():
            self.submit(SCORING, {"method": method}, trigger=trigger)

    def _handle_line(self, job_id: str, running: _Running, line: str) -> None:
        if not line.startswith(EVENT_MARK):
            prefix = f"[node {running.node}] " if running.node else ""
            shown = [prefix + text for text in running.client_log.lines(line)]
            running.logs.extend(shown)
            if shown:
                self.store.append(job_id, [{"type": "log", "text": text} for text in shown])
            return
        event = json.loads(line[len(EVENT_MARK) :])
        kind = event.get("type")
        if kind == "iteration":
            self.store.append(job_id, [event])
        elif kind == "epoch":
            self.store.append(job_id, [event])
            values: Dict[str, Any] = {"epoch": int(event.get("epoch") or 0)}
            if event.get("max_epochs"):
                values["max_epochs"] = int(event["max_epochs"])
            if event.get("best_metric") is not None:
                values["best_metric"] = float(event["best_metric"])
                values["best_metric_epoch"] = int(event.get("best_metric_epoch") or 0)
            self.store.update(job_id, **values)
        elif kind == "batch_progress":
            self.store.append(job_id, [event])
            self.store.update(job_id, epoch=int(event.get("done") or 0), max_epochs=int(event.get("total") or 0))
        elif kind == "error":
            running.error = event
        elif kind == "result":
            running.stats = event.get("stats") or {}
            running.result = event.get("result")

    def _finish(self, job_id: str, running: _Running, rc: int) -> None:
        logs = list(running.logs)
        job = self.store.get(job_id)
        if rc == 0:
            values: Dict[str, Any] = {}
            if job.kind == TRAIN:
                path = self._published(job)
                if path:
                    values.update(published_path=path, published_version=self.store.next_version(job.model))
                    # the checksum of what this version published, for ModelService.ListModelVersions
                    values["result"] = _file_digest(path)
            elif running.result is not None:
                values["result"] = running.result
            if self.audit is not None and values.get("published_version"):  # before watchers hear SUCCEEDED
                self.audit.write(user="system", rpc="publish", resource=f"model/{job.model}", outcome="OK",
                                 job_id=job_id, version=values["published_version"])
            self.store.set_state(job_id, SUCCEEDED, _DONE[job.kind], last_log_lines=logs, **values)
            return
        if running.cancel_requested or rc == EXIT_CANCELLED:
            self.store.set_state(job_id, CANCELLED, "cancelled by client", error="cancelled by client",
                                 last_log_lines=logs)
            return
        if running.error is not None:
            from monailabel_server.errors import scrub

            reason = scrub(str(running.error.get("message") or running.error.get("kind")), 1000)
        elif rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            reason = f"{job.kind} process was killed by {name}"
            if self._stopping:
                reason += " (server stopped)"
        else:
            reason = f"{job.kind} process exited with code {rc}"
        logger.warning("%s job %s failed: %s (full output: %s)", job.kind, job_id, reason, running.log_file)
        self.store.set_state(job_id, FAILED, reason, error=reason, last_log_lines=logs)

    def _published(self, job: JobRecord) -> str:
        path = getattr(self.app.trainers().get(job.model), "_publish_path", None)
        if not path or not os.path.exists(path) or job.start_time is None:
            return ""
        return str(path) if os.stat(path).st_mtime >= job.start_time else ""

    # -- cancel -----------------------------------------------------------------------------------------
    def cancel(self, job_id: str, kind: Optional[str] = None) -> JobRecord:
        """Cancels a queued job at once, or asks a running one to stop (then SIGTERM, then SIGKILL to its group).

        A training process gets ``cancel_grace_s`` to stop at its next iteration; a scoring process (scoring
        methods have no cancel hook) gets SIGTERM at once, on which it exits. Every signal goes to the job's
        whole process group, DDP ranks included.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown job, PRECONDITION_FAILED for a finished one.
        """
        with self._lock:
            job = self.store.get(job_id, kind)
            if job.terminal:
                raise MONAILabelException(
                    MONAILabelError.PRECONDITION_FAILED, f"{job.kind} job {job_id} has ended already ({job.state})"
                )
            if job.state == QUEUED:
                return self.store.set_state(job_id, CANCELLED, "cancelled by client", error="cancelled by client")
            running = self._running.get(job_id)
            if running is None:
                # another replica runs it: its worker reads the same cancel file (the jobs folder is shared)
                cancel_file = self.root / job_id / "cancel"
                if cancel_file.parent.is_dir():
                    cancel_file.touch()
                return job
            running.cancel_requested = True
            running.cancel_file.touch()
        threading.Thread(target=self._escalate, args=(running,), name=f"cancel-{job_id}", daemon=True).start()
        return self.store.get(job_id)

    def _signal(self, running: _Running, sig: int) -> None:
        with running.reap_lock:
            if not running.reaped:
                signal_group(running.proc.pid, sig)

    def _escalate(self, running: _Running) -> None:
        if running.kind == SCORING:
            self._signal(running, signal.SIGTERM)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if running.exited.wait(self.cancel_grace_s):
                return
            logger.warning("%s process %d ignores the cancel; sending %s to its group", running.kind,
                           running.proc.pid, sig.name)
            self._signal(running, sig)

    # -- watch ------------------------------------------------------------------------------------------
    def watch(
        self, job_id: str, after: int = 0, active: Callable[[], bool] = lambda: True, kind: Optional[str] = None
    ) -> Iterator[JobEvent]:
        """Yields a job's events after sequence ``after``, then new ones as they come, until the job ends.

        Args:
            job_id: the job.
            after: the last sequence number the caller has seen.
            active: returns False once the caller is gone.
            kind: the job's kind (any when None).

        Raises:
            MONAILabelException: NOT_FOUND for an unknown job.
        """
        self.store.get(job_id, kind)
        last = max(0, int(after))
        while active():
            seen = self.store.generation
            job = self.store.get(job_id)  # read the state first: a terminal state's events are all stored
            events = self.store.events(job_id, last)
            for event in events:
                yield event
                last = event.sequence
            if not events:
                if job.terminal:
                    return
                # this replica's appends wake the wait at once, and so do another replica's on PostgreSQL
                # (LISTEN/NOTIFY); the timeout is only a fallback poll (each poll is two queries per watcher)
                self.store.wait(2.0 if self.store.listening else 0.05, seen)

    # -- shutdown ---------------------------------------------------------------------------------------
    def shutdown(self, timeout: float = 10.0) -> None:
        """Stops every running job's process (they end FAILED) and closes the store."""
        self._stopped.set()
        with self._lock:
            self._stopping = True
            running = [*self._running.values(), *self._nodes.values()]
        for r in running:
            self._signal(r, signal.SIGKILL)
        for r in running:
            if r.thread is not None:
                r.thread.join(timeout)
        self._spawner.shutdown(wait=False)
        self._heart.join(timeout)
        self.store.unregister_replica(self.replica_id)
        self.store.close()
