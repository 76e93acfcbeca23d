"""DatastoreService over a real channel: round trips, paging, labels, resume, and every bad input."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import grpc
import nibabel as nib
import numpy as np
import pytest

from monailabel_api.v1 import common_pb2, datastore_pb2, datastore_pb2_grpc
from monailabel_client import MonaiLabelClient
from monailabel_server.server import RunningServer

from .helpers import assert_status, chunked, error_info, sha256, write_volume


def _stub(channel: grpc.Channel) -> datastore_pb2_grpc.DatastoreServiceStub:
    return datastore_pb2_grpc.DatastoreServiceStub(channel)


def _leftovers(server: RunningServer, image_id: str) -> list:
    studies = Path(server.app.studies)
    return [p for p in studies.rglob(f"{image_id}*") if ".monailabel" not in p.parts]


def test_upload_download_round_trip_nifti(client: MonaiLabelClient, tmp_path: Path) -> None:
    src = tmp_path / "rt.nii.gz"
    image, _, affine = write_volume(src)
    record = client.upload_image("rt_nifti", src, info={"patient": "p1"})
    assert record.image_id == "rt_nifti"
    # the client announced the file's XXH3-128, so the answer leaves the SHA-256 to the datastore, which
    # computes it after answering; reading the image shows it
    assert record.sha256 == ""
    assert client.get_image("rt_nifti").sha256 == sha256(src.read_bytes())
    assert record.size == src.stat().st_size
    assert record.info["patient"] == "p1"
    data = client.download_image("rt_nifti")
    assert data == src.read_bytes()
    out = client.download_image("rt_nifti", tmp_path / "out.nii.gz")
    loaded = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), image)
    np.testing.assert_allclose(loaded.affine, affine)


def test_upload_raw_array_keeps_voxels_and_geometry(client: MonaiLabelClient, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(-1000, 2000, size=(30, 20, 10)).astype(np.int16)
    affine = np.array([[0.8, 0, 0, -10], [0, 0.8, 0, 5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    record = client.upload_array("rt_raw", array, affine)
    assert record.file_extension == ".nii"
    path = client.download_image("rt_raw", tmp_path / "raw.nii")
    img = nib.load(str(path))
    np.testing.assert_array_equal(np.asarray(img.dataobj), array)
    np.testing.assert_allclose(img.affine, affine)


def test_download_header_describes_volume(channel: grpc.Channel, client: MonaiLabelClient, tmp_path: Path) -> None:
    src = tmp_path / "hdr.nii"
    image, _, affine = write_volume(src, shape=(16, 12, 8))
    client.upload_image("hdr", src)
    responses = list(_stub(channel).DownloadImage(datastore_pb2.DownloadImageRequest(image_id="hdr", chunk_size=1024)))
    header = responses[0].header
    assert header.encoding == common_pb2.ENCODING_NIFTI
    assert list(header.shape) == [16, 12, 8]
    assert header.data_type == common_pb2.DATA_TYPE_INT16
    np.testing.assert_allclose(header.geometry.spacing, np.diag(affine)[:3])
    chunks = [r.chunk for r in responses[1:]]
    assert all(len(c.data) <= 1024 for c in chunks) and len(chunks) > 1
    assert b"".join(c.data for c in chunks) == src.read_bytes()
    # resume a download from an offset
    tail = list(_stub(channel).DownloadImage(datastore_pb2.DownloadImageRequest(image_id="hdr", offset=1000)))
    assert b"".join(r.chunk.data for r in tail[1:]) == src.read_bytes()[1000:]


def test_list_paging_and_filters(client: MonaiLabelClient) -> None:
    everything = list(client.list_images(page_size=2))
    ids = [i.image_id for i in everything]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert {"phantom_000", "phantom_001", "phantom_002"} <= set(ids)
    labeled = {i.image_id for i in client.list_images(filter="labeled", page_size=1)}
    unlabeled = {i.image_id for i in client.list_images(filter="unlabeled")}
    assert "phantom_000" in labeled and "phantom_001" in unlabeled
    assert labeled.isdisjoint(unlabeled) and labeled | unlabeled == set(ids)


def test_save_label_status_and_delete(client: MonaiLabelClient, tmp_path: Path) -> None:
    src = tmp_path / "lab.nii.gz"
    _, label, affine = write_volume(src, shape=(20, 20, 10))
    client.upload_image("lab_case", src)
    before = client.status()
    saved = client.save_label("lab_case", label, affine=affine, tag="final", info={"user": "ann"})
    assert saved.tag == "final" and saved.info["user"] == "ann"
    after = client.status()
    assert after.completed == before.completed + 1
    assert after.label_tags["final"] == before.label_tags["final"] + 1
    got = nib.load(str(client.download_label("lab_case", tmp_path / "l.nii", tag="final")))
    np.testing.assert_array_equal(np.asarray(got.dataobj), label)
    assert "lab_case" in {i.image_id for i in client.list_images(filter="labeled")}
    client.update_image_info("lab_case", {"reviewed": True})
    assert client.get_image("lab_case").info["reviewed"] is True
    client.delete_label("lab_case", "final")
    assert client.status().completed == before.completed
    client.delete_image("lab_case")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.get_image("lab_case"))


def test_interrupted_upload_resumes_from_committed_offset(channel: grpc.Channel, tmp_path: Path,
                                                          client: MonaiLabelClient) -> None:
    src = tmp_path / "big.nii"
    write_volume(src, shape=(64, 64, 32))
    data = src.read_bytes()
    content = common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data), sha256=sha256(data))
    header = datastore_pb2.UploadImageHeader(image_id="resumed", content=content)
    stub = _stub(channel)
    size = 32 << 10

    def breaking_stream():
        stream = chunked(datastore_pb2.UploadImageRequest, header, data, size)
        for _ in range(5):  # the header and four chunks
            yield next(stream)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the server committed them, then break
            got = stub.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(image_id="resumed"))
            if got.committed_size == 4 * size:
                break
            time.sleep(0.01)
        raise RuntimeError("client broke the stream")

    with pytest.raises(grpc.RpcError) as err:
        stub.UploadImage(breaking_stream())
    assert err.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
    status = wait_idle_upload(stub, "resumed")
    assert status.total_size == len(data)
    assert status.committed_size == 4 * size
    assert len(status.upload_id) == 32 and status.expire_time.seconds > time.time()
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.get_image("resumed"))
    start = status.committed_size
    offsets = list(range(start, len(data), size))
    # a stream without the upload id is a new upload, never a resume of the partial one
    fresh = assert_status(grpc.StatusCode.OUT_OF_RANGE, lambda: stub.UploadImage(
        chunked(datastore_pb2.UploadImageRequest, header, data, size, offsets=offsets)), "offset")
    info = error_info(fresh)
    assert info.reason == "UPLOAD_OFFSET_MISMATCH" and info.metadata["committed_size"] == "0"
    # that new upload replaced the partial one: resume it by the id its error names, from its committed size
    status = stub.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(upload_id=info.metadata["upload_id"]))
    assert status.committed_size == 0 and status.upload_id == info.metadata["upload_id"]
    resumed = datastore_pb2.UploadImageHeader(image_id="resumed", content=content, upload_id=status.upload_id)
    record = stub.UploadImage(chunked(datastore_pb2.UploadImageRequest, resumed, data, size)).image
    assert record.sha256 == sha256(data)
    assert client.download_image("resumed") == data
    # the finished upload is gone
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: stub.GetUploadStatus(
        datastore_pb2.GetUploadStatusRequest(upload_id=status.upload_id)))


def test_resume_by_upload_id_continues_the_partial_upload(channel: grpc.Channel, tmp_path: Path,
                                                          client: MonaiLabelClient) -> None:
    src = tmp_path / "r2.nii"
    write_volume(src, shape=(48, 48, 24))
    data = src.read_bytes()
    content = common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data), sha256=sha256(data))
    header = datastore_pb2.UploadImageHeader(image_id="resumed_by_id", content=content)
    stub = _stub(channel)
    size = 16 << 10
    # the stream stops after three chunks (the server keeps them: the total is not reached)
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.UploadImage(
        chunked(datastore_pb2.UploadImageRequest, header, data[: 3 * size], size)), "resume from offset")
    status = wait_idle_upload(stub, "resumed_by_id")
    assert status.committed_size == 3 * size
    resumed = datastore_pb2.UploadImageHeader(image_id="resumed_by_id", content=content, upload_id=status.upload_id)
    record = stub.UploadImage(chunked(datastore_pb2.UploadImageRequest, resumed, data, size,
                                      offsets=list(range(3 * size, len(data), size)))).image
    assert record.sha256 == sha256(data) and client.download_image("resumed_by_id") == data


def wait_idle_upload(stub, image_id: str, tag: str = ""):
    """The target's partial upload, once the server has seen its stream end (bounded wait)."""
    deadline = time.monotonic() + 30
    while True:
        status = stub.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(image_id=image_id, label_tag=tag))
        if status.upload_id and not status.active or time.monotonic() > deadline:
            return status
        time.sleep(0.01)


