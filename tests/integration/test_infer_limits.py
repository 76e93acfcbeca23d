"""InferService over a real port: callers cannot reach the datastore through extra, control the server's
resources, or get INTERNAL for their own mistakes; masks come with a checksum the client verifies."""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import grpc
import nibabel as nib
import numpy as np
import pytest
import xxhash
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from monailabel.datasets import write_phantoms
from monailabel_api.v1 import common_pb2, infer_pb2, infer_pb2_grpc
from monailabel_client import ChecksumError, MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .conftest import copy_template
from .helpers import assert_status

MIB = 1 << 20


def _violations(err: grpc.RpcError) -> List[str]:
    status = rpc_status.from_call(err)
    fields = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


def _retry_delay(err: grpc.RpcError) -> float:
    status = rpc_status.from_call(err)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    return -1.0


def _labeled_image(client: MonaiLabelClient) -> str:
    return next(iter(client.list_images(filter="labeled"))).image_id


def _first_result(channel: grpc.Channel, request: infer_pb2.InferRequest) -> Tuple[infer_pb2.InferResult, bytes]:
    responses = list(infer_pb2_grpc.InferServiceStub(channel).Infer(request, timeout=120))
    return responses[0].result, b"".join(r.chunk.data for r in responses[1:])


def _bomb(path: Path, shape=(256, 256, 320)) -> Path:
    """A gzip NIfTI of zeros: ~20 KiB on the wire, 80 MiB once decoded as float32."""
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), np.eye(4)), str(path))
    return path


# -- defect 3: extra may not reach the datastore --------------------------------------------------
def test_extra_label_tag_cannot_overwrite_the_final_label(client: MonaiLabelClient, channel) -> None:
    image_id = _labeled_image(client)
    final_before = client.download_label(image_id, tag="final")
    err = assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda: client.infer("segmentation", image_id=image_id, params={"label_tag": "final"},
                                             save_label=True), "label_tag")
    assert "params.extra.label_tag" in _violations(err)
    assert client.download_label(image_id, tag="final") == final_before

    request = infer_pb2.InferRequest(model="segmentation", image_id=image_id,
                                     output=infer_pb2.OutputOptions(save_label=True))
    result, data = _first_result(channel, request)
    assert result.saved_label.tag == "original" and result.saved_label.image_id == image_id
    assert result.mask.sha256 == hashlib.sha256(data).hexdigest() == result.saved_label.sha256
    assert client.download_label(image_id, tag="final") == final_before, "the human label is untouched"
    assert hashlib.sha256(client.download_label(image_id, tag="original")).hexdigest() == result.mask.sha256


@pytest.mark.parametrize(("extra", "key"), [
    ({"result_dtype": "S2000"}, "result_dtype"),
    ({"model_filename": "../../../etc/passwd"}, "model_filename"),
    ({"image": "/etc/passwd"}, "image"),
    ({"cancel_check": False}, "cancel_check"),
    ({"save_label": True}, "save_label"),
    ({"device": "cpu"}, "device"),
    ({"output_path": "/tmp/x"}, "output_path"),
])
def test_reserved_extra_keys_are_invalid_by_name(client: MonaiLabelClient, extra, key) -> None:
    err = assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda: client.infer("segmentation", image_id="phantom_001", params=extra), key)
    assert _violations(err) == [f"params.extra.{key}"]


# -- defect 8: resources --------------------------------------------------------------------------
def test_gzip_bomb_is_refused_on_its_decoded_size(client: MonaiLabelClient, tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 256 << 10
    err = assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: client.create_session(bomb), "decodes to")
    assert "header.content" in _violations(err)
    assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: client.infer_file("segmentation", bomb), "decodes to")


def test_session_ttl_is_capped(client: MonaiLabelClient) -> None:
    session = client.create_session(image_id="phantom_001", ttl_seconds=2**31 - 1)
    try:
        assert session.expire_time.seconds <= time.time() + 3600 + 5
    finally:
        client.delete_session(session.session_id)


