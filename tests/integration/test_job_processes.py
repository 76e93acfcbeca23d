"""Job processes belong to the server: they die with it (even on ``kill -9``), a cancel ends every DDP rank,
a restarted server fails what was left RUNNING and kills its leftovers (never a reused pid), and two
processes never train (and publish) the same model at once.

Training runs the radiology template on CPU with two Gloo ranks (``--conf train_world_size 2``, the app's
setting: a client may not ask for a process count).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from monailabel.datasets import write_phantoms
from monailabel.utils.lifetime import process_start_time
from monailabel_api.v1 import job_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.jobs import JobStore
from monailabel_server.jobs.manager import lock_name
from monailabel_server.jobs.processes import session_members
from monailabel_server.jobs.store import RUNNING
from monailabel_server.server import RunningServer, start

from .conftest import copy_template

MODEL = "segmentation"
CONF = {"roi_size": "32,32,32", "train_world_size": "2"}
# long enough never to end by itself during a test
TRAIN = dict(max_epochs=500, device="cpu", dataset="Dataset", extra={"pretrained": False})


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its parent to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _until(what: str, check: Callable[[], object], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _children(pid: int) -> List[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == str(pid):
                out.append(int(name))
    return out


def _first_iteration(client: MonaiLabelClient, job_id: str) -> None:
    for event in client.watch_job(job_id, timeout=300):
        if event.WhichOneof("event") == "iteration":
            return
    raise AssertionError(f"job ended before its first iteration: {client.get_job(job_id)}")


def _ranks_running(worker: int) -> List[int]:
    """The job's processes once both ranks have started: the worker and at least two more in its session."""
    members = [p for p in session_members(worker) if _alive(p)]
    return members if len(members) >= 3 else []


def _studies(root: Path) -> Path:
    studies = root / "studies"
    write_phantoms(studies, count=4, shape=(32, 32, 32), labeled=4)
    return studies


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("jobs")
    config = ServerConfig(app_dir=copy_template(root / "app"), studies=str(_studies(root)), port=0, conf=CONF)
    running = start(config)
    yield running
    running.stop(grace=1)


@pytest.mark.timeout(400)
def test_kill_9_of_the_server_ends_every_process_of_the_job_and_a_restart_fails_it(tmp_path: Path) -> None:
    app, studies = copy_template(tmp_path / "app"), _studies(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "monailabel_server", "start_server", "--app", str(app), "--studies", str(studies),
         "--port", "0", *[a for k, v in CONF.items() for a in ("--conf", k, v)]],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        address = next(line.strip().rsplit(" ", 1)[1] for line in proc.stdout if "listening on" in line)
        with MonaiLabelClient(address, timeout=60) as client:
            job = client.start_train(MODEL, **TRAIN)
            _first_iteration(client, job.job_id)
        (worker,) = [c for c in _children(proc.pid) if c in session_members(c)]  # the job leads its session
        members: List[int] = []
        _until("both ranks", lambda: members.extend(_ranks_running(worker)) or members, 60)
        assert worker in members and len(members) >= 3

        proc.kill()  # SIGKILL: the server gets no chance to clean up
        proc.wait(timeout=30)
        _until("every process of the job to end", lambda: not any(_alive(p) for p in members), 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()

    # the job was RUNNING when its server died: the next server marks it FAILED
    restarted = start(ServerConfig(app_dir=app, studies=str(studies), port=0, conf=CONF))
    try:
        with MonaiLabelClient(restarted.address, timeout=60) as client:
            failed = client.get_job(job.job_id)
            assert failed.state == job_pb2.JOB_STATE_FAILED and "server restarted" in failed.error
            # and the model is free to train again: the dead worker's lock went with it
            again = client.start_train(MODEL, **TRAIN)
            _first_iteration(client, again.job_id)
            client.cancel_job(again.job_id)
            assert client.wait_job(again.job_id, timeout=120).state == job_pb2.JOB_STATE_CANCELLED
    finally:
        restarted.stop(grace=1)


@pytest.mark.timeout(300)
def test_cancelling_a_ddp_job_ends_every_rank(server: RunningServer) -> None:
    assert server.jobs is not None
    with MonaiLabelClient(server.address, timeout=60) as client:
        job = client.start_train(MODEL, **TRAIN)
        _first_iteration(client, job.job_id)
        worker = server.jobs.pid(job.job_id)
        assert worker is not None
        members: List[int] = []
        _until("both ranks", lambda: members.extend(_ranks_running(worker)) or members, 60)

        client.cancel_job(job.job_id)
        done = client.wait_job(job.job_id, timeout=120)
        assert done.state == job_pb2.JOB_STATE_CANCELLED, done.error
        _until("every rank to end", lambda: not any(_alive(p) for p in members), 10)
        assert not any(_alive(p) for p in session_members(worker))  # nor any process the job started later


@pytest.mark.timeout(300)
def test_a_second_process_never_trains_the_same_model(server: RunningServer) -> None:
    assert server.jobs is not None
    lock = server.jobs.locks / lock_name("train", MODEL)
    with open(lock, "a+") as held, MonaiLabelClient(server.address, timeout=60) as client:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as a worker of another server would hold it
        job = client.start_train(MODEL, **TRAIN)
        failed = client.wait_job(job.job_id, timeout=120)
        assert failed.state == job_pb2.JOB_STATE_FAILED
        assert f"another process is still running model '{MODEL}'" in failed.error
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
        again = client.start_train(MODEL, **TRAIN)
        _first_iteration(client, again.job_id)
        client.cancel_job(again.job_id)
        assert client.wait_job(again.job_id, timeout=120).state == job_pb2.JOB_STATE_CANCELLED


@pytest.mark.timeout(200)
def test_restart_kills_the_leftovers_of_a_dead_server_but_never_a_reused_pid(tmp_path: Path) -> None:
    app, studies = copy_template(tmp_path / "app"), _studies(tmp_path)
    # what a dead server's job leaves: a worker leading its session, with a child in it
    leftover = subprocess.Popen(["sh", "-c", "sleep 600 & exec sleep 600"], start_new_session=True)
    # a process that now has the pid a job recorded, with another start time: the pid was reused
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        _until("the leftover's child", lambda: len(session_members(leftover.pid)) == 2, 10)
        members = session_members(leftover.pid)
        store = JobStore(studies / ".monailabel" / "jobs.db")
        left = store.create(MODEL, {}, RUNNING)
        store.update(left.job_id, pid=leftover.pid, pid_start=process_start_time(leftover.pid))
        reused = store.create("other", {}, RUNNING)
        store.update(reused.job_id, pid=stranger.pid, pid_start=process_start_time(stranger.pid) - 1)
        store.close()

        server = start(ServerConfig(app_dir=app, studies=str(studies), port=0, conf=CONF))
        try:
            _until("the leftovers to end", lambda: not any(_alive(p) for p in members), 10)
            assert _alive(stranger.pid)
            with MonaiLabelClient(server.address, timeout=60) as client:
                for job_id in (left.job_id, reused.job_id):
                    job = client.get_job(job_id)
                    assert job.state == job_pb2.JOB_STATE_FAILED and "server restarted" in job.error
        finally:
            server.stop(grace=1)
    finally:
        for p in (leftover, stranger):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
