"""Infer and Interact on a session share its decoded volume (no copy per call), and no pipeline changes it.

The app (``shared_app/main.py``) uses only MONAI's standard transforms; ``inplace`` normalises its
input in place through torch, ``numpy_inplace`` writes into it through a numpy view. Every mask must
equal the one the same model gives on the image file, and the session's volume must stay the decoded
file's, voxel for voxel.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pytest

from monailabel.datasets import write_phantoms
from monailabel_api.v1 import common_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

APP = Path(__file__).resolve().parent / "shared_app"
SHAPE = (40, 32, 24)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("shared")
    shutil.copytree(APP, root / "app", ignore=shutil.ignore_patterns("__pycache__", "model"))
    write_phantoms(root / "studies", count=1, shape=SHAPE, labeled=0)
    # host memory even with a GPU: these tests are of the copy-on-write memfd (tests/gpu has the device's)
    server = start(ServerConfig(app_dir=root / "app", studies=str(root / "studies"), port=0, session_device="cpu"))
    yield server
    server.stop(grace=1)


@pytest.fixture()
def client(running: RunningServer) -> Iterator[MonaiLabelClient]:
    with MonaiLabelClient(running.address, timeout=60) as c:
        yield c


def _session_volume(client: MonaiLabelClient, session_id: str) -> np.ndarray:
    header, data = client.download_session_image(session_id, common_pb2.ENCODING_RAW)
    return np.frombuffer(data, dtype=np.float32).reshape(tuple(header.shape), order="F")


@pytest.mark.parametrize("model", ["plain", "inplace", "numpy_inplace"])
def test_session_calls_give_the_file_mask_and_leave_the_volume_alone(
    client: MonaiLabelClient, running: RunningServer, model: str) -> None:
    image_id = "phantom_000"
    decoded = np.asarray(nib.load(running.app.datastore().get_image_uri(image_id)).dataobj, dtype=np.float32)
    expected = client.infer(model, image_id=image_id, encoding=common_pb2.ENCODING_RAW).array()
    assert expected.dtype == np.uint8 and 0 < int(expected.sum()) < expected.size  # a float mask, cast once
    session = client.create_session(image_id=image_id, ttl_seconds=60)
    try:
        for _ in range(2):  # the second call runs as the first left things
            out = client.infer(model, session_id=session.session_id, encoding=common_pb2.ENCODING_RAW)
            np.testing.assert_array_equal(out.array(), expected)
            np.testing.assert_array_equal(_session_volume(client, session.session_id), decoded)
        with client.interact(session.session_id, model) as live:
            for _ in range(2):
                live.click()
                live.answer()
                np.testing.assert_array_equal(live.mask, expected)
        np.testing.assert_array_equal(_session_volume(client, session.session_id), decoded)
    finally:
        client.delete_session(session.session_id)


def test_the_metrics_say_where_session_volumes_live(client: MonaiLabelClient, running: RunningServer) -> None:
    assert running.metrics is not None
    session = client.create_session(image_id="phantom_000", ttl_seconds=60)
    try:
        held = running.metrics.registry.get_sample_value("monailabel_session_device_bytes", {"device": "cpu"})
        assert held == int(np.prod(SHAPE)) * 4
    finally:
        client.delete_session(session.session_id)
