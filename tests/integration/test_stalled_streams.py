"""Stalled clients on the real server: more stalled streams than RPC threads leave health and app info
answering; the stalled streams end as idle and free their threads; a slow but steady upload is not cut.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from monailabel.datasets import write_phantoms
from monailabel_api.v1 import (
    app_pb2,
    app_pb2_grpc,
    common_pb2,
    datastore_pb2,
    datastore_pb2_grpc,
    infer_pb2,
    infer_pb2_grpc,
)
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .conftest import copy_template
from .helpers import write_volume

IDLE_S = 4.0
RPC_THREADS = 16
STALLED = RPC_THREADS + 4


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[RunningServer, bytes]]:
    root = tmp_path_factory.mktemp("stalled")
    app_dir = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=1, shape=(32, 32, 16), labeled=0)
    config = ServerConfig(app_dir=app_dir, studies=str(studies), port=0, rpc_threads=RPC_THREADS,
                          stream_idle_timeout_s=IDLE_S, conf={"roi_size": "32,32,32"})
    running = start(config)
    volume = root / "volume.nii.gz"
    write_volume(volume, shape=(32, 32, 16))
    yield running, volume.read_bytes()
    running.stop(grace=1)


def _content(data: bytes) -> common_pb2.ContentHeader:
    return common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI_GZ, total_size=len(data),
                                    sha256=hashlib.sha256(data).hexdigest())


def _stalled(first: Any, release: threading.Event) -> Iterator[Any]:
    """A request stream that sends its header, then nothing until released."""
    yield first
    release.wait(60)


def _opener(channel: grpc.Channel, data: bytes, release: threading.Event) -> List[Callable[[int], Any]]:
    """Ways to open one stalled stream of each streaming upload kind; each returns (code, details)."""
    datastore = datastore_pb2_grpc.DatastoreServiceStub(channel)
    infer = infer_pb2_grpc.InferServiceStub(channel)

    def upload(i: int) -> Any:
        header = datastore_pb2.UploadImageHeader(image_id=f"stalled_{i}", content=_content(data))
        return datastore.UploadImage(_stalled(datastore_pb2.UploadImageRequest(header=header), release), timeout=60)

    def save_label(i: int) -> Any:
        header = datastore_pb2.SaveLabelHeader(image_id="phantom_000", tag=f"stalled{i}", content=_content(data))
        return datastore.SaveLabel(_stalled(datastore_pb2.SaveLabelRequest(header=header), release), timeout=60)

    def infer_volume(i: int) -> Any:
        header = infer_pb2.InferVolumeHeader(model="segmentation", content=_content(data))
        return list(infer.InferVolume(_stalled(infer_pb2.InferVolumeRequest(header=header), release), timeout=60))

    return [upload, save_label, infer_volume]


def _outcome(call: Callable[[int], Any], i: int) -> Tuple[grpc.StatusCode, str, Any]:
    try:
        call(i)
        return grpc.StatusCode.OK, "", None
    except grpc.RpcError as err:
        return err.code(), err.details() or "", err


def _wait_streams(server: RunningServer, n: int, within_s: float) -> None:
    assert server.guard is not None
    deadline = time.monotonic() + within_s
    while server.guard.active_streams != n:
        assert time.monotonic() < deadline, f"{server.guard.active_streams} streams active, expected {n}"
        time.sleep(0.02)


def test_stalled_streams_leave_health_and_info_answering_then_end_as_idle(guarded) -> None:
    server, data = guarded
    config = server.config
    assert config is not None and config.max_streams < STALLED
    release = threading.Event()
    with grpc.insecure_channel(server.address) as channel, futures.ThreadPoolExecutor(STALLED) as pool:
        kinds = _opener(channel, data, release)
        started = time.monotonic()
        stalled = [pool.submit(_outcome, kinds[i % len(kinds)], i) for i in range(STALLED)]
        # the cap admits max_streams of them; the others are refused at once with RetryInfo
        refused = []
        for finished in futures.as_completed(stalled, timeout=30):
            refused.append(finished.result())
            if len(refused) == STALLED - config.max_streams:
                break
        for code, details, err in refused:
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
            assert "streaming calls" in details
            status = rpc_status.from_call(err)
            assert status is not None
            retry = error_details_pb2.RetryInfo()
            assert any(d.Unpack(retry) for d in status.details if d.Is(retry.DESCRIPTOR))
            assert retry.retry_delay.ToNanoseconds() > 0
        _wait_streams(server, config.max_streams, within_s=IDLE_S / 2)

        # every admitted stream holds a thread and waits on its client; unary calls still answer
        health = health_pb2_grpc.HealthStub(channel)
        app = app_pb2_grpc.AppServiceStub(channel)
        for _ in range(5):
            asked = time.monotonic()
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                health_pb2.HealthCheckResponse.SERVING
            assert app.GetAppInfo(app_pb2.GetAppInfoRequest(), timeout=2).name == "radiology"
            assert time.monotonic() - asked < 1.0
        # (and they answered while the streams were stalled: none of those has ended yet)
        assert server.guard is not None and server.guard.active_streams == config.max_streams
        assert sum(f.done() for f in stalled) == len(refused)

        # then the idle timeout ends each admitted stream with DEADLINE_EXCEEDED and says why
        admitted = [f.result(timeout=IDLE_S * 4) for f in stalled]
        idle = [(code, details) for code, details, _ in admitted if code != grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(idle) == config.max_streams
        for code, details in idle:
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED, details
            assert "idle" in details and "stream_idle_timeout_s" in details
        assert time.monotonic() - started >= IDLE_S
        release.set()
        _wait_streams(server, 0, within_s=5)

        # the threads are free again: a whole upload succeeds, and nothing of the stalled ones remains
        datastore = datastore_pb2_grpc.DatastoreServiceStub(channel)
        header = datastore_pb2.UploadImageHeader(image_id="after_stall", content=_content(data))
        requests = [datastore_pb2.UploadImageRequest(header=header),
                    datastore_pb2.UploadImageRequest(chunk=common_pb2.Chunk(offset=0, data=data))]
        reply = datastore.UploadImage(iter(requests), timeout=30)
        assert reply.image.image_id == "after_stall"
        ids = {i.image_id for i in datastore.ListImages(datastore_pb2.ListImagesRequest(), timeout=10).images}
        assert "after_stall" in ids and not any(i.startswith("stalled_") for i in ids)
        assert not list(Path(server.app.studies).glob("stalled_*"))


@pytest.mark.slow  # paced over three idle timeouts; tests/unit/server/test_streams.py checks it quickly
def test_a_slow_but_steady_upload_is_not_cut(guarded) -> None:
    server, data = guarded
    pieces = 6
    step = -(-len(data) // pieces)
    pause = threading.Event()

    def slow() -> Iterator[datastore_pb2.UploadImageRequest]:
        header = datastore_pb2.UploadImageHeader(image_id="slow_upload", content=_content(data))
        yield datastore_pb2.UploadImageRequest(header=header)
        for offset in range(0, len(data), step):  # a piece every half timeout: 3 timeouts in all
            pause.wait(IDLE_S / 2)
            piece = common_pb2.Chunk(offset=offset, data=data[offset:offset + step])
            yield datastore_pb2.UploadImageRequest(chunk=piece)

    started = time.monotonic()
    with grpc.insecure_channel(server.address) as channel:
        reply = datastore_pb2_grpc.DatastoreServiceStub(channel).UploadImage(slow(), timeout=60)
    assert reply.image.image_id == "slow_upload" and reply.image.size == len(data)
    assert time.monotonic() - started > 2 * IDLE_S


def test_a_download_the_client_stops_reading_is_ended(guarded) -> None:
    server, _ = guarded
    rng = np.random.default_rng(3)
    with MonaiLabelClient(server.address, timeout=60) as client:
        client.upload_array("unread", rng.integers(-1000, 1000, size=(128, 128, 64)).astype(np.int16))  # 2 MiB
    # no BDP probing: the client's flow-control window stays small, so unread chunks stop the server's sends
    with grpc.insecure_channel(server.address, options=[("grpc.http2.bdp_probe", 0)]) as channel:
        stub = datastore_pb2_grpc.DatastoreServiceStub(channel)
        call = stub.DownloadImage(datastore_pb2.DownloadImageRequest(image_id="unread", chunk_size=256 << 10),
                                  timeout=60)
        assert next(call).HasField("header")
        _wait_streams(server, 1, within_s=5)
        started = time.monotonic()
        _wait_streams(server, 0, within_s=IDLE_S * 3)  # the watchdog ended it and freed its thread
        assert time.monotonic() - started >= IDLE_S / 2
        with pytest.raises(grpc.RpcError) as info:
            for _ in call:
                pass
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "read nothing" in info.value.details()


def test_health_watch_streams_and_holds_no_request_thread(guarded) -> None:
    server, _ = guarded
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watches = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(RPC_THREADS + 2)]
        assert all(next(w).status == health_pb2.HealthCheckResponse.SERVING for w in watches)
        assert server.guard is not None and server.guard.active_streams == 0
        # with every watch still open, checks and unary calls answer
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING
        assert app_pb2_grpc.AppServiceStub(channel).GetAppInfo(app_pb2.GetAppInfoRequest(), timeout=5).name
        for w in watches:
            w.cancel()