@pytest.mark.parametrize(("extra", "field"), [
    ({"roi_size": [-32, 16, 16]}, "params.extra.roi_size[0]"),
    ({"roi_size": [1, 1, 1]}, "params.extra.roi_size"),
    ({"roi_size": [16, 16]}, "params.extra.roi_size"),
    ({"sw_overlap": 1.5}, "params.extra.sw_overlap"),
    ({"sw_batch_size": -1}, "params.extra.sw_batch_size"),
])
def test_sliding_window_keys_are_checked(client: MonaiLabelClient, extra, field) -> None:
    err = assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda: client.infer("segmentation", image_id="phantom_001", params=extra))
    assert _violations(err) == [field]


def test_sane_sliding_window_runs(client: MonaiLabelClient) -> None:
    out = client.infer("segmentation", image_id="phantom_001",
                       params={"roi_size": [16, 16, 16], "sw_batch_size": 2, "sw_overlap": 0.0})
    assert out.array().shape == (48, 48, 32)


def test_mask_chunk_size_is_bounded(channel) -> None:
    stub = infer_pb2_grpc.InferServiceStub(channel)
    tiny = infer_pb2.InferRequest(model="segmentation", image_id="phantom_001",
                                  output=infer_pb2.OutputOptions(chunk_size=1))
    err = assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.Infer(tiny), "chunk_size")
    assert _violations(err) == ["output.chunk_size"]
    ok = infer_pb2.InferRequest(model="segmentation", image_id="phantom_001",
                                output=infer_pb2.OutputOptions(chunk_size=64 << 10, encoding=common_pb2.ENCODING_RAW))
    responses = list(stub.Infer(ok))
    chunks = [r.chunk for r in responses[1:]]
    total = responses[0].result.mask.total_size
    assert total == 48 * 48 * 32 and len(chunks) == math.ceil(total / (64 << 10))
    assert all(len(c.data) <= 64 << 10 for c in chunks)


# -- defect 10: the caller's faults are not INTERNAL ----------------------------------------------
def test_bad_devices(client: MonaiLabelClient) -> None:
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  lambda: client.infer("segmentation", image_id="phantom_001", device="tpu; rm -rf"), "device")
    assert_status(grpc.StatusCode.FAILED_PRECONDITION,
                  lambda: client.infer("segmentation", image_id="phantom_001", device="cuda:99"), "cuda")


def test_clicks_must_fit_the_model_and_the_volume(client: MonaiLabelClient) -> None:
    session = client.create_session(image_id="phantom_001")
    try:
        err = assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                            lambda: client.infer("segmentation", session_id=session.session_id, foreground=[[3, 4]]),
                            "3-D")
        assert _violations(err) == ["params.foreground[0]"]
        err = assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                            lambda: client.infer("segmentation", session_id=session.session_id,
                                                 foreground=[[10, 10, 10]], background=[[48, 0, 0]]), "outside")
        assert _violations(err) == ["params.background[0]"]
        assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                      lambda: client.infer("segmentation", image_id="phantom_001", foreground=[[10, 10, 99]]),
                      "outside")
        assert client.infer("segmentation", session_id=session.session_id, foreground=[[24, 24, 16]]).header
    finally:
        client.delete_session(session.session_id)


def test_unknown_enum_values_are_invalid(channel) -> None:
    stub = infer_pb2_grpc.InferServiceStub(channel)
    for output, field in ((infer_pb2.OutputOptions(encoding=99), "output.encoding"),
                          (infer_pb2.OutputOptions(encoding=common_pb2.ENCODING_DICOM_ZIP), "output.encoding"),
                          (infer_pb2.OutputOptions(result_extension=".exe"), "output.result_extension")):
        request = infer_pb2.InferRequest(model="segmentation", image_id="phantom_001", output=output)
        assert _violations(assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda r=request: stub.Infer(r))) == [field]
    bad_dtype = infer_pb2.InferRequest(model="segmentation", image_id="phantom_001",
                                       params=infer_pb2.InferParams(result_dtype=99))
    assert _violations(assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.Infer(bad_dtype))) \
        == ["params.result_dtype"]
    typed = infer_pb2.InferRequest(model="segmentation", image_id="phantom_001",
                                   params=infer_pb2.InferParams(result_dtype=common_pb2.DATA_TYPE_FLOAT32),
                                   output=infer_pb2.OutputOptions(encoding=common_pb2.ENCODING_RAW))
    result, data = _first_result(channel, typed)
    assert result.mask.data_type == common_pb2.DATA_TYPE_FLOAT32 and len(data) == 48 * 48 * 32 * 4


