"""Several server replicas on one PostgreSQL database and one shared studies folder.

Real components: Debian's PostgreSQL (started in a temporary folder on a free port), two in-process
replicas on their own ports, and a third in a subprocess where ``kill -9`` is needed. Covered: an upload
on A is downloaded from B and a broken upload started on A resumes on B; 20 annotators spread over the
replicas never get the same leased image; a job started on A is watched on B; one job per model across
replicas; a replica killed with ``kill -9`` while running a job has the job marked FAILED by another;
and everything restarted finds everything (images, leases, jobs, events) again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import grpc
import pytest

from monailabel.datasets import write_phantoms
from monailabel.db import DATABASE_URL_ENV
from monailabel_api.v1 import (
    common_pb2,
    datastore_pb2,
    datastore_pb2_grpc,
    infer_pb2,
    job_pb2,
    strategy_pb2,
    strategy_pb2_grpc,
)
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.convert import from_struct
from monailabel_server.observability import JsonFormatter
from monailabel_server.server import RunningServer, start
from monailabel_server.web import envoy_binary

from .conftest import copy_template
from .helpers import assert_status, chunked, sha256, write_volume
from .postgres import PostgresServer

pytestmark = pytest.mark.slow  # starts PostgreSQL, three servers, and trains

MODEL = "segmentation"
CONF = {"roi_size": "32,32,32"}
LONG_TRAIN = dict(max_epochs=500, device="cpu", dataset="Dataset", extra={"pretrained": False})
REPLICA_TIMEOUT_S = 3.0
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    """Replicas on one database and one studies folder."""

    url: str
    app: Path
    studies: Path
    replicas: List[RunningServer] = field(default_factory=list)
    seen: Dict[str, object] = field(default_factory=dict)

    def boot(self, count: int = 2) -> None:
        self.replicas = [
            start(ServerConfig(app_dir=self.app, studies=str(self.studies), port=0, conf=CONF, database=self.url,
                               replica_timeout_s=REPLICA_TIMEOUT_S, metrics_port=0, train_node_addr="127.0.0.1"))
            for _ in range(count)
        ]

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop(grace=1)
        self.replicas = []

    def client(self, i: int) -> MonaiLabelClient:
        return MonaiLabelClient(self.replicas[i].address, timeout=60)


def wait_idle_upload(
    stub: datastore_pb2_grpc.DatastoreServiceStub, image_id: str
) -> datastore_pb2.GetUploadStatusResponse:
    """The image's partial upload, once its stream has ended (bounded wait)."""
    deadline = time.monotonic() + 30
    while True:
        status = stub.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(image_id=image_id))
        if status.upload_id and not status.active or time.monotonic() > deadline:
            return status
        time.sleep(0.01)


