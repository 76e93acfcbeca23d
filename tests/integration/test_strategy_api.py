"""StrategyService over a real channel: strategies, next sample with leases, scoring jobs, bad input.

The app (``al_app/main.py``, copied per server) holds MONAI Label's documented scoring example, the
ready-made strategies and scoring methods, and tasks that fail on purpose. Scoring runs in child
processes, like training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2

from monailabel.datasets import make_phantom, write_phantoms
from monailabel_api.v1 import job_pb2, strategy_pb2
from monailabel_client import MonaiLabelClient
from monailabel_client.cli import main as cli_main
from monailabel_server.config import ServerConfig
from monailabel_server.server import SERVICE_NAMES, RunningServer, start

from .helpers import assert_status

APP = Path(__file__).resolve().parent / "al_app"
SHAPE = (24, 24, 24)
# ids of different lengths: the documented example's TorchScript model scores an image by its path length
UNLABELED = ["a", "bb", "cccc", "ddd"]


class PathLengthScore(torch.nn.Module):
    """A TorchScript scoring model as the documented example calls it: ``model({"image": path})``."""

    def forward(self, data: Dict[str, str]) -> float:
        return float(len(data["image"]))


def make_server(root: Path, unlabeled: List[str], labeled: int = 1, **conf: str) -> RunningServer:
    app_dir = root / "app"
    shutil.copytree(APP, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (app_dir / "model").mkdir()
    torch.jit.save(torch.jit.script(PathLengthScore()), str(app_dir / "model" / "scoring_model.ts"))
    studies = root / "studies"
    write_phantoms(studies, count=labeled, shape=SHAPE, labeled=labeled, prefix="labeled")
    for i, image_id in enumerate(unlabeled):
        import nibabel as nib

        image, _, affine = make_phantom(SHAPE, 50 + i)
        nib.save(nib.Nifti1Image(image, affine), str(studies / f"{image_id}.nii.gz"))
    config = ServerConfig(app_dir=app_dir, studies=str(studies), port=0, conf={"auto_update_scoring": "false", **conf})
    return start(config)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = make_server(tmp_path_factory.mktemp("strategy"), UNLABELED)
    yield running
    running.stop(grace=1)


@pytest.fixture()
def client(server: RunningServer) -> Iterator[MonaiLabelClient]:
    with MonaiLabelClient(server.address, timeout=60) as c:
        yield c


def _until(what: str, check: Callable[[], Any], deadline_s: float = 60.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _succeeded(client: MonaiLabelClient, job: job_pb2.Job) -> job_pb2.Job:
    done = client.wait_job(job.job_id, timeout=120)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (done.error, list(done.last_log_lines))
    return done


def _free(server: RunningServer, client_id: str) -> List[str]:
    """Unlabeled images no other client holds."""
    assert server.sampler is not None
    held = {i for i, c in server.sampler.leases.live(time.time()).items() if c != client_id}
    return [i for i in server.app.datastore().get_unlabeled_images() if i not in held]


# ---- listing --------------------------------------------------------------------------------------------

def test_lists_strategies_and_scoring_methods_and_serves_health(client: MonaiLabelClient) -> None:
    strategies = {s.name: s for s in client.list_strategies()}
    assert set(strategies) == {"random", "first", "epistemic", "my_score", "picky", "exploding"}
    assert strategies["random"].description == "Random Strategy"
    methods = {m.name: m for m in client.list_scoring_methods()}
    assert set(methods) == {"my_scoring_method", "epistemic", "dice", "sum", "exploding", "slow"}
    assert dict(methods["epistemic"].info.items())["simulation_size"] == 3
    name = strategy_pb2.DESCRIPTOR.services_by_name["StrategyService"].full_name
    assert name in SERVICE_NAMES
    status = client.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING


# ---- MONAI Label's documented example, end to end ------------------------------------------------------

@pytest.mark.slow  # scoring jobs in worker processes
def test_documented_example_scores_then_picks_highest(server: RunningServer, client: MonaiLabelClient,
                                                      capsys: pytest.CaptureFixture) -> None:
    # no score yet: the strategy picks one at random
    first = client.next_sample("my_score", client_id="doc")
    assert first.found and first.image_id in UNLABELED and "my_score" not in first.info

    job = client.start_scoring("my_scoring_method")
    assert job.model == "my_scoring_method" and job.kind == job_pb2.JOB_KIND_SCORING and job.trigger == "client"
    assert job.state in (job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_SUCCEEDED)
    done = _succeeded(client, job)
    scored = json.loads(json.dumps(dict(done.result.items()), default=lambda v: dict(v.items())))
    assert sorted(scored) == sorted(UNLABELED)
    ds = server.app.datastore()
    lengths = {i: len(ds.get_image_uri(i)) for i in UNLABELED}
    assert all(ds.get_image_info(i)["my_score"] == lengths[i] for i in UNLABELED)

    # the highest score wins among the images nobody else holds (asking again released "doc"'s lease)
    pick = client.next_sample("my_score", client_id="doc")
    assert pick.image_id == max(_free(server, "doc"), key=lambda i: lengths[i]) == "cccc"
    assert pick.info["my_score"] == lengths["cccc"]

    # scoring again with the same model skips every image (the CLI runs it and follows it)
    assert cli_main(["--address", server.address, "score", "my_scoring_method"]) == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and '"result": {}' in out
    assert cli_main(["--address", server.address, "jobs", "--kind", "scoring"]) == 0
    out = capsys.readouterr().out
    assert job.job_id in out and "scoring my_scoring_method SUCCEEDED" in out


# ---- next sample: the image in the same call, CLI, leases ---------------------------------------------

def test_next_sample_streams_the_image_in_the_same_call(client: MonaiLabelClient, tmp_path: Path) -> None:
    result = client.next_sample("first", client_id="viewer", include_image=True)
    assert result.found and result.sample.strategy == "first" and result.sample.client_id == "viewer"
    assert result.data == client.download_image(result.image_id)
    assert hashlib.sha256(result.data).hexdigest() == result.sample.content.sha256 == result.sample.image.sha256
    assert result.sample.content.total_size == len(result.data)
    assert result.sample.lease_expire_time.ToSeconds() > time.time() + 3000  # default TTL: an hour

    # small chunks: several chunk messages, in order
    request = strategy_pb2.GetNextSampleRequest(strategy="first", client_id="viewer", include_image=True,
                                                chunk_size=4096)
    messages = list(client.strategy.GetNextSample(request, timeout=30))
    assert messages[0].HasField("sample") and len(messages) > 2
    offsets = [m.chunk.offset for m in messages[1:]]
    assert offsets == sorted(offsets) and offsets[0] == 0

    dest = tmp_path / "next.nii.gz"
    saved = client.next_sample("first", client_id="viewer", dest=dest)
    assert saved.path == dest and dest.read_bytes() == client.download_image(saved.image_id)


def test_cli_next_prints_the_sample_and_downloads(server: RunningServer, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "cli.nii.gz"
    assert cli_main(["--address", server.address, "next", "--strategy", "first", "--client-id", "cli",
                     "--download", str(dest)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "SAMPLE_STATUS_FOUND" and out["image_id"] in UNLABELED and out["path"] == str(dest)
    assert dest.stat().st_size > 0
    assert cli_main(["--address", server.address, "next", "--list"]) == 0
    assert "my_score" in capsys.readouterr().out


# ---- epistemic scoring and strategy ----------------------------------------------------------------------

@pytest.mark.slow  # scoring jobs in worker processes
def test_epistemic_scoring_job_then_strategy(server: RunningServer, client: MonaiLabelClient) -> None:
    done = _succeeded(client, client.start_scoring("epistemic", {"max_workers": 1}))
    result = dict(done.result.items())
    assert result["executed"] == result["total"] == len(UNLABELED) and result["skipped"] == 0
    ds = server.app.datastore()
    scores = {i: ds.get_image_info(i)["epistemic_entropy"] for i in UNLABELED}
    assert all(0 < s < 1 for s in scores.values()), scores
    assert len({ds.get_image_info(i)["epistemic_ts"] for i in UNLABELED}) == 1

    pick = client.next_sample("epistemic", client_id="epi")
    free = _free(server, "epi")
    assert pick.image_id == max(free, key=lambda i: scores[i])
    assert pick.fields["epistemic_entropy"] == pytest.approx(scores[pick.image_id])


# ---- bad input ------------------------------------------------------------------------------------------

def test_unknown_names_are_not_found(client: MonaiLabelClient) -> None:
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.next_sample("nope"), "strategy 'nope'")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.start_scoring("nope"), "no scoring method 'nope'")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.get_job("nope"), "nope")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.cancel_job("nope"), "nope")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: list(client.watch_job("nope")), "nope")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: c.start_scoring("epistemic", {"simulation_size": "x"}), "simulation_size"),
        (lambda c: c.start_scoring("epistemic", {"max_samples": -1}), "max_samples"),
        (lambda c: c.start_scoring("dice", {"y": 3}), "'y'"),
        (lambda c: c.start_scoring("sum", {"method": "dice"}), "method"),
        (lambda c: c.next_sample("picky", params={"top": "x"}), "'top'"),
        (lambda c: c.next_sample("first", client_id="bad\nid"), "client_id"),
        (lambda c: c.next_sample("first", client_id="x" * 300), "client_id"),
        (lambda c: c.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=-1)), "page_size"),
        (lambda c: c.jobs.ListJobs(job_pb2.ListJobsRequest(page_token="x")), "token"),
        (lambda c: c.jobs.ListJobs(job_pb2.ListJobsRequest(kind=7)), "kind"),
        (lambda c: c.start_scoring("epistemic", {"train_ds": [{"image": "/etc/passwd"}]}), "params.train_ds"),
        (lambda c: c.start_scoring("epistemic", {"deep": {"a" * 200: 1}}), "params.deep"),
        (lambda c: list(c.strategy.GetNextSample(strategy_pb2.GetNextSampleRequest(chunk_size=-1))), "chunk_size"),
        (lambda c: c.strategy.StartScoringJob(strategy_pb2.StartScoringJobRequest()), "method"),
    ],
)
def test_bad_parameters_are_invalid_argument(client: MonaiLabelClient, call: Callable, message: str) -> None:
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: call(client), message)


def test_strategy_that_raises_is_internal_and_the_server_stays_up(client: MonaiLabelClient) -> None:
    err = assert_status(grpc.StatusCode.INTERNAL, lambda: client.next_sample("exploding", client_id="x"),
                        "RuntimeError")
    assert "Traceback" not in (err.details() or "")
    client.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert client.next_sample("first", client_id="viewer").found  # "viewer" gives its image back and asks again


@pytest.mark.slow  # scoring jobs in worker processes
def test_scoring_method_that_raises_fails_its_job(server: RunningServer, client: MonaiLabelClient) -> None:
    job = client.start_scoring("exploding")
    events = list(client.watch_job(job.job_id, timeout=120))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    states = [e.state_change.state for e in events if e.WhichOneof("event") == "state_change"]
    assert states == [job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_FAILED]
    assert any(e.log_line == "about to explode" for e in events)
    failed = client.get_job(job.job_id)
    assert failed.state == job_pb2.JOB_STATE_FAILED
    assert failed.error == "RuntimeError: scoring exploded on purpose"
    # what clients see holds no traceback frames and no server paths; the job's log file has them
    lines = [e.log_line for e in events if e.WhichOneof("event") == "log_line"] + list(failed.last_log_lines)
    assert not any("Traceback" in line or 'File "' in line or str(Path.home()) in line for line in lines)
    assert not any(os.sep + "tmp" + os.sep in line for line in lines)
    assert server.jobs is not None
    log = (server.jobs.root / job.job_id / "job.log").read_text()
    assert "Traceback (most recent call last)" in log and "RuntimeError: scoring exploded on purpose" in log
    # the job's process keeps freed memory for reuse, as the server's does (--retain-memory-mb)
    assert "allocator: large buffers from the heap, up to 1024 MiB of freed memory kept" in log
    # the server is fine; one job API lists jobs of both kinds, and filters by kind
    client.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert job.job_id in [j.job_id for j in client.list_jobs(model="exploding", kind="scoring")]
    assert job.job_id in [j.job_id for j in client.list_jobs(state="failed")]
    assert job.job_id not in [j.job_id for j in client.list_jobs(kind="train")]


@pytest.mark.slow  # scoring jobs in worker processes
def test_one_job_per_method_unless_queued_and_cancel(client: MonaiLabelClient) -> None:
    slow = client.start_scoring("slow")
    assert_status(grpc.StatusCode.ABORTED, lambda: client.start_scoring("slow"), slow.job_id)
    queued = client.start_scoring("slow", queue=True)
    assert queued.state == job_pb2.JOB_STATE_QUEUED
    assert client.cancel_job(queued.job_id).state == job_pb2.JOB_STATE_CANCELLED

    for event in client.watch_job(slow.job_id, timeout=60):
        if event.log_line.startswith("slow scoring step"):
            break
    t0 = time.monotonic()
    client.cancel_job(slow.job_id)
    assert list(client.watch_job(slow.job_id, timeout=30))[-1].state_change.state == \
        job_pb2.JOB_STATE_CANCELLED
    assert time.monotonic() - t0 < 10  # scoring has no cancel hook: SIGTERM ends it at once
    assert_status(grpc.StatusCode.FAILED_PRECONDITION, lambda: client.cancel_job(slow.job_id), "ended")


# ---- many annotators ------------------------------------------------------------------------------------

def test_concurrent_annotators_never_share_an_image(tmp_path: Path) -> None:
    ids = [f"img{i}" for i in range(6)]
    server = make_server(tmp_path, ids)
    try:
        results: Dict[str, Any] = {}
        barrier = threading.Barrier(len(ids))

        def ask(n: int) -> None:
            with MonaiLabelClient(server.address, timeout=60) as c:
                barrier.wait()
                results[f"annotator-{n}"] = c.next_sample("random", client_id=f"annotator-{n}")

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(ids))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(r.found for r in results.values())
        served = {name: r.image_id for name, r in results.items()}
        assert sorted(served.values()) == ids  # six annotators, six different images

        with MonaiLabelClient(server.address, timeout=60) as c:
            # a seventh finds every unlabeled image taken: a normal answer, not an error
            late = c.next_sample("random", client_id="late")
            assert late.all_leased and not late.found and late.sample.unlabeled_count == len(ids)
            # asking again releases the asker's previous image, which may come back to it
            again = c.next_sample("first", client_id="annotator-0")
            assert again.image_id == served["annotator-0"]
            # a final label saved ends the lease; the image is then labeled, so nobody gets it again
            image_id = served["annotator-1"]
            _, label, affine = make_phantom(SHAPE, 0)
            c.save_label(image_id, label, affine=affine)
            assert server.sampler is not None and server.sampler.leases.holder(image_id, time.time()) is None
            nxt = c.next_sample("random", client_id="late")
            assert nxt.all_leased and nxt.sample.unlabeled_count == len(ids) - 1
            # leases survive a restart of the server
        config = server.config
        server.stop(grace=1)
        assert config is not None
        server = start(config)
        with MonaiLabelClient(server.address, timeout=60) as c:
            assert c.next_sample("random", client_id="late").all_leased
    finally:
        server.stop(grace=1)


def test_nothing_left_to_label_is_a_normal_answer(tmp_path: Path) -> None:
    server = make_server(tmp_path, [], labeled=2)
    try:
        with MonaiLabelClient(server.address, timeout=60) as c:
            for strategy in ("random", "first", "epistemic", "my_score"):
                result = c.next_sample(strategy, client_id="someone", include_image=True)
                assert result.none_left and result.status == "NONE_LEFT" and not result.image_id
                assert result.data is None and result.sample.unlabeled_count == 0
    finally:
        server.stop(grace=1)


# ---- scoring again after training publishes a model ---------------------------------------------------

@pytest.mark.slow  # a training job, then scoring jobs, in worker processes
def test_scoring_runs_again_after_training_publishes(tmp_path: Path) -> None:
    server = make_server(tmp_path, ["x", "yy"], auto_update_scoring="true", only_my_score="true")
    try:
        with MonaiLabelClient(server.address, timeout=60) as c:
            # MONAI Label scores once the app has started (on_init_complete)
            (initial,) = list(c.list_jobs(kind="scoring"))
            assert initial.trigger.startswith("app:")
            _succeeded(c, initial)
            ds = server.app.datastore()
            before = {i: ds.get_image_info(i)["my_score_timestamp"] for i in ("x", "yy")}

            train = c.start_train("publish")
            for _ in c.watch_job(train.job_id, timeout=120):
                pass
            trained = c.get_job(train.job_id)
            assert trained.state == job_pb2.JOB_STATE_SUCCEEDED and trained.published_version == 1

            def rescored() -> Any:
                return [j for j in c.list_jobs(kind="scoring") if train.job_id in j.trigger]

            (auto,) = _until("scoring after training", rescored)
            assert auto.trigger == f"auto: publish v1 published by train job {train.job_id}"
            done = _succeeded(c, auto)
            assert sorted(dict(done.result.items())) == ["x", "yy"]  # a new model: every image scored again
            after = {i: ds.get_image_info(i)["my_score_timestamp"] for i in ("x", "yy")}
            assert all(after[i] > before[i] for i in before)
            assert int(os.stat(server.app.scoring_model).st_mtime) == after["x"]  # type: ignore[attr-defined]
    finally:
        server.stop(grace=1)


@pytest.mark.slow
def test_cli_score_waits_behind_an_automatic_job(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # auto_update_scoring on (MONAI Label's default): every method gets a job at start, "slow" runs a minute
    server = make_server(tmp_path, ["x"], auto_update_scoring="true")
    try:
        with MonaiLabelClient(server.address, timeout=60) as c:
            (auto,) = list(c.list_jobs(model="slow", kind="scoring"))
            assert auto.trigger.startswith("app:") and auto.state in (job_pb2.JOB_STATE_QUEUED,
                                                                       job_pb2.JOB_STATE_RUNNING)
            capsys.readouterr()
            # the CLI queues behind the automatic job instead of failing with ABORTED
            assert cli_main(["--address", server.address, "score", "slow", "--no-watch"]) == 0
            captured = capsys.readouterr()
            assert "queued behind it" in captured.err and "QUEUED" in captured.out
            mine = next(j for j in c.list_jobs(model="slow", kind="scoring") if j.trigger == "client")
            # a job another client asked for is still a conflict: ABORTED, exit status 5, one line
            assert cli_main(["--address", server.address, "score", "slow", "--no-watch"]) == 5
            assert capsys.readouterr().err.startswith("error: ABORTED: ")
            for job in (mine, auto):
                c.cancel_job(job.job_id)
    finally:
        server.stop(grace=1)
