"""Dynamic batching over a real server: concurrent requests for one model share a forward, each gets the
mask it gets alone, and a request cancelled while it waits leaves the batch."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Dict, Iterator, List

import grpc
import numpy as np
import pytest

from monailabel.datasets import make_phantom
from monailabel_api.v1 import common_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

APP = Path(__file__).resolve().parent / "shared_app"
SHAPE = (24, 20, 16)
CLIENTS = 4


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("batching")
    shutil.copytree(APP, root / "app", ignore=shutil.ignore_patterns("__pycache__", "model"))
    (root / "studies").mkdir()
    # a long wait, so that the concurrent requests surely meet; the default is 2 ms
    server = start(ServerConfig(app_dir=root / "app", studies=str(root / "studies"), port=0,
                                batch_wait_ms=1500, max_batch_size=CLIENTS))
    yield server
    server.stop(grace=1)


def _batches(running: RunningServer) -> Dict[str, float]:
    samples = {s.name: s.value for m in running.metrics.batch_size.collect() for s in m.samples}
    return {"count": samples["monailabel_infer_batch_size_count"], "sum": samples["monailabel_infer_batch_size_sum"]}


def _sessions(client: MonaiLabelClient) -> List[str]:
    return [client.create_session(make_phantom(SHAPE, seed)[0], affine=np.eye(4)).session_id for seed in range(CLIENTS)]


@pytest.mark.parametrize("model", ["plain", "alone"])
def test_concurrent_requests_share_a_forward_and_get_their_own_masks(running: RunningServer, model: str) -> None:
    with MonaiLabelClient(running.address, timeout=120) as client:
        sessions = _sessions(client)
        alone = [client.infer(model, session_id=s, encoding=common_pb2.ENCODING_RAW).array() for s in sessions]
        assert all(0 < int(m.sum()) < m.size for m in alone) and not np.array_equal(alone[0], alone[1])
        before = _batches(running)
        results: Dict[int, np.ndarray] = {}
        barrier = threading.Barrier(CLIENTS)

        def call(k: int) -> None:
            with MonaiLabelClient(running.address, timeout=120) as own:
                barrier.wait(timeout=30)
                results[k] = own.infer(model, session_id=sessions[k], encoding=common_pb2.ENCODING_RAW).array()

        threads = [threading.Thread(target=call, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for k in range(CLIENTS):
            np.testing.assert_array_equal(results[k], alone[k])
        after = _batches(running)
        if model == "plain":  # one forward of four
            assert after == {"count": before["count"] + 1, "sum": before["sum"] + CLIENTS}
        else:  # opted out: no batch recorded
            assert after == before
        for s in sessions:
            client.delete_session(s)


def test_a_request_cancelled_while_waiting_leaves_the_batch(running: RunningServer) -> None:
    with MonaiLabelClient(running.address, timeout=120) as client:
        session = _sessions(client)[0]
        expected = client.infer("plain", session_id=session, encoding=common_pb2.ENCODING_RAW).array()
        before = _batches(running)
        with pytest.raises(grpc.RpcError) as info:  # its deadline passes while it waits for company
            client.infer("plain", session_id=session, encoding=common_pb2.ENCODING_RAW, timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        out = client.infer("plain", session_id=session, encoding=common_pb2.ENCODING_RAW).array()
        np.testing.assert_array_equal(out, expected)
        # the next request ran alone: the cancelled one had left (a batch of two would count 2)
        assert _batches(running) == {"count": before["count"] + 1, "sum": before["sum"] + 1}
        client.delete_session(session)