@pytest.fixture(scope="module")
def cluster(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replicas")
    studies = root / "studies"
    write_phantoms(studies, count=12, shape=(32, 32, 32), labeled=2)
    before = os.environ.get(DATABASE_URL_ENV)
    c = Cluster(postgres.create_database("replicas"), copy_template(root / "app"), studies)
    c.boot()
    try:
        yield c
    finally:
        c.stop()
        if before is None:
            os.environ.pop(DATABASE_URL_ENV, None)
        else:
            os.environ[DATABASE_URL_ENV] = before


@pytest.mark.parametrize("url, says", [
    ("postgresql://postgres:hunter2@127.0.0.1:{port}/nowhere", "cannot reach the database postgresql://postgres:***@"),
    ("mysql://someone@db/x", "--database must be sqlite:///FILE or postgresql://"),
])
def test_a_database_that_cannot_be_used_is_one_line_before_the_app_loads(
    cluster: Cluster, url: str, says: str
) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = url.format(port=closed.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "monailabel_server", "start_server", "--app", str(cluster.app), "--studies",
             str(cluster.studies), "--port", "0", "--database", url],
            capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 5, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and says in lines[-1] and "hunter2" not in done.stderr, done.stderr


def test_upload_on_a_is_downloaded_from_b(cluster: Cluster) -> None:
    source = cluster.studies / "phantom_003.nii.gz"
    data = source.read_bytes()
    with cluster.client(0) as a, cluster.client(1) as b:
        a.upload_image("uploaded_on_a", source, info={"by": "a"})
        assert b.download_image("uploaded_on_a") == data
        assert "uploaded_on_a" in [i.image_id for i in b.list_images()]
        b.update_image_info("uploaded_on_a", {"checked_on": "b"})
        info = a.get_image("uploaded_on_a").info
        assert info["by"] == "a" and info["checked_on"] == "b"
        a.delete_image("uploaded_on_a")
        assert_status(grpc.StatusCode.NOT_FOUND, lambda: b.get_image("uploaded_on_a"))


def test_an_upload_broken_on_a_resumes_on_b(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "r.nii"
    write_volume(src, shape=(48, 48, 24))
    data = src.read_bytes()
    content = common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data), sha256=sha256(data))
    header = datastore_pb2.UploadImageHeader(image_id="resumed_on_b", content=content)
    size = 16 << 10
    with cluster.client(0) as a, cluster.client(1) as b:
        stub_a, stub_b = datastore_pb2_grpc.DatastoreServiceStub(a.channel), datastore_pb2_grpc.DatastoreServiceStub(
            b.channel)
        # the stream to A stops after three chunks; A keeps them as a partial upload
        assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub_a.UploadImage(
            chunked(datastore_pb2.UploadImageRequest, header, data[: 3 * size], size)), "resume from offset")
        status = wait_idle_upload(stub_b, "resumed_on_b")  # B knows it, and where it stopped
        assert status.committed_size == 3 * size and len(status.upload_id) == 32
        resumed = datastore_pb2.UploadImageHeader(image_id="resumed_on_b", content=content,
                                                  upload_id=status.upload_id)
        record = stub_b.UploadImage(chunked(datastore_pb2.UploadImageRequest, resumed, data, size,
                                            offsets=list(range(3 * size, len(data), size)))).image
        assert record.sha256 == sha256(data) and a.download_image("resumed_on_b") == data
        assert_status(grpc.StatusCode.NOT_FOUND, lambda: stub_a.GetUploadStatus(
            datastore_pb2.GetUploadStatusRequest(upload_id=status.upload_id)))
        a.delete_image("resumed_on_b")