# -- bad input ------------------------------------------------------------------------------------

def _upload(stub, image_id: str, data: bytes, **content_fields):
    content = common_pb2.ContentHeader(total_size=len(data), **content_fields)
    header = datastore_pb2.UploadImageHeader(image_id=image_id, content=content)
    return lambda: stub.UploadImage(chunked(datastore_pb2.UploadImageRequest, header, data))


def test_checksum_mismatch_is_invalid_and_leaves_nothing(channel, server, client, tmp_path: Path) -> None:
    src = tmp_path / "c.nii.gz"
    write_volume(src)
    data = src.read_bytes()
    call = _upload(_stub(channel), "bad_sum", data, encoding=common_pb2.ENCODING_NIFTI_GZ, sha256="0" * 64)
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, call, "checksum mismatch")
    assert _leftovers(server, "bad_sum") == []
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.get_image("bad_sum"))
    status = _stub(channel).GetUploadStatus(datastore_pb2.GetUploadStatusRequest(image_id="bad_sum"))
    assert status.committed_size == 0 and status.upload_id == ""


def test_truncated_and_corrupt_volumes_are_invalid(channel, server, client, tmp_path: Path) -> None:
    src = tmp_path / "t.nii.gz"
    write_volume(src)
    data = src.read_bytes()
    cut = data[: len(data) // 2]
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  _upload(_stub(channel), "trunc_gz", cut, encoding=common_pb2.ENCODING_NIFTI_GZ, sha256=sha256(cut)),
                  "truncated")
    raw = gzip.decompress(data)[: 352 + 100]
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  _upload(_stub(channel), "trunc_nii", raw, encoding=common_pb2.ENCODING_NIFTI), "truncated")
    junk = b"this is not a medical image" * 100
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  _upload(_stub(channel), "junk", junk, encoding=common_pb2.ENCODING_NIFTI), "nifti")
    for image_id in ("trunc_gz", "trunc_nii", "junk"):
        assert _leftovers(server, image_id) == []
        assert_status(grpc.StatusCode.NOT_FOUND, lambda image_id=image_id: client.get_image(image_id))


