"""TrainService over a real channel: train the template from random weights on phantoms, watch, cancel, fail.

One server (its own studies folder) for the module; the phantoms travel over gRPC like a user's would.
Training runs in child processes, so the tests also check that the server answers while they train.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from monailabel.datasets import make_phantom
from monailabel_api.v1 import job_pb2
from monailabel_client import MonaiLabelClient
from monailabel_client.cli import main as cli_main
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .conftest import copy_template
from .helpers import assert_status

pytestmark = pytest.mark.slow  # training jobs in worker processes

SHAPE = (48, 48, 48)
TRAIN_SEEDS = range(8)
HELD_OUT_SEEDS = range(100, 103)
MODEL = "segmentation"


class Holder:
    """The module's server, which the restart test replaces."""

    server: RunningServer
    config: ServerConfig


def _config(root: Path) -> ServerConfig:
    # a relative studies folder, as `monailabel start_server --studies studies` passes it: training
    # runs in another process and folder, and must still find the datastore
    studies = os.path.relpath(root / "studies")
    return ServerConfig(app_dir=root / "app", studies=studies, port=0, conf={"roi_size": "48,48,48"})


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Holder]:
    root = tmp_path_factory.mktemp("train")
    copy_template(root / "app")
    (root / "studies").mkdir()
    h = Holder()
    h.config = _config(root)
    h.server = start(h.config)
    with MonaiLabelClient(h.server.address, timeout=60) as c:
        for seed in TRAIN_SEEDS:
            image, label, affine = make_phantom(SHAPE, seed)
            c.upload_array(f"train_{seed:03d}", image, affine)
            c.save_label(f"train_{seed:03d}", label, affine=affine)
        for seed in HELD_OUT_SEEDS:
            image, _, affine = make_phantom(SHAPE, seed)
            c.upload_array(f"test_{seed:03d}", image, affine)
    yield h
    h.server.stop(grace=1)


@pytest.fixture()
def client(holder: Holder) -> Iterator[MonaiLabelClient]:
    with MonaiLabelClient(holder.server.address, timeout=60) as c:
        yield c


def _until(what: str, check: Callable[[], Any], deadline_s: float = 60.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _first_iteration(client: MonaiLabelClient, job_id: str) -> job_pb2.JobEvent:
    for event in client.watch_job(job_id, timeout=120):
        if event.WhichOneof("event") == "iteration":
            return event
    raise AssertionError(f"job {job_id} ended before its first iteration: {client.get_job(job_id)}")


def _dice(pred: np.ndarray, label: np.ndarray) -> float:
    pred, label = pred > 0, label > 0
    return float(2.0 * (pred & label).sum() / (pred.sum() + label.sum()))


def _wait_idle(client: MonaiLabelClient) -> None:
    _until("no active job", lambda: not any(
        j.state in (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING) for j in client.list_jobs(MODEL)))


# ---- trainers and bad input ----------------------------------------------------------------------------

def test_list_trainers_shows_config_with_defaults_and_choices(client: MonaiLabelClient) -> None:
    (trainer,) = client.list_trainers()
    assert trainer.name == MODEL and trainer.description
    config = dict(trainer.config.items())
    assert config["max_epochs"] == 20
    assert 0 < config["val_split"] < 1
    assert list(config["dataset"])[0] == "CacheDataset"
    assert "ThreadDataLoader" in list(config["dataloader"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_epochs": 0}, "max_epochs"),
        ({"val_split": 1.0}, "val_split"),
        ({"train_batch_size": 0}, "train_batch_size"),
        ({"dataset": "NoSuchDataset"}, "dataset"),
        ({"dataloader": "NoSuchLoader"}, "dataloader"),
        ({"device": "no-such-device"}, "device"),
        ({"extra": {"seed": "x"}}, "seed"),
        ({"train_ids": ["no_such_image"]}, "no_such_image"),
        ({"val_ids": ["no_such_image"]}, "no_such_image"),
        ({"max_epochs": 10**9}, "params.max_epochs"),
        ({"extra": {"lr": 50.0}}, "params.lr"),
        ({"extra": {"name": "../../elsewhere"}}, "params.name"),
    ],
)
def test_invalid_parameters_are_invalid_argument(client: MonaiLabelClient, kwargs: dict, message: str) -> None:
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.start_train(MODEL, **kwargs), message)


@pytest.mark.parametrize("key, value", [
    ("train_ds", [{"image": "/etc/hostname", "label": "/etc/hostname"}]),
    ("val_ds", [{"image": "/etc/hostname", "label": "/etc/hostname"}]),
    ("distributed_url", "file:///tmp/anywhere"),
    ("world_size", 512),
    ("tracking_uri", "/tmp/mlruns"),
])
def test_server_paths_and_process_counts_are_not_client_parameters(
    holder: Holder, client: MonaiLabelClient, key: str, value: Any
) -> None:
    before = len(list(client.list_jobs()))
    err = assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.start_train(MODEL, extra={key: value}),
                        f"params.{key} is not accepted from clients")
    assert "config" in (err.details() or "")
    # the field violation names the key, and no job was created
    status = rpc_status.from_call(err)
    assert status is not None
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [v.field for v in bad.field_violations]
    assert violations == [f"params.{key}"]
    assert len(list(client.list_jobs())) == before


