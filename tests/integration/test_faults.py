"""kill -9 of a server process during uploads, label saves, training and inference, then a restart.

Five runs for each kind of work (20 kills), each killing the server at a seeded random point.
After each restart (same studies folder):

* index and files agree: every indexed image and label exists with its indexed size and sha256, and
  no file outside the server's ``.monailabel`` folder is unindexed;
* an interrupted upload or label save is whole or absent, and resumes (GetUploadStatus, then a stream
  from the committed offset) to exactly the right bytes;
* no job worker process of a killed server's job remains, and the job is not reported RUNNING;
* finally, debris (partial uploads, temporaries) is gone after its expiry, with a server started with a
  one-second expiry (``MONAI_LABEL_GRPC_UPLOAD_TTL_S``).

Problems are collected over a test's runs and reported together, so one run shows every failure.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional

import grpc
import nibabel as nib
import numpy as np
import pytest

from monailabel.datasets import make_phantom, write_phantoms
from monailabel_api.v1 import datastore_pb2, infer_pb2

from .conftest import copy_template
from .hostile import (
    INDEX_DIR,
    RPC_TIMEOUT_S,
    ServerProcess,
    Stubs,
    agreement_problems,
    chunks_of,
    content_header,
    job_state,
    label_header,
    serving,
    start_server_process,
    start_train,
    stream,
    upload_header,
    upload_status,
    worker_processes,
)

pytestmark = pytest.mark.slow

SEED = 99
SHAPE = (32, 32, 32)
CONF = {"roi_size": "32,32,32"}
MODEL = "segmentation"
RUNS_PER_KIND = 5  # 4 kinds: 20 kills
TTL_ENV = "MONAI_LABEL_GRPC_UPLOAD_TTL_S"
ORPHAN_WAIT_S = 20.0
EXPIRY_WAIT_S = 30.0


@dataclass
class Interrupted:
    """What a kill interrupted, to check after the restart."""

    kind: str
    point: str
    image_id: str = ""
    tag: str = ""
    data: bytes = b""
    before_sha: Optional[str] = None
    job_id: str = ""
    worker_seen: bool = False


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _nifti(array: np.ndarray, affine: np.ndarray) -> bytes:
    return nib.Nifti1Image(array, affine).to_bytes()


def _interrupt_stream(server: ServerProcess, call: Any, parts: List[Any], kill_after: int, delay_s: float) -> None:
    """Sends ``parts[:kill_after]`` on ``call`` and kills the server ``delay_s`` later, the stream still open.

    When ``kill_after`` is every part, the stream ends normally and the kill races the server's commit.
    """
    sent, killed = threading.Event(), threading.Event()

    def requests() -> Iterator[Any]:
        yield from parts[:kill_after]
        sent.set()
        if kill_after < len(parts):
            killed.wait(RPC_TIMEOUT_S)  # the client holds the stream open; the server dies meanwhile

    def run() -> None:
        try:
            call(requests(), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError:
            pass  # UNAVAILABLE (or OK, when the commit won the race): the check after the restart decides

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    sent.wait(timeout=RPC_TIMEOUT_S)
    time.sleep(delay_s)
    server.kill9()
    killed.set()
    thread.join(timeout=RPC_TIMEOUT_S + 5)


def _kill_point(rng: random.Random, parts: int) -> tuple:
    """Where to kill: half the runs once every part went out (racing the commit), else mid-stream."""
    kill_after = parts if rng.random() < 0.5 else rng.randrange(1, parts)
    return kill_after, rng.uniform(0, 0.05)


def _interrupt_upload(stubs: Stubs, server: ServerProcess, rng: random.Random, run: int) -> Interrupted:
    image, _, affine = make_phantom((64, 64, 48), seed=1000 + run)
    data = _nifti(image.astype(np.int16), affine)
    image_id = f"up_{run:02d}"
    parts = list(stream(datastore_pb2.UploadImageRequest,
                        [upload_header(image_id, content_header(data)), *chunks_of(data, 16 << 10)]))
    kill_after, delay = _kill_point(rng, len(parts))
    _interrupt_stream(server, stubs.datastore.UploadImage, parts, kill_after, delay)
    return Interrupted("upload", f"after part {kill_after}/{len(parts)} +{delay:.3f}s", image_id, data=data)


def _label_sha(stubs: Stubs, image_id: str, tag: str) -> Optional[str]:
    try:
        return stubs.datastore.GetLabel(datastore_pb2.GetLabelRequest(image_id=image_id, tag=tag),
                                        timeout=RPC_TIMEOUT_S).label.sha256
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def _interrupt_label(stubs: Stubs, server: ServerProcess, rng: random.Random, run: int) -> Interrupted:
    image_id = f"phantom_{rng.randrange(4):03d}"
    tag = rng.choice(["final", "fault"])
    before = _label_sha(stubs, image_id, tag)
    _, affine = _image_grid(stubs, image_id)
    mask = np.random.default_rng(run).integers(0, 2, SHAPE, dtype=np.uint8)
    data = _nifti(mask, affine)
    parts = list(stream(datastore_pb2.SaveLabelRequest,
                        [label_header(image_id, tag, content_header(data)), *chunks_of(data, 4 << 10)]))
    kill_after, delay = _kill_point(rng, len(parts))
    _interrupt_stream(server, stubs.datastore.SaveLabel, parts, kill_after, delay)
    return Interrupted("label", f"after part {kill_after}/{len(parts)} +{delay:.3f}s", image_id, tag, data, before)


def _image_grid(stubs: Stubs, image_id: str) -> tuple:
    replies = stubs.datastore.DownloadImage(datastore_pb2.DownloadImageRequest(image_id=image_id),
                                            timeout=RPC_TIMEOUT_S)
    data = b"".join(r.chunk.data for r in replies if r.HasField("chunk"))
    img = nib.Nifti1Image.from_bytes(gzip_or_not(data))
    return img.shape, img.affine


def gzip_or_not(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _interrupt_train(stubs: Stubs, server: ServerProcess, rng: random.Random, run: int) -> Interrupted:
    job_id = start_train(stubs, MODEL, max_epochs=200)
    delay = rng.uniform(0, 6.0)
    time.sleep(delay)
    running = bool(worker_processes(job_id))
    server.kill9()
    return Interrupted("train", f"{delay:.2f}s after start", job_id=job_id, worker_seen=running)


def _interrupt_infer(stubs: Stubs, server: ServerProcess, rng: random.Random, run: int) -> Interrupted:
    image_id = f"phantom_{rng.randrange(4):03d}"
    request = infer_pb2.InferRequest(model=MODEL, image_id=image_id, output=infer_pb2.OutputOptions(save_label=True))
    delay = rng.uniform(0, 2.0)

    def run_infer() -> None:
        try:
            for _ in stubs.infer.Infer(request, timeout=RPC_TIMEOUT_S):
                pass
        except grpc.RpcError:
            pass

    thread = threading.Thread(target=run_infer, daemon=True)
    thread.start()
    time.sleep(delay)
    server.kill9()
    thread.join(timeout=RPC_TIMEOUT_S + 5)
    return Interrupted("infer", f"{delay:.2f}s after the call", image_id)


INTERRUPTS = {"upload": _interrupt_upload, "label": _interrupt_label, "train": _interrupt_train,
              "infer": _interrupt_infer}


def _resume(stubs: Stubs, what: Interrupted) -> str:
    """Continues an interrupted upload from what the server committed; returns the stored sha256."""
    status = upload_status(stubs, what.image_id, what.tag if what.kind == "label" else "")
    committed = status.committed_size if status.total_size == len(what.data) else 0
    assert 0 <= committed <= len(what.data), f"committed {committed} of {len(what.data)}"
    upload_id = getattr(status, "upload_id", "")
    if what.kind == "upload":
        header: Any = upload_header(what.image_id, content_header(what.data), upload_id=upload_id)
        message, call = datastore_pb2.UploadImageRequest, stubs.datastore.UploadImage
    else:
        header = label_header(what.image_id, what.tag, content_header(what.data), upload_id=upload_id)
        message, call = datastore_pb2.SaveLabelRequest, stubs.datastore.SaveLabel
    reply = call(stream(message, [header, *chunks_of(what.data, 16 << 10, start=committed)]), timeout=RPC_TIMEOUT_S)
    return reply.image.sha256 if what.kind == "upload" else reply.label.sha256


def _download(stubs: Stubs, what: Interrupted) -> bytes:
    if what.kind == "upload":
        replies = stubs.datastore.DownloadImage(datastore_pb2.DownloadImageRequest(image_id=what.image_id),
                                                timeout=RPC_TIMEOUT_S)
    else:
        replies = stubs.datastore.DownloadLabel(
            datastore_pb2.DownloadLabelRequest(image_id=what.image_id, tag=what.tag), timeout=RPC_TIMEOUT_S)
    return b"".join(r.chunk.data for r in replies if r.HasField("chunk"))


def _check_transfer(stubs: Stubs, what: Interrupted) -> List[str]:
    want = _sha(what.data)
    if what.kind == "upload":
        try:
            stored: Optional[str] = stubs.datastore.GetImage(
                datastore_pb2.GetImageRequest(image_id=what.image_id), timeout=RPC_TIMEOUT_S).image.sha256
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            stored = None
        allowed = {None, want}
    else:
        stored = _label_sha(stubs, what.image_id, what.tag)
        allowed = {what.before_sha, want}
    problems = []
    if stored not in allowed:
        problems.append(f"stored sha256 {stored} is neither the old ({sorted(map(str, allowed))}) nor whole new bytes")
    if stored != want:
        try:
            resumed = _resume(stubs, what)
        except grpc.RpcError as exc:
            return problems + [f"resume failed: {exc.code().name}: {exc.details()}"]
        if resumed != want:
            problems.append(f"resumed upload stored sha256 {resumed}, sent {want}")
    if _download(stubs, what) != what.data:
        problems.append("downloaded bytes differ from the bytes sent")
    return problems


def _check_job(stubs: Stubs, what: Interrupted) -> List[str]:
    problems = []
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while worker_processes(what.job_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphans = worker_processes(what.job_id)
    if orphans:
        problems.append(f"orphan worker processes of job {what.job_id} after restart: {[p for p, _ in orphans]}")
        _kill(orphans)
    state = job_state(stubs, what.job_id)
    if state == "JOB_STATE_RUNNING" and not worker_processes(what.job_id):
        problems.append(f"job {what.job_id} still reported RUNNING with no process")
    return problems


def _kill(processes: List[tuple]) -> None:
    for pid, _ in processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _check(stubs: Stubs, studies: Path, what: Optional[Interrupted]) -> List[str]:
    problems = [f"index/files: {p}" for p in agreement_problems(studies)]
    if what is None:
        return problems
    if what.kind in ("upload", "label"):
        problems += _check_transfer(stubs, what)
    elif what.kind == "train":
        problems += _check_job(stubs, what)
    problems += [f"after the check: index/files: {p}" for p in agreement_problems(studies)]
    return problems


def debris(studies: Path) -> List[str]:
    """Files of the server's own folder that are neither its databases, job records nor logs (audit)."""
    home = studies / INDEX_DIR
    out = []
    for path in home.rglob("*") if home.exists() else []:
        rel = path.relative_to(home)
        if path.is_file() and rel.parts[0] not in ("jobs", "logs") and ".db" not in path.name:
            out.append(str(rel))
    for dirpath, dirnames, filenames in os.walk(studies):
        if Path(dirpath) == studies and INDEX_DIR in dirnames:
            dirnames.remove(INDEX_DIR)
        out += [str(Path(dirpath, n).relative_to(studies)) for n in filenames if n.startswith(".")]
    return out