def test_raw_shape_dtype_must_match_byte_count(channel) -> None:
    data = np.zeros((10, 10, 10), np.int16).tobytes()
    call = _upload(_stub(channel), "raw_bad", data, encoding=common_pb2.ENCODING_RAW,
                   data_type=common_pb2.DATA_TYPE_INT16, shape=[10, 10, 11])
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, call, "shape")
    call = _upload(_stub(channel), "raw_bad", data, encoding=common_pb2.ENCODING_RAW, shape=[10, 10, 10])
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, call, "data_type")


def test_ids_with_path_separators_are_invalid(channel, server) -> None:
    data = b"x" * 10
    for bad in ("../evil", "a/b", "..", "a\\b", ".hidden", ""):
        assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                      _upload(_stub(channel), bad, data, encoding=common_pb2.ENCODING_NIFTI), "not valid")
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  lambda: _stub(channel).GetImage(datastore_pb2.GetImageRequest(image_id="../../etc/passwd")))
    assert not (Path(server.app.studies).parent / "evil.nii").exists()


def test_gap_in_offsets_is_out_of_range(channel, tmp_path: Path) -> None:
    src = tmp_path / "g.nii"
    write_volume(src)
    data = src.read_bytes()
    content = common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data))
    header = datastore_pb2.UploadImageHeader(image_id="gappy", content=content)
    size = 16 << 10
    offsets = [0, size, 3 * size]
    assert_status(grpc.StatusCode.OUT_OF_RANGE,
                  lambda: _stub(channel).UploadImage(
                      chunked(datastore_pb2.UploadImageRequest, header, data, size, offsets=offsets)),
                  "gap")


def test_volume_over_limit_is_resource_exhausted(channel, server) -> None:
    content = common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI,
                                       total_size=server_limit(server) + 1)
    header = datastore_pb2.UploadImageHeader(image_id="huge", content=content)
    assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                  lambda: _stub(channel).UploadImage(iter([datastore_pb2.UploadImageRequest(header=header)])),
                  "limit")


def server_limit(server: RunningServer) -> int:
    assert server.config is not None
    return server.config.max_volume_bytes


def test_unknown_image_and_label_are_not_found(channel, client) -> None:
    stub = _stub(channel)
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: stub.GetImage(datastore_pb2.GetImageRequest(image_id="nope")))
    assert_status(grpc.StatusCode.NOT_FOUND,
                  lambda: stub.DownloadImage(datastore_pb2.DownloadImageRequest(image_id="nope")))
    assert_status(grpc.StatusCode.NOT_FOUND,
                  lambda: stub.GetLabel(datastore_pb2.GetLabelRequest(image_id="phantom_001", tag="final")))
    assert_status(grpc.StatusCode.NOT_FOUND,
                  lambda: stub.DownloadLabel(datastore_pb2.DownloadLabelRequest(image_id="phantom_001")))
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: stub.DeleteImage(datastore_pb2.DeleteImageRequest(image_id="x")))
    # the server is still up and answering
    assert client.status().total >= 3


def test_label_for_unknown_image_and_mismatched_shape(client: MonaiLabelClient) -> None:
    assert_status(grpc.StatusCode.NOT_FOUND,
                  lambda: client.save_label("no_such_image", np.zeros((4, 4, 4), np.uint8), affine=np.eye(4)))
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  lambda: client.save_label("phantom_001", np.zeros((4, 4, 4), np.uint8), affine=np.eye(4)),
                  "does not match")
    assert client.get_image("phantom_001").labels == []


def test_existing_id_needs_overwrite(client: MonaiLabelClient, tmp_path: Path) -> None:
    src = tmp_path / "o.nii.gz"
    write_volume(src, shape=(8, 8, 8))
    client.upload_image("dupe", src)
    assert_status(grpc.StatusCode.ALREADY_EXISTS, lambda: client.upload_image("dupe", src), "overwrite")
    write_volume(src, shape=(9, 9, 9), seed=2)
    client.upload_image("dupe", src, overwrite=True)
    assert client.get_image("dupe").sha256 == sha256(src.read_bytes())
