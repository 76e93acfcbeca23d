"""Runs training jobs in child processes, one per model at a time, and records them in the job store.

A job's process is ``python -m monailabel_server.jobs.worker``; a thread per job tails its output into
the store (marked lines are progress events, the rest log lines) and decides the job's end state from
its exit: 0 SUCCEEDED, after a cancel CANCELLED, else FAILED with the reason (the error it reported,
the signal that killed it, or its exit code) and its last log lines. The server never runs training
code itself, so a crash of the trainer cannot take it down.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional

import monailabel
import monailabel_server
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_server.jobs import params as job_params
from monailabel_server.jobs.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobEvent, JobRecord, JobStore
from monailabel_server.jobs.worker import EVENT_MARK, EXIT_CANCELLED

__all__ = ["JobManager"]

logger = logging.getLogger(__name__)

LAST_LOG_LINES = 20


class _Running:
    def __init__(self, proc: subprocess.Popen, cancel_file: Path) -> None:
        self.proc = proc
        self.cancel_file = cancel_file
        self.cancel_requested = False
        self.error: Optional[Dict[str, Any]] = None
        self.stats: Optional[Dict[str, Any]] = None
        self.logs: Deque[str] = collections.deque(maxlen=LAST_LOG_LINES)
        self.thread: Optional[threading.Thread] = None


class JobManager:
    """Starts, follows, cancels and lists training jobs of an app.

    Args:
        app: the app (its trainers validate requests; the worker loads its own copy).
        app_dir: the app folder the worker loads.
        studies: the studies folder (or URI) the worker opens.
        conf: the app's config.
        db_path: the job database (default ``<studies>/.monailabel/jobs.db``).
        cancel_grace_s: seconds a cancelled job gets to stop on its own before SIGTERM, and then SIGKILL.
    """

    def __init__(
        self,
        app: MONAILabelApp,
        app_dir: Path,
        studies: str,
        conf: Dict[str, str],
        db_path: Optional[Path] = None,
        cancel_grace_s: float = 10.0,
    ) -> None:
        self.app = app
        self.app_dir = Path(app_dir).resolve()
        self.studies = studies
        self.conf = dict(conf)
        if db_path is None:
            base = Path(studies) if Path(studies).is_dir() else self.app_dir
            db_path = base / ".monailabel" / "jobs.db"
        self.root = Path(db_path).parent / "jobs"
        self.store = JobStore(Path(db_path))
        self.cancel_grace_s = cancel_grace_s
        self._lock = threading.RLock()
        self._running: Dict[str, _Running] = {}
        self._stopping = False
        failed = self.store.fail_unfinished("server restarted while the job was queued or running")
        if failed:
            logger.warning("marked %d unfinished train job(s) FAILED: %s", len(failed), ", ".join(failed))

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

    def get(self, job_id: str) -> JobRecord:
        """Returns a job (NOT_FOUND when unknown)."""
        return self.store.get(job_id)

    def list(self, offset: int, limit: int, model: str = "") -> List[JobRecord]:
        """Returns jobs, newest first."""
        return self.store.list(offset, limit, model)

    def pid(self, job_id: str) -> Optional[int]:
        """Returns the pid of a running job's process, or None."""
        with self._lock:
            running = self._running.get(job_id)
            return running.proc.pid if running is not None else None

    # -- start ------------------------------------------------------------------------------------------
    def start(self, model: str, params: Dict[str, Any], queue: bool = False) -> JobRecord:
        """Validates a request and starts (or queues) a job.

        Args:
            model: the trainer.
            params: the train request (``train_ids``/``val_ids`` name datastore images).
            queue: wait behind the model's queued or running job instead of failing.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown trainer, INVALID_INPUT for bad parameters,
                PRECONDITION_FAILED without labeled data, CONFLICT when the model has a job and not ``queue``.
        """
        if self._stopping:
            raise MONAILabelException(MONAILabelError.UNAVAILABLE, "the server is stopping")
        task = self.app.trainers().get(model)
        if task is None:
            names = ", ".join(sorted(self.app.trainers())) or "none"
            raise MONAILabelException(MONAILabelError.NOT_FOUND, f"no trainer {model!r} (trainers: {names})")
        max_epochs = job_params.validate(task, params)
        job_params.records(self.app.datastore(), params)  # raises for unknown ids or no labeled data
        with self._lock:
            active = self.store.active(model)
            if active and not queue:
                raise MONAILabelException(
                    MONAILabelError.CONFLICT,
                    f"model {model!r} has a {active[0].state.lower()} train job {active[0].job_id}; "
                    "cancel it, wait for it, or start with queue=true",
                )
            job = self.store.create(model, params, QUEUED, max_epochs=max_epochs)
            if not active:
                job = self._launch(job)
        return job

    def _launch(self, job: JobRecord) -> JobRecord:
        try:
            request = job_params.request(self.app.datastore(), job.params)
        except MONAILabelException as exc:
            return self.store.set_state(job.job_id, FAILED, exc.msg, error=exc.msg)
        job_dir = self.root / job.job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        cancel_file = job_dir / "cancel"
        spec = {
            "app_dir": str(self.app_dir),
            "studies": self.studies,
            "conf": self.conf,
            "model": job.model,
            "request": request,
            "cancel_file": str(cancel_file),
        }
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        roots = {str(Path(m.__file__).resolve().parents[1]) for m in (monailabel, monailabel_server)}
        env["PYTHONPATH"] = os.pathsep.join([*sorted(roots), *filter(None, [os.environ.get("PYTHONPATH")])])
        proc = subprocess.Popen(
            [sys.executable, "-m", "monailabel_server.jobs.worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            cwd=str(job_dir),
            env=env,
        )
        running = _Running(proc, cancel_file)
        self._running[job.job_id] = running
        job = self.store.set_state(job.job_id, RUNNING, f"training process {proc.pid} started")
        running.thread = threading.Thread(
            target=self._follow, args=(job.job_id, running), name=f"train-{job.job_id}", daemon=True
        )
        running.thread.start()
        logger.info("train job %s (%s) started: pid %d", job.job_id, job.model, proc.pid)
        return job

    # -- follow -----------------------------------------------------------------------------------------
    def _follow(self, job_id: str, running: _Running) -> None:
        assert running.proc.stdout is not None
        for raw in running.proc.stdout:
            line = raw.rstrip("\n")
            try:
                self._handle_line(job_id, running, line)
            except Exception:  # noqa: BLE001 - a bad line must not stop the job's bookkeeping
                logger.exception("train job %s: cannot record %r", job_id, line[:200])
        running.proc.stdout.close()
        rc = running.proc.wait()
        try:
            self._finish(job_id, running, rc)
        finally:
            with self._lock:
                self._running.pop(job_id, None)
                model = self.store.get(job_id).model
                if not self._stopping:
                    queued = [j for j in self.store.active(model) if j.state == QUEUED]
                    if queued:
                        self._launch(queued[0])

    def _handle_line(self, job_id: str, running: _Running, line: str) -> None:
        if not line.startswith(EVENT_MARK):
            running.logs.append(line)
            self.store.append(job_id, [{"type": "log", "text": line}])
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
        elif kind == "error":
            running.error = event
        elif kind == "result":
            running.stats = event.get("stats") or {}

    def _finish(self, job_id: str, running: _Running, rc: int) -> None:
        logs = list(running.logs)
        job = self.store.get(job_id)
        if rc == 0:
            values: Dict[str, Any] = {}
            path = self._published(job)
            if path:
                values.update(published_path=path, published_version=self.store.next_version(job.model))
            self.store.set_state(job_id, SUCCEEDED, "training finished", last_log_lines=logs, **values)
            return
        if running.cancel_requested or rc == EXIT_CANCELLED:
            self.store.set_state(job_id, CANCELLED, "cancelled by client", error="cancelled by client",
                                 last_log_lines=logs)
            return
        if running.error is not None:
            reason = str(running.error.get("message") or running.error.get("kind"))
        elif rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            reason = f"training process was killed by {name}"
            if self._stopping:
                reason += " (server stopped)"
        else:
            reason = f"training process exited with code {rc}"
        logger.warning("train job %s failed: %s", job_id, reason)
        self.store.set_state(job_id, FAILED, reason, error=reason, last_log_lines=logs)

    def _published(self, job: JobRecord) -> str:
        path = getattr(self.app.trainers().get(job.model), "_publish_path", None)
        if not path or not os.path.exists(path) or job.start_time is None:
            return ""
        return str(path) if os.stat(path).st_mtime >= job.start_time else ""

    # -- cancel -----------------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobRecord:
        """Cancels a queued job at once, or asks a running one to stop (then SIGTERM, then SIGKILL).

        Raises:
            MONAILabelException: NOT_FOUND for an unknown job, PRECONDITION_FAILED for a finished one.
        """
        with self._lock:
            job = self.store.get(job_id)
            if job.terminal:
                raise MONAILabelException(
                    MONAILabelError.PRECONDITION_FAILED, f"train job {job_id} has ended already ({job.state})"
                )
            if job.state == QUEUED:
                return self.store.set_state(job_id, CANCELLED, "cancelled by client", error="cancelled by client")
            running = self._running.get(job_id)
            if running is None:
                return job
            running.cancel_requested = True
            running.cancel_file.touch()
        threading.Thread(target=self._escalate, args=(running,), name=f"cancel-{job_id}", daemon=True).start()
        return self.store.get(job_id)

    def _escalate(self, running: _Running) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                running.proc.wait(self.cancel_grace_s)
                return
            except subprocess.TimeoutExpired:
                logger.warning("train process %d ignores the cancel; sending %s", running.proc.pid, sig.name)
                running.proc.send_signal(sig)

    # -- watch ------------------------------------------------------------------------------------------
    def watch(self, job_id: str, after: int = 0, active: Callable[[], bool] = lambda: True) -> Iterator[JobEvent]:
        """Yields a job's events after sequence ``after``, then new ones as they come, until the job ends.

        Args:
            job_id: the job.
            after: the last sequence number the caller has seen.
            active: returns False once the caller is gone.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown job.
        """
        self.store.get(job_id)
        last = max(0, int(after))
        while active():
            job = self.store.get(job_id)  # read the state first: a terminal state's events are all stored
            events = self.store.events(job_id, last)
            for event in events:
                yield event
                last = event.sequence
            if not events:
                if job.terminal:
                    return
                self.store.wait(0.05)

    # -- shutdown ---------------------------------------------------------------------------------------
    def shutdown(self, timeout: float = 10.0) -> None:
        """Stops every running job's process (they end FAILED) and closes the store."""
        with self._lock:
            self._stopping = True
            running = list(self._running.values())
        for r in running:
            if r.proc.poll() is None:
                r.proc.kill()
        for r in running:
            if r.thread is not None:
                r.thread.join(timeout)
        self.store.close()