@pytest.fixture()
def folders(tmp_path: Path) -> Iterator[tuple]:
    app = copy_template(tmp_path / "app")
    studies = tmp_path / "studies"
    write_phantoms(studies, count=4, shape=SHAPE, labeled=4)
    try:
        yield app, studies
    finally:
        _kill(worker_processes(str(tmp_path)))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", sorted(INTERRUPTS))
def test_kill9_then_restart(folders: tuple, kind: str) -> None:
    app, studies = folders
    rng = random.Random(f"{SEED}-{kind}")
    problems: List[str] = []
    interrupted: Optional[Interrupted] = None
    server: Optional[ServerProcess] = None
    workers_killed = 0
    try:
        for run in range(RUNS_PER_KIND + 1):
            server = start_server_process(app, studies, CONF, env={TTL_ENV: "3600"})
            with grpc.insecure_channel(server.address) as channel:
                stubs = Stubs.of(channel)
                assert serving(channel), f"run {run}: the restarted server is not SERVING"
                label = f"run {run}: after kill -9 during {kind} ({interrupted.point})" if interrupted \
                    else f"run {run}: first start"
                problems += [f"{label}: {p}" for p in _check(stubs, studies, interrupted)]
                if run < RUNS_PER_KIND:
                    interrupted = INTERRUPTS[kind](stubs, server, rng, run)
                    workers_killed += interrupted.worker_seen
                else:
                    server.stop()
            server = None
    finally:
        if server is not None:
            server.kill9()
    assert not problems, "\n".join(problems)
    if kind == "train":
        assert workers_killed, "at least one kill should have found the job's worker process running"