def test_garbage_session_ids_and_model_names_are_not_echoed(client: MonaiLabelClient) -> None:
    huge = "s" * 100_000
    err = assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.infer("segmentation", session_id=huge))
    assert len(err.details()) < 400
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.delete_session("../../etc"))
    err = assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.infer("m" * 100_000, image_id="phantom_001"),
                        "segmentation")
    assert len(err.details()) < 400


# -- the mask's checksum ----------------------------------------------------------------------------
def test_mask_carries_its_checksum_and_the_client_checks_it(client: MonaiLabelClient) -> None:
    for encoding in (0, common_pb2.ENCODING_RAW, common_pb2.ENCODING_NRRD):
        out = client.infer("segmentation", image_id="phantom_002", encoding=encoding)
        # the client asks for the fast checksum, which this server has
        assert out.header.xxh3_128 == xxhash.xxh3_128_hexdigest(out.data) and out.header.sha256 == ""
    good = client.infer("segmentation", image_id="phantom_002")
    sha_only = common_pb2.ContentHeader()
    sha_only.CopyFrom(good.header)
    sha_only.xxh3_128, sha_only.sha256 = "", hashlib.sha256(good.data).hexdigest()
    for header in (good.header, sha_only):  # checked by the checksum the header carries
        result = infer_pb2.InferResult(mask=header)
        chunk = common_pb2.Chunk(offset=0, data=good.data[:-1] + bytes([good.data[-1] ^ 1]))

        def corrupted(result=result, chunk=chunk) -> Iterator[infer_pb2.InferResponse]:
            yield infer_pb2.InferResponse(result=result)
            yield infer_pb2.InferResponse(chunk=chunk)

        with pytest.raises(ChecksumError):
            client._collect(corrupted())
        whole = common_pb2.Chunk(offset=0, data=good.data)
        assert client._collect(iter([infer_pb2.InferResponse(result=result),
                                     infer_pb2.InferResponse(chunk=whole)])).data == good.data


# -- session budget, on a server with tight limits ------------------------------------------------
@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("tight")
    app_dir = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=1, shape=(32, 32, 32), labeled=0)
    # one 32^3 session decodes to 128 KiB (float32): two fit the budget, a third does not
    config = ServerConfig(app_dir=app_dir, studies=str(studies), port=0, max_volume_bytes=64 * MIB,
                          max_session_bytes=300_000, max_sessions=8, session_ttl_s=5, max_session_ttl_s=5)
    running = start(config)
    yield running
    running.stop(grace=1)


def test_sessions_have_a_memory_budget_and_expire(tight: RunningServer) -> None:
    with MonaiLabelClient(tight.address, timeout=60) as client:
        image_id = next(iter(client.list_images())).image_id
        first = client.create_session(image_id=image_id, ttl_seconds=10**6)  # clamped to 5 s
        assert first.expire_time.seconds <= time.time() + 6
        client.create_session(image_id=image_id, ttl_seconds=10**6)
        err = assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: client.create_session(image_id=image_id),
                            "limit")
        assert 0 <= _retry_delay(err) <= 5
        # the expired sessions are dropped: within their ttl (and a sweep), room comes back by itself
        deadline = time.monotonic() + 30
        while True:
            try:
                third = client.create_session(image_id=image_id)
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                time.sleep(0.25)
        assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.infer("segmentation", session_id=first.session_id))
        client.delete_session(third.session_id)