def test_unknown_trainer_job_and_unlabeled_ids(client: MonaiLabelClient) -> None:
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.start_train("nope"), "no trainer 'nope'")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.get_job("nope"), "nope")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.cancel_job("nope"), "nope")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: list(client.watch_job("nope")), "nope")
    assert_status(grpc.StatusCode.FAILED_PRECONDITION, lambda: client.start_train(MODEL, train_ids=["test_100"]),
                  "no final label")


def test_no_labeled_data_is_failed_precondition(tmp_path: Path) -> None:
    copy_template(tmp_path / "app")
    (tmp_path / "studies").mkdir()
    image, _, affine = make_phantom((24, 24, 24), 1)
    server = start(_config(tmp_path))
    try:
        with MonaiLabelClient(server.address) as c:
            assert_status(grpc.StatusCode.FAILED_PRECONDITION, lambda: c.start_train(MODEL), "no labeled data")
            c.upload_array("unlabeled", image, affine)
            assert_status(grpc.StatusCode.FAILED_PRECONDITION, lambda: c.start_train(MODEL), "final label")
            assert list(c.list_jobs()) == []
    finally:
        server.stop(grace=1)


# ---- end to end --------------------------------------------------------------------------------------

def test_train_from_random_weights_then_infer_held_out_phantoms(holder: Holder, client: MonaiLabelClient) -> None:
    started = time.monotonic()
    job = client.start_train(MODEL, max_epochs=12, val_split=0.25, device="cpu", extra={"pretrained": False, "seed": 0})
    assert job.state == job_pb2.JOB_STATE_RUNNING and job.progress.max_epochs == 12
    assert job.kind == job_pb2.JOB_KIND_TRAIN and job.model == MODEL

    # the server keeps serving while the child process trains
    first = _first_iteration(client, job.job_id)
    assert first.iteration.epoch == 1 and first.iteration.loss > 0
    t0 = time.monotonic()
    client.info()
    client.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert time.monotonic() - t0 < 2.0
    client.infer(MODEL, image_id="test_100")

    events = list(client.watch_job(job.job_id, timeout=300))
    done = client.get_job(job.job_id)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (done.error, list(done.last_log_lines))
    train_s = time.monotonic() - started

    # events: numbered 1..N without gaps, states QUEUED -> RUNNING -> SUCCEEDED, every epoch reported
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    states = [e.state_change.state for e in events if e.WhichOneof("event") == "state_change"]
    assert states == [job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_SUCCEEDED]
    epochs = [e.epoch for e in events if e.WhichOneof("event") == "epoch"]
    assert [e.epoch for e in epochs] == list(range(1, 13))
    assert all("val_mean_dice" in e.val_metrics and "train_dice" in e.train_metrics for e in epochs)
    assert epochs[-1].best_metric == pytest.approx(done.progress.best_metric)
    assert sum(e.WhichOneof("event") == "iteration" for e in events) >= 8
    assert any(e.WhichOneof("event") == "log_line" for e in events)
    assert done.progress.epoch == 12 and done.published_version >= 1 and done.published_file == "segmentation.pt"

    # app info carries the train stats, as MONAI Label's train_stats
    (trainer,) = [t for t in client.info().trainers if t.name == MODEL]
    stats = dict(trainer.stats.items())
    assert stats["epoch"] == 12 and stats["total_time"]
    assert stats["best_metric"] == pytest.approx(done.progress.best_metric)

    # the infer task serves the published model with no restart
    dice = []
    for seed in HELD_OUT_SEEDS:
        _, label, _ = make_phantom(SHAPE, seed)
        dice.append(_dice(client.infer(MODEL, image_id=f"test_{seed:03d}").array(), label))
    print(f"held-out Dice {np.round(dice, 3).tolist()} mean {np.mean(dice):.3f}; training took {train_s:.0f} s")
    assert np.mean(dice) >= 0.85, dice

    # a late watcher replays everything; one that resumes from a sequence number gets exactly the rest
    assert [e.sequence for e in client.watch_job(job.job_id)] == [e.sequence for e in events]
    middle = events[len(events) // 2].sequence
    rest = list(client.watch_job(job.job_id, after_sequence=middle))
    assert [e.sequence for e in rest] == list(range(middle + 1, len(events) + 1))
    assert rest[-1].state_change.state == job_pb2.JOB_STATE_SUCCEEDED

    # finished: cancel is refused
    assert_status(grpc.StatusCode.FAILED_PRECONDITION, lambda: client.cancel_job(job.job_id), "ended already")


def test_watch_resumes_after_a_dropped_stream(client: MonaiLabelClient) -> None:
    job = next(j for j in client.list_jobs(MODEL) if j.state == job_pb2.JOB_STATE_SUCCEEDED)
    seen: List[int] = []
    stream = client.jobs.WatchJob(job_pb2.WatchJobRequest(job_id=job.job_id))
    for response in stream:
        seen.append(response.event.sequence)
        if len(seen) == 5:
            stream.cancel()  # the connection drops
            break
    seen += [e.sequence for e in client.watch_job(job.job_id, after_sequence=seen[-1])]
    assert seen == list(range(1, len(seen) + 1)) and len(seen) > 5


def test_cli_watch_and_jobs(client: MonaiLabelClient, holder: Holder, capsys: pytest.CaptureFixture) -> None:
    job = next(j for j in client.list_jobs(MODEL) if j.state == job_pb2.JOB_STATE_SUCCEEDED)
    assert cli_main(["--address", holder.server.address, "watch", job.job_id]) == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "best" in out
    assert cli_main(["--address", holder.server.address, "jobs"]) == 0
    assert job.job_id in capsys.readouterr().out


# ---- one job per model, queue, cancel ----------------------------------------------------------------

def test_second_start_is_aborted_unless_queued_and_cancel(client: MonaiLabelClient) -> None:
    _wait_idle(client)
    first = client.start_train(MODEL, max_epochs=50, device="cpu", dataset="Dataset")
    assert_status(grpc.StatusCode.ABORTED, lambda: client.start_train(MODEL, max_epochs=1), first.job_id)
    second = client.start_train(MODEL, max_epochs=50, device="cpu", dataset="Dataset", queue=True)
    assert second.state == job_pb2.JOB_STATE_QUEUED

    _first_iteration(client, first.job_id)
    client.cancel_job(first.job_id)
    assert list(client.watch_job(first.job_id, timeout=60))[-1].state_change.state == job_pb2.JOB_STATE_CANCELLED
    cancelled = client.get_job(first.job_id)
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED and "cancel" in cancelled.error
    assert_status(grpc.StatusCode.FAILED_PRECONDITION, lambda: client.cancel_job(first.job_id), "CANCELLED")

    # the queued job starts once the first one ends; cancelled while it runs, it ends CANCELLED too
    _until("the queued job to run", lambda: client.get_job(second.job_id).state == job_pb2.JOB_STATE_RUNNING)
    client.cancel_job(second.job_id)
    events = list(client.watch_job(second.job_id, timeout=60))
    states = [e.state_change.state for e in events if e.WhichOneof("event") == "state_change"]
    assert states == [job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_CANCELLED]

    # a queued job is cancelled at once
    third = client.start_train(MODEL, max_epochs=50, device="cpu", dataset="Dataset")
    fourth = client.start_train(MODEL, max_epochs=1, queue=True)
    assert client.cancel_job(fourth.job_id).state == job_pb2.JOB_STATE_CANCELLED
    client.cancel_job(third.job_id)
    _wait_idle(client)


# ---- a training process that dies ----------------------------------------------------------------------

def test_killed_training_process_fails_the_job_not_the_server(holder: Holder, client: MonaiLabelClient) -> None:
    _wait_idle(client)
    job = client.start_train(MODEL, max_epochs=50, device="cpu", dataset="Dataset")
    event = _first_iteration(client, job.job_id)
    assert event.iteration.epoch_iteration < event.iteration.epoch_length  # mid-epoch
    pid = holder.server.jobs.pid(job.job_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    events = list(client.watch_job(job.job_id, timeout=60))
    assert events[-1].state_change.state == job_pb2.JOB_STATE_FAILED
    failed = client.get_job(job.job_id)
    assert failed.state == job_pb2.JOB_STATE_FAILED
    assert "SIGKILL" in failed.error and "killed" in failed.error
    assert failed.last_log_lines and any("Epoch" in line for line in failed.last_log_lines)
    # the server is fine: health, info and inference answer
    client.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert client.info().name == "radiology"
    assert client.infer(MODEL, image_id="test_101").array().shape == SHAPE


# ---- history survives a restart ---------------------------------------------------------------------

def test_job_history_survives_a_server_restart(holder: Holder) -> None:
    with MonaiLabelClient(holder.server.address) as c:
        before = [(j.job_id, j.state, j.progress.best_metric) for j in c.list_jobs(page_size=2)]
        job_id = before[0][0]
        events = [e.sequence for e in c.watch_job(job_id)]
    assert len(before) >= 5

    holder.server.stop(grace=1)
    holder.server = start(holder.config)
    with MonaiLabelClient(holder.server.address) as c:
        assert [(j.job_id, j.state, j.progress.best_metric) for j in c.list_jobs(page_size=2)] == before
        assert [e.sequence for e in c.watch_job(job_id)] == events