def test_twenty_annotators_on_two_replicas_never_share_a_leased_image(cluster: Cluster) -> None:
    with cluster.client(1) as b:
        unlabeled = sorted(i.image_id for i in b.list_images(filter="unlabeled", tag="final"))
    assert len(unlabeled) == 10
    results: Dict[str, object] = {}
    barrier = threading.Barrier(20)

    def annotator(i: int) -> None:
        with cluster.client(i % 2) as c:
            barrier.wait()
            results[f"annotator-{i}"] = c.next_sample("random", client_id=f"annotator-{i}")

    threads = [threading.Thread(target=annotator, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 20
    found = [r.image_id for r in results.values() if r.found]  # type: ignore[attr-defined]
    assert sorted(found) == unlabeled  # every unlabeled image leased once, to one annotator
    assert sum(1 for r in results.values() if r.all_leased) == 10  # type: ignore[attr-defined]
    cluster.seen["leases"] = {k: r.image_id for k, r in results.items() if r.found}  # type: ignore[attr-defined]


def test_a_job_started_on_a_is_watched_on_b_and_one_job_per_model_holds_across_replicas(cluster: Cluster) -> None:
    with cluster.client(0) as a, cluster.client(1) as b:
        job = a.start_train(MODEL, max_epochs=1, val_split=0.0, device="cpu", extra={"pretrained": False})
        assert_status(grpc.StatusCode.ABORTED, lambda: b.start_train(MODEL, max_epochs=1, device="cpu"),
                      f"train job {job.job_id}")
        seen_on_b = [e.sequence for e in b.watch_job(job.job_id, timeout=300)]
        done = b.get_job(job.job_id)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
        assert seen_on_b == list(range(1, len(seen_on_b) + 1)) and len(seen_on_b) >= 3
        assert [e.sequence for e in a.watch_job(job.job_id, timeout=60)] == seen_on_b
    cluster.seen["job"] = (job.job_id, seen_on_b)


def _replica_process(cluster: Cluster, *flags: str) -> tuple[subprocess.Popen[str], str]:
    """A replica in its own process (so that it can be killed with kill -9), and its address."""
    env = dict(os.environ)
    env.pop(DATABASE_URL_ENV, None)  # the flag alone says where the database is
    proc = subprocess.Popen(
        [sys.executable, "-m", "monailabel_server", "start_server", "--app", str(cluster.app), "--studies",
         str(cluster.studies), "--port", "0", "--database", cluster.url, "--replica-timeout", str(REPLICA_TIMEOUT_S),
         *[a for k, v in CONF.items() for a in ("--conf", k, v)], *flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    assert proc.stdout is not None
    address = next(line.strip().rsplit(" ", 1)[1] for line in proc.stdout if "listening on" in line)
    return proc, address


def test_a_watch_on_b_wakes_when_a_appends_through_listen_notify(cluster: Cluster) -> None:
    a_jobs, b_jobs = (r.jobs for r in cluster.replicas[:2])
    assert a_jobs is not None and b_jobs is not None and b_jobs.store.listening
    job_id, events = cluster.seen["job"]  # type: ignore[misc]
    seen = b_jobs.store.generation
    woke = threading.Event()

    def wait_on_b() -> None:
        b_jobs.store.wait(30.0, seen)  # a poll would sleep the whole 30 s
        woke.set()

    waiter = threading.Thread(target=wait_on_b, daemon=True)
    waiter.start()
    started = time.monotonic()
    sequence = a_jobs.store.append(job_id, [{"type": "log", "text": "a note from replica A"}])
    cluster.seen["job"] = (job_id, [*events, sequence])  # the restart test expects every event
    assert woke.wait(10), "B was not woken by A's append"
    assert time.monotonic() - started < 10 and b_jobs.store.generation > seen


def test_a_replica_killed_with_kill_9_has_its_job_failed_by_another(cluster: Cluster) -> None:
    proc, address = _replica_process(cluster)
    try:
        with MonaiLabelClient(address, timeout=60) as c, cluster.client(0) as a:
            job = c.start_train(MODEL, **LONG_TRAIN)
            # the replica's job is visible (and exclusive) on A
            assert_status(grpc.StatusCode.ABORTED, lambda: a.start_train(MODEL, **LONG_TRAIN), job.job_id)
            for event in a.watch_job(job.job_id, timeout=300):
                if event.WhichOneof("event") == "iteration":
                    break
            proc.kill()  # SIGKILL: the replica gets no chance to say anything
            proc.wait(timeout=30)
            killed_at = time.monotonic()
            ended = a.wait_job(job.job_id, timeout=60)
            assert ended.state == job_pb2.JOB_STATE_FAILED and "replica" in ended.error, ended.error
            assert time.monotonic() - killed_at < 4 * REPLICA_TIMEOUT_S
            # the model is free again; a job running on A is cancelled through B
            again = a.start_train(MODEL, **LONG_TRAIN)
            with cluster.client(1) as b:
                b.cancel_job(again.job_id)
                assert b.wait_job(again.job_id, timeout=120).state == job_pb2.JOB_STATE_CANCELLED
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _scrape(replica: RunningServer) -> Dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{replica.metrics_port}/metrics", timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metrics_of_each_replica_and_request_ids_in_json_logs(cluster: Cluster) -> None:
    job_id, _ = cluster.seen["job"]  # type: ignore[misc]
    a, b = (_scrape(r) for r in cluster.replicas)
    upload = 'method="/monailabel.v1.DatastoreService/UploadImage"'
    # A served the uploads, with their bytes counted; B answered the watch and the refused start
    assert a[f'monailabel_rpc_total{{code="OK",{upload}}}'] >= 1
    uploaded = (cluster.studies / "phantom_003.nii.gz").stat().st_size
    assert a[f"monailabel_rpc_received_bytes_total{{{upload}}}"] > uploaded
    assert b['monailabel_rpc_total{code="ABORTED",method="/monailabel.v1.TrainService/StartTrainJob"}'] == 1
    assert b['monailabel_rpc_duration_seconds_count{code="OK",method="/monailabel.v1.JobService/WatchJob"}'] >= 1
    # jobs come from the database: both replicas count the succeeded train job (and the cancelled one)
    for scraped in (a, b):
        assert scraped['monailabel_jobs{kind="train",state="SUCCEEDED"}'] >= 1
        assert scraped['monailabel_jobs{kind="train",state="CANCELLED"}'] >= 1
        assert scraped["monailabel_sessions"] == 0 and scraped["monailabel_model_slots"] >= 1
    assert job_id

    # a JSON log line of a call carries the client's request id; model-free calls get one of their own
    records: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(JsonFormatter().format(record))  # type: ignore[method-assign]
    sampler_log = logging.getLogger("monailabel_server.sampling")
    sampler_log.addHandler(handler)
    level = sampler_log.level
    sampler_log.setLevel(logging.INFO)
    holder = next(iter(cluster.seen["leases"]))  # type: ignore[call-overload]  # gives back its image, gets one
    try:
        with cluster.client(1) as c:
            stub = strategy_pb2_grpc.StrategyServiceStub(c.channel)
            request = strategy_pb2.GetNextSampleRequest(strategy="random", client_id=holder)
            list(stub.GetNextSample(request, metadata=[("x-request-id", "req-42")], timeout=60))
            list(stub.GetNextSample(request, timeout=60))
    finally:
        sampler_log.removeHandler(handler)
        sampler_log.setLevel(level)
    lines = [json.loads(r) for r in records]
    assert lines[0]["request_id"] == "req-42" and lines[0]["method"].endswith("/GetNextSample")
    assert lines[-1]["request_id"] not in ("", "req-42") and "next sample" in lines[-1]["message"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _envoy(replicas: List[RunningServer], folder: Path) -> Iterator[str]:
    """Runs Envoy with the repository's load-balancing config, its endpoints pointed at ``replicas``."""
    text = (ROOT / "deploy" / "envoy" / "lb.yaml").read_text()
    listen, admin = _free_port(), _free_port()
    text = text.replace("port_value: 8080", f"port_value: {listen}").replace("port_value: 9901", f"port_value: {admin}")
    lines = [line for line in text.splitlines() if f"replica-{len(replicas) + 1}," not in line]
    text = "\n".join(lines)
    for i, replica in enumerate(replicas, 1):
        text = text.replace(f"address: replica-{i}, port_value: 50051",
                            f"address: 127.0.0.1, port_value: {replica.port}")
    assert "replica-" not in text.split("static_resources")[1]
    config = folder / "lb.yaml"
    config.write_text(text)
    log = open(folder / "envoy.log", "w")
    proc = subprocess.Popen([envoy_binary(), "-c", str(config), "--use-dynamic-base-id", "--log-level", "warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        def healthy() -> int:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters", timeout=2).read().decode()
            except OSError:
                return 0
            return body.count("health_flags::healthy")

        deadline = time.monotonic() + 60
        while healthy() < len(replicas):  # both endpoints passed Envoy's gRPC health check
            assert proc.poll() is None and time.monotonic() < deadline, (folder / "envoy.log").read_text()[-2000:]
            time.sleep(0.1)
        yield f"127.0.0.1:{listen}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _calls(replica: RunningServer, method: str) -> float:
    return _scrape(replica).get(f'monailabel_rpc_total{{code="OK",method="{method}"}}', 0.0)


def test_envoy_spreads_clients_over_replicas_and_keeps_each_clients_sessions_on_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    method = "/monailabel.v1.AppService/GetAppInfo"
    with _envoy(cluster.replicas, tmp_path) as address:
        clients_of = [0] * len(cluster.replicas)
        for _ in range(12):  # each client its own affinity key: the ring spreads the clients
            before = [_calls(r, method) for r in cluster.replicas]
            with MonaiLabelClient(address, timeout=60) as c:
                for _ in range(3):
                    assert c.info().name
            served = [_calls(r, method) - b for r, b in zip(cluster.replicas, before, strict=True)]
            assert sorted(served) == [0, 3], served  # all of one client's calls reached one replica
            clients_of[served.index(3)] += 1
        assert min(clients_of) >= 1, clients_of

        # a client's session is found by each of its calls; another client's calls may reach the other replica,
        # which answers with a status the client acts on (create the session again)
        with MonaiLabelClient(address, timeout=60) as owner:
            session = owner.create_session(image_id="phantom_002")
            for _ in range(5):
                assert owner.infers.GetSession(infer_pb2.GetSessionRequest(session_id=session.session_id),
                                               timeout=30).session.session_id == session.session_id
            assert sorted(_scrape(r)["monailabel_sessions"] for r in cluster.replicas) == [0, 1]
            errors = []
            for _ in range(40):
                with MonaiLabelClient(address, timeout=60) as other:
                    try:
                        other.infers.GetSession(infer_pb2.GetSessionRequest(session_id=session.session_id),
                                                timeout=30)
                    except grpc.RpcError as err:
                        errors.append(err)
                        break
            assert errors and errors[0].code() == grpc.StatusCode.NOT_FOUND
            assert "another server replica" in (errors[0].details() or "")
            owner.delete_session(session.session_id)


def test_every_replica_restarted_finds_everything(cluster: Cluster) -> None:
    job_id, events = cluster.seen["job"]  # type: ignore[misc]
    leases: Dict[str, str] = cluster.seen["leases"]  # type: ignore[assignment]
    with cluster.client(0) as a:
        images = sorted(i.image_id for i in a.list_images())
    cluster.stop()
    cluster.boot()
    with cluster.client(0) as a, cluster.client(1) as b:
        assert sorted(i.image_id for i in b.list_images()) == images
        job = b.get_job(job_id)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED and job.published_version == 1
        assert [e.sequence for e in a.watch_job(job_id, timeout=60)] == events
        # the leases survived: an annotator asking again gets another image, never one still leased to another
        held = set(leases.values())
        client_id, mine = next(iter(leases.items()))
        again = b.next_sample("random", client_id=client_id)
        assert again.all_leased or (again.found and again.image_id not in held - {mine})


def _logs(client: MonaiLabelClient, job_id: str) -> List[str]:
    return [e.log_line for e in client.watch_job(job_id, timeout=300) if e.WhichOneof("event") == "log_line"]


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_train_job_across_two_replicas_trains_on_both_and_publishes_once(cluster: Cluster) -> None:
    with cluster.client(0) as a, cluster.client(1) as b:
        before = len(a.list_model_versions(MODEL).versions)
        assert_status(grpc.StatusCode.FAILED_PRECONDITION, lambda: a.start_train(MODEL, nodes=3, device="cpu"),
                      "needs 3 live replicas on this database; 2 are alive")
        assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: a.start_train(MODEL, nodes=65, device="cpu"),
                      "params.nodes")
        assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: a.start_train(
            MODEL, nodes=2, extra={"rdzv_endpoint": "10.0.0.1:1"}), "params.rdzv_endpoint is not accepted")
        job = a.start_train(MODEL, nodes=2, max_epochs=2, val_split=0.0, device="cpu", dataset="Dataset",
                            extra={"pretrained": False})
        logs = _logs(b, job.job_id)  # watched on the replica that joined
        done = b.get_job(job.job_id)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (done.error, logs[-20:])
        joiner = cluster.replicas[1].jobs.replica_id  # type: ignore[union-attr]
        assert any("serves the rendezvous at 127.0.0.1:" in line for line in logs), logs[:10]
        assert f"node 1 (replica {joiner}) joined" in logs
        assert any(line.startswith("[node 1] ") for line in logs)  # the joined node's output is the job's too

        # both nodes trained, each on its share of the labeled images, and rank 0 alone published
        stats = from_struct(next(t for t in a.list_trainers() if t.name == MODEL).stats)
        assert stats["world_size"] == 2 and [r["rank"] for r in stats["ranks"]] == [0, 1]
        assert len({r["iterations"] for r in stats["ranks"]}) == 1, stats["ranks"]  # DDP: in step
        assert all(r["iterations"] > 0 and r["train_records"] >= 1 for r in stats["ranks"]), stats["ranks"]
        versions = a.list_model_versions(MODEL).versions
        assert len(versions) == before + 1 and done.published_version == before + 1
        store = cluster.replicas[0].jobs.store  # type: ignore[union-attr]
        ended = [(0, "SUCCEEDED"), (1, "SUCCEEDED")]
        assert _wait(lambda: [(n.node, n.state) for n in store.nodes(job.job_id)] == ended, 30), store.nodes(job.job_id)
        # the job's nodes, as any replica reports them
        shown = [(n.node, n.replica_id, n.state) for n in b.get_job(job.job_id).nodes]
        assert shown == [(0, cluster.replicas[0].jobs.replica_id, job_pb2.JOB_STATE_SUCCEEDED),  # type: ignore[union-attr]
                         (1, joiner, job_pb2.JOB_STATE_SUCCEEDED)]
        assert next(j for j in a.list_jobs(kind="train") if j.job_id == job.job_id).nodes == b.get_job(job.job_id).nodes
        assert not a.get_job(cluster.seen["job"][0]).nodes  # type: ignore[index]  # a job on one replica has none


@pytest.mark.parametrize("killed", ["node 0", "node 1"])
def test_a_train_job_across_replicas_fails_when_either_node_is_killed(cluster: Cluster, killed: str) -> None:
    # B steps aside, so that A and a replica in its own process (C, which can be killed) are the two nodes
    b = cluster.replicas.pop(1)
    b.stop(grace=1)
    proc, address = _replica_process(cluster, "--train-nodes", "2", "--train-node-addr", "127.0.0.1")
    a_server = cluster.replicas[0]
    try:
        with MonaiLabelClient(address, timeout=60) as c, cluster.client(0) as a:
            versions = len(a.list_model_versions(MODEL).versions)
            if killed == "node 0":  # C runs the job: its --train-nodes 2 makes it span A too
                job = c.start_train(MODEL, **LONG_TRAIN)
            else:  # A runs it; C joins
                job = a.start_train(MODEL, nodes=2, **LONG_TRAIN)
            for event in a.watch_job(job.job_id, timeout=300):
                if event.WhichOneof("event") == "iteration":
                    break
            nodes = a_server.jobs.store.nodes(job.job_id)  # type: ignore[union-attr]
            assert len(nodes) == 2
            proc.kill()
            proc.wait(timeout=30)
            ended = a.wait_job(job.job_id, timeout=120)
            assert ended.state == job_pb2.JOB_STATE_FAILED, ended.error
            if killed == "node 0":
                assert "replica running the job stopped" in ended.error
            else:
                assert "node 1 of the job" in ended.error and "stopped (no heartbeat)" in ended.error
                assert [n.node for n in ended.nodes] == [0, 1]
            # nothing of the job is left on A, and nothing was published
            assert _wait(lambda: not a_server.jobs._nodes and not a_server.jobs._running, 30)  # type: ignore[union-attr]
            assert len(a.list_model_versions(MODEL).versions) == versions
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
        cluster.replicas.append(start(ServerConfig(
            app_dir=cluster.app, studies=str(cluster.studies), port=0, conf=CONF, database=cluster.url,
            replica_timeout_s=REPLICA_TIMEOUT_S, metrics_port=0, train_node_addr="127.0.0.1")))
