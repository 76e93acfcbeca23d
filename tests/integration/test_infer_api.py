"""InferService over a real channel with the radiology template: sources, encodings, sessions, errors."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc
import nibabel as nib
import numpy as np
import pytest

from monailabel_api.v1 import common_pb2, infer_pb2, infer_pb2_grpc
from monailabel_client import MonaiLabelClient
from monailabel_server.server import RunningServer

from .helpers import assert_status, write_volume


def _image_grid(server: RunningServer, image_id: str) -> tuple[tuple, np.ndarray]:
    img = nib.load(server.app.datastore().get_image_uri(image_id))
    return tuple(img.shape), np.asarray(img.affine)


def test_infer_datastore_image_returns_compact_mask(server, client: MonaiLabelClient) -> None:
    out = client.infer("segmentation", image_id="phantom_001")
    assert out.labels == {"organ": 1}
    assert out.header is not None and out.header.encoding == common_pb2.ENCODING_NIFTI_GZ
    assert out.header.total_size == len(out.data)
    array, affine = out.array_and_affine()
    shape, image_affine = _image_grid(server, "phantom_001")
    assert array.shape == shape
    assert array.dtype == np.uint8
    np.testing.assert_allclose(affine, image_affine, atol=1e-5)
    assert set(np.unique(array)) <= {0, 1}
    assert out.latency.infer > 0 and out.latency.total >= out.latency.infer
    assert "latencies" in out.result


def test_raw_and_nrrd_outputs(server, client: MonaiLabelClient) -> None:
    raw = client.infer("segmentation", image_id="phantom_001", encoding=common_pb2.ENCODING_RAW)
    assert raw.header.encoding == common_pb2.ENCODING_RAW
    assert raw.header.data_type == common_pb2.DATA_TYPE_UINT8
    shape, image_affine = _image_grid(server, "phantom_001")
    assert tuple(raw.header.shape) == shape
    array, affine = raw.array_and_affine()
    np.testing.assert_allclose(affine, image_affine, atol=1e-5)
    nifti = client.infer("segmentation", image_id="phantom_001").array()
    np.testing.assert_array_equal(array, nifti)
    nrrd_out = client.infer("segmentation", image_id="phantom_001", encoding=common_pb2.ENCODING_NRRD)
    assert nrrd_out.header.file_extension == ".nrrd"
    np.testing.assert_array_equal(nrrd_out.array(), nifti)


def test_infer_volume_file_and_array(client: MonaiLabelClient, tmp_path: Path) -> None:
    src = tmp_path / "v.nii.gz"
    image, _, affine = write_volume(src, shape=(36, 30, 20))
    from_file = client.infer_file("segmentation", src)
    from_array = client.infer_file("segmentation", image, affine=affine, encoding=common_pb2.ENCODING_RAW)
    assert from_file.array().shape == image.shape
    np.testing.assert_array_equal(from_file.array(), from_array.array())
    np.testing.assert_allclose(from_array.array_and_affine()[1], affine, atol=1e-5)


def test_session_decodes_once_and_serves_clicks(client: MonaiLabelClient, channel, tmp_path: Path) -> None:
    src = tmp_path / "s.nii.gz"
    image, _, affine = write_volume(src, shape=(32, 32, 16))
    session = client.create_session(src, ttl_seconds=60)
    assert list(session.shape) == [32, 32, 16]
    np.testing.assert_allclose(session.geometry.spacing, np.diag(affine)[:3], atol=1e-6)
    first = client.infer("segmentation", session_id=session.session_id, foreground=[[10, 10, 8]])
    second = client.infer("segmentation", session_id=session.session_id, background=[[1, 1, 1]])
    direct = client.infer_file("segmentation", src)
    np.testing.assert_array_equal(first.array(), direct.array())
    np.testing.assert_array_equal(second.array(), direct.array())
    stub = infer_pb2_grpc.InferServiceStub(channel)
    got = stub.GetSession(infer_pb2.GetSessionRequest(session_id=session.session_id)).session
    assert got.expire_time.seconds >= session.expire_time.seconds
    client.delete_session(session.session_id)
    assert_status(grpc.StatusCode.NOT_FOUND,
                  lambda: client.infer("segmentation", session_id=session.session_id), "session")


def test_session_from_datastore_image_can_save_label(server, client: MonaiLabelClient) -> None:
    session = client.create_session(image_id="phantom_002")
    assert session.image_id == "phantom_002"
    out = client.infer("segmentation", session_id=session.session_id)
    assert out.array().shape == _image_grid(server, "phantom_002")[0]
    saved = client.infer("segmentation", image_id="phantom_002", save_label=True)
    assert saved.header is not None
    label = client.download_label("phantom_002", tag="original")
    assert len(label) > 0
    assert "original" in {lb.tag for lb in client.get_image("phantom_002").labels}


def test_unknown_model_image_session_are_not_found(client: MonaiLabelClient, channel) -> None:
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.infer("nope", image_id="phantom_001"), "segmentation")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.infer("segmentation", image_id="missing"))
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.infer("segmentation", session_id="0" * 32))
    stub = infer_pb2_grpc.InferServiceStub(channel)
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: stub.DeleteSession(infer_pb2.DeleteSessionRequest(session_id="x")))
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.Infer(infer_pb2.InferRequest(model="segmentation")))
    assert client.info().name == "radiology"


def test_corrupt_volume_for_inference_is_invalid(client: MonaiLabelClient) -> None:
    junk = b"\x00garbage" * 512
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  lambda: client.infer_file("segmentation", _bytes_file(junk)), "nifti")


def _bytes_file(data: bytes) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "junk.nii"
    path.write_bytes(data)
    return path


def _long_volume() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(160, 160, 128)).astype(np.float32), np.eye(4)


def test_info_and_health_answer_while_inference_runs(client: MonaiLabelClient) -> None:
    from grpc_health.v1 import health_pb2

    image, affine = _long_volume()
    session = client.create_session(image, affine=affine)
    done = threading.Event()
    errors: list = []

    def infer() -> None:
        try:
            client.infer("segmentation", session_id=session.session_id, timeout=300)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=infer)
    worker.start()
    time.sleep(0.3)  # let the inference reach the model
    answered = 0
    while not done.is_set() and answered < 20:
        assert client.info().name == "radiology"
        assert client.health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
        answered += 1
    still_running = not done.is_set()
    worker.join()
    assert not errors, errors
    assert answered == 20 and still_running, "info/health must answer while the model runs"


def test_cancelled_inference_stops_its_work(client: MonaiLabelClient, caplog: pytest.LogCaptureFixture) -> None:
    image, affine = _long_volume()
    session = client.create_session(image, affine=affine)
    request = infer_pb2.InferRequest(model="segmentation", session_id=session.session_id)
    caplog.set_level(logging.INFO)
    call = client.infers.Infer(request)
    time.sleep(0.5)
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("CANCELLED" in r.getMessage() for r in caplog.records):
        time.sleep(0.05)
    assert any("CANCELLED" in r.getMessage() for r in caplog.records), "the model work should stop on cancel"
    # the worker is free again: a small inference goes through
    assert client.infer("segmentation", image_id="phantom_001").header is not None