@pytest.mark.timeout(300)
def test_debris_is_gone_after_its_expiry(folders: tuple) -> None:
    app, studies = folders
    server: Optional[ServerProcess] = start_server_process(app, studies, CONF, env={TTL_ENV: "3600"})
    try:
        assert server is not None
        with grpc.insecure_channel(server.address) as channel:
            # a partial upload left behind by a kill in the middle of its stream
            image, _, affine = make_phantom((64, 64, 48), seed=5)
            data = _nifti(image.astype(np.int16), affine)
            parts = list(stream(datastore_pb2.UploadImageRequest,
                                [upload_header("debris", content_header(data)), *chunks_of(data, 16 << 10)]))
            _interrupt_stream(server, Stubs.of(channel).datastore.UploadImage, parts, len(parts) // 2, 0.3)
        assert debris(studies), "the interrupted upload should have left a partial to expire"
        server = start_server_process(app, studies, CONF, env={TTL_ENV: "1"})
        left = debris(studies)
        deadline = time.monotonic() + EXPIRY_WAIT_S
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = debris(studies)
        assert not left, f"debris still there {EXPIRY_WAIT_S}s after a 1 s expiry ({TTL_ENV}=1): {left[:10]}"
        assert not agreement_problems(studies)
    finally:
        if server is not None:
            server.kill9()
