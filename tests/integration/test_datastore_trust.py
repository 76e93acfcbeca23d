"""The datastore keeps its promises under concurrent, hostile and corrupt input, over a real port.

Uploads are resources (one writer per target, resumable by id, expiring, capped, cleaned), 2D images
are decoded before they are stored, info stays bounded, bad fields are INVALID_ARGUMENT (never
INTERNAL), corrupt volumes are refused before anything is committed, and no message names a server path.
"""

from __future__ import annotations

import gzip
import io
import json
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import nibabel as nib
import numpy as np
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image

from monailabel.datasets import write_phantoms
from monailabel_api.v1 import common_pb2, datastore_pb2, datastore_pb2_grpc
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .conftest import copy_template
from .helpers import assert_status, chunked, sha256

LIMIT = 8 << 20
SHAPE = (24, 24, 12)


def _start(root: Path, **config: object) -> RunningServer:
    studies = root / "studies"
    if not (root / "app").exists():
        copy_template(root / "app")
        write_phantoms(studies, count=2, shape=SHAPE, labeled=1)
    return start(ServerConfig(app_dir=root / "app", studies=str(studies), port=0, conf={"roi_size": "16,16,16"},
                              **config))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with small limits: 8 MiB volumes, 512 KiB messages, 3 partial uploads."""
    running = _start(tmp_path_factory.mktemp("tight"), max_volume_bytes=LIMIT, max_message_bytes=512 << 10,
                     chunk_size=128 << 10, max_partial_uploads=3)
    yield running
    running.stop(grace=1)


@pytest.fixture()
def stub(tight: RunningServer) -> Iterator[datastore_pb2_grpc.DatastoreServiceStub]:
    with grpc.insecure_channel(tight.address) as ch:
        yield datastore_pb2_grpc.DatastoreServiceStub(ch)


@pytest.fixture()
def client(tight: RunningServer) -> Iterator[MonaiLabelClient]:
    with MonaiLabelClient(tight.address, timeout=60, chunk_size=64 << 10) as c:
        yield c


def _details(err: grpc.RpcError) -> dict:
    status = rpc_status.from_call(err)
    found: dict = {}
    for detail in status.details if status is not None else []:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.ResourceInfo, error_details_pb2.BadRequest):
            if detail.Is(cls.DESCRIPTOR):
                message = cls()
                detail.Unpack(message)
                found[cls.__name__] = message
    return found


def _upload(stub, image_id: str, data: bytes, overwrite: bool = False, **content_fields):
    content = common_pb2.ContentHeader(total_size=len(data), **content_fields)
    header = datastore_pb2.UploadImageHeader(image_id=image_id, content=content, overwrite=overwrite)
    return lambda: stub.UploadImage(chunked(datastore_pb2.UploadImageRequest, header, data))


def _label(stub, image_id: str, data: bytes, tag: str = "final", **content_fields):
    content = common_pb2.ContentHeader(total_size=len(data), **content_fields)
    header = datastore_pb2.SaveLabelHeader(image_id=image_id, tag=tag, content=content)
    return lambda: stub.SaveLabel(chunked(datastore_pb2.SaveLabelRequest, header, data))


def _studies_files(server: RunningServer, stem: str) -> list:
    return [p for p in Path(server.app.studies).rglob(f"{stem}*") if ".monailabel" not in p.parts]


def _staging(server: RunningServer) -> Path:
    return Path(server.app.studies) / ".monailabel" / "staging"


def _wait_active(stub, image_id: str, tag: str = "") -> datastore_pb2.GetUploadStatusResponse:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = stub.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(image_id=image_id, label_tag=tag))
        if status.active:
            return status
        time.sleep(0.01)
    raise AssertionError("the upload never became active")


def _nifti(shape=SHAPE, seed: int = 3) -> bytes:
    data = np.random.default_rng(seed).integers(0, 100, size=shape).astype(np.int16)
    return nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])).to_bytes()


def _png(size=(32, 24), seed: int = 1) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, size=(size[1], size[0], 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# -- 1. uploads are owned resources ---------------------------------------------------------------

def test_second_concurrent_upload_for_same_image_is_aborted_and_bytes_never_mix(stub, tight) -> None:
    first, second = _nifti(seed=1), _nifti(seed=2)
    assert len(first) == len(second)
    size = 16 << 10
    release = threading.Event()
    header = datastore_pb2.UploadImageHeader(
        image_id="contended", content=common_pb2.ContentHeader(
            encoding=common_pb2.ENCODING_NIFTI, total_size=len(first), sha256=sha256(first)))

    def held_stream():
        stream = chunked(datastore_pb2.UploadImageRequest, header, first, size)
        yield next(stream)
        yield next(stream)
        assert release.wait(30)
        yield from stream

    result: dict = {}
    writer = threading.Thread(target=lambda: result.update(image=stub.UploadImage(held_stream()).image))
    writer.start()
    try:
        _wait_active(stub, "contended")
        err = assert_status(grpc.StatusCode.ABORTED,
                            _upload(stub, "contended", second, encoding=common_pb2.ENCODING_NIFTI), "in progress")
        details = _details(err)
        assert details["ResourceInfo"].resource_name == "contended"
        assert details["ErrorInfo"].reason == "UPLOAD_IN_PROGRESS"
    finally:
        release.set()
        writer.join(30)
    assert result["image"].sha256 == sha256(first)
    data = b"".join(r.chunk.data for r in stub.DownloadImage(datastore_pb2.DownloadImageRequest(image_id="contended"))
                    if r.HasField("chunk"))
    assert data == first


def test_concurrent_label_uploads_conflict_per_tag_only(stub, tight) -> None:
    label = np.ones(SHAPE, np.uint8).tobytes()
    raw = dict(encoding=common_pb2.ENCODING_RAW, data_type=common_pb2.DATA_TYPE_UINT8, shape=list(SHAPE))
    release = threading.Event()
    header = datastore_pb2.SaveLabelHeader(image_id="phantom_001", tag="draft", content=common_pb2.ContentHeader(
        total_size=len(label), **raw))

    def held_stream():
        stream = chunked(datastore_pb2.SaveLabelRequest, header, label, 1024)
        yield next(stream)
        yield next(stream)
        assert release.wait(30)
        yield from stream

    result: dict = {}
    writer = threading.Thread(target=lambda: result.update(label=stub.SaveLabel(held_stream()).label))
    writer.start()
    try:
        _wait_active(stub, "phantom_001", "draft")
        err = assert_status(grpc.StatusCode.ABORTED, _label(stub, "phantom_001", label, tag="draft", **raw))
        assert _details(err)["ResourceInfo"].resource_name == "phantom_001/draft"
        other = _label(stub, "phantom_001", np.zeros(SHAPE, np.uint8).tobytes(), tag="second", **raw)().label
        assert other.tag == "second"  # another tag of the same image is another target
    finally:
        release.set()
        writer.join(30)
    assert result["label"].tag == "draft"
    tags = {lb.tag for lb in stub.GetImage(datastore_pb2.GetImageRequest(image_id="phantom_001")).image.labels}
    assert {"draft", "second"} <= tags


def test_upload_cap_and_unknown_upload_id(stub, tight) -> None:
    data = _nifti()
    content = common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data))
    kept = []
    for i in range(3):  # three partial uploads fill the cap of this server
        header = datastore_pb2.UploadImageHeader(image_id=f"capped_{i}", content=content)
        assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda header=header: stub.UploadImage(
            chunked(datastore_pb2.UploadImageRequest, header, data[:4096], 4096)), "resume from offset")
        kept.append(stub.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(image_id=f"capped_{i}")))
    assert all(s.committed_size == 4096 and len(s.upload_id) == 32 for s in kept)
    assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                  _upload(stub, "capped_3", data, encoding=common_pb2.ENCODING_NIFTI), "partial uploads")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: stub.GetUploadStatus(
        datastore_pb2.GetUploadStatusRequest(upload_id="0" * 32)))
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.GetUploadStatus(
        datastore_pb2.GetUploadStatusRequest(upload_id="not-an-id" * 2000)), "upload id")
    # resuming with another target's id, or another size, is refused; the right one finishes
    wrong = datastore_pb2.UploadImageHeader(image_id="capped_1", content=content, upload_id=kept[0].upload_id)
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  lambda: stub.UploadImage(iter([datastore_pb2.UploadImageRequest(header=wrong)])), "belongs to")
    for i, status in enumerate(kept):
        header = datastore_pb2.UploadImageHeader(image_id=f"capped_{i}", content=content, upload_id=status.upload_id)
        image = stub.UploadImage(chunked(datastore_pb2.UploadImageRequest, header, data, 4096,
                                         offsets=list(range(4096, len(data), 4096)))).image
        assert image.sha256 == sha256(data)
    assert {p.name for p in _staging(tight).iterdir()} == set()


def test_client_resumes_a_broken_upload_by_its_id(client: MonaiLabelClient, tight) -> None:
    data = _nifti(shape=(64, 64, 32), seed=9)
    header_content, _ = client._source(data, None, common_pb2.ENCODING_NIFTI)
    header = datastore_pb2.UploadImageHeader(image_id="client_resume", content=header_content)
    opened = []

    class BreaksOnce(io.BytesIO):
        """The source file fails after 100 KiB the first time it is read, as a flaky disk or network would.

        It fails once the server has committed some of the stream (on a loaded machine the server may
        not have started on it yet, and with nothing committed starting over is the right answer).
        """

        def _maybe_break(self) -> None:
            if len(opened) == 1 and self.tell() >= 100 << 10:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not client.datastore.GetUploadStatus(
                        datastore_pb2.GetUploadStatusRequest(image_id="client_resume")).committed_size:
                    time.sleep(0.01)
                raise OSError("source became unreadable")

        def read(self, n: int | None = -1) -> bytes:
            self._maybe_break()
            return super().read(n)

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
            self._maybe_break()
            return super().readinto(buffer)

    def opener():
        opened.append(True)
        return BreaksOnce(data)

    answer = client._upload(datastore_pb2.UploadImageRequest, header, opener, client._upload_image, "client_resume", "")
    assert answer.image.size == len(data)
    assert header.content.xxh3_128 and client.get_image("client_resume").sha256 == sha256(data)
    assert len(opened) == 2 and header.upload_id  # the second stream resumed the first upload by its id
    assert client.download_image("client_resume") == data


def test_partial_uploads_expire_and_startup_removes_debris(tmp_path: Path) -> None:
    root = tmp_path / "expiring"
    running = _start(root, upload_ttl_s=0)
    data = _nifti()
    try:
        with grpc.insecure_channel(running.address) as ch:
            stub = datastore_pb2_grpc.DatastoreServiceStub(ch)
            partial = datastore_pb2.UploadImageHeader(image_id="gone", content=common_pb2.ContentHeader(
                encoding=common_pb2.ENCODING_NIFTI, total_size=len(data)))
            assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.UploadImage(
                chunked(datastore_pb2.UploadImageRequest, partial, data[:4096], 4096)), "resume from offset")
            # with a TTL of 0 the partial upload has expired: it is swept on the next look, files and all
            status = stub.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(image_id="gone"))
            assert status.upload_id == "" and status.committed_size == 0
            assert list(_staging(running).iterdir()) == []
    finally:
        running.stop(grace=1)
    # debris of a crash: a staging file of no upload, and a partial upload that stays valid
    staging = root / "studies" / ".monailabel" / "staging"
    (staging / "0123abcd.part").write_bytes(b"x" * 100)
    (staging / "f00.nii.gz").write_bytes(b"y")
    running = _start(root, upload_ttl_s=3600)
    try:
        assert list(staging.iterdir()) == []
        with grpc.insecure_channel(running.address) as ch:
            stub = datastore_pb2_grpc.DatastoreServiceStub(ch)
            assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.UploadImage(
                chunked(datastore_pb2.UploadImageRequest, partial, data[:8192], 4096)), "resume from offset")
            before = stub.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(image_id="gone"))
    finally:
        running.stop(grace=1)
    # a live partial upload survives a restart and is resumed by its id
    running = _start(root, upload_ttl_s=3600)
    try:
        with grpc.insecure_channel(running.address) as ch:
            stub = datastore_pb2_grpc.DatastoreServiceStub(ch)
            after = stub.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(upload_id=before.upload_id))
            assert after.committed_size == 8192 and after.total_size == len(data)
            header = datastore_pb2.UploadImageHeader(image_id="gone", content=partial.content,
                                                     upload_id=after.upload_id)
            image = stub.UploadImage(chunked(datastore_pb2.UploadImageRequest, header, data, 4096,
                                             offsets=list(range(8192, len(data), 4096)))).image
            assert image.sha256 == sha256(data)
    finally:
        running.stop(grace=1)


# -- 2. 2D images are decoded ---------------------------------------------------------------------

def test_garbage_2d_label_never_replaces_a_final_label(stub, tight) -> None:
    png = _png()
    image = stub.UploadImage(chunked(datastore_pb2.UploadImageRequest, datastore_pb2.UploadImageHeader(
        image_id="slide", content=common_pb2.ContentHeader(
            encoding=common_pb2.ENCODING_IMAGE_2D, total_size=len(png), file_extension=".sh")), png)).image
    assert image.file_extension == ".png"  # from the decoded format, not the client's extension
    mask = _png(seed=5)
    saved = _label(stub, "slide", mask, encoding=common_pb2.ENCODING_IMAGE_2D)().label
    garbage = np.random.default_rng(0).bytes(500)
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  _label(stub, "slide", garbage, encoding=common_pb2.ENCODING_IMAGE_2D), "png, tiff or jpeg")
    label = stub.GetLabel(datastore_pb2.GetLabelRequest(image_id="slide", tag="final")).label
    assert label.sha256 == saved.sha256 == sha256(mask)
    # a mask of another size does not fit the slide
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  _label(stub, "slide", _png(size=(10, 10)), encoding=common_pb2.ENCODING_IMAGE_2D), "does not match")


def test_non_images_are_not_stored_as_2d_images(stub, tight) -> None:
    page = b"<html><script>alert(1)</script></html>" * 20
    script = b"#!/bin/sh\nrm -rf /\n" * 20
    gif = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gif, format="GIF")
    truncated = _png()[:200]
    for image_id, data, ext in (("page", page, ".html"), ("script", script, ".sh"), ("gif", gif.getvalue(), ".gif"),
                                ("cut_png", truncated, ".png")):
        assert_status(grpc.StatusCode.INVALID_ARGUMENT, _upload(
            stub, image_id, data, encoding=common_pb2.ENCODING_IMAGE_2D, file_extension=ext))
        assert _studies_files(tight, image_id) == []
        assert_status(grpc.StatusCode.NOT_FOUND,
                      lambda i=image_id: stub.GetImage(datastore_pb2.GetImageRequest(image_id=i)))


# -- 7. info is bounded, nulls remove keys, pages fit ---------------------------------------------

def _struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def test_info_is_bounded_and_null_removes_a_key(stub, tight) -> None:
    data = _nifti()
    big = _struct({"blob": "x" * (20 << 10)})
    header = datastore_pb2.UploadImageHeader(image_id="info_case", info=big, content=common_pb2.ContentHeader(
        encoding=common_pb2.ENCODING_NIFTI, total_size=len(data)))
    assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                  lambda: stub.UploadImage(chunked(datastore_pb2.UploadImageRequest, header, data)), "info")
    assert _studies_files(tight, "info_case") == []
    _upload(stub, "info_case", data, encoding=common_pb2.ENCODING_NIFTI)()
    update = datastore_pb2.UpdateImageInfoRequest
    assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                  lambda: stub.UpdateImageInfo(update(image_id="info_case", info=big)))
    # many small updates may not grow the stored info past the limit either
    for i in range(3):
        stub.UpdateImageInfo(update(image_id="info_case", info=_struct({f"k{i}": "y" * (4 << 10)})))
    assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: stub.UpdateImageInfo(
        update(image_id="info_case", info=_struct({"k9": "y" * (6 << 10)}))), "merged")
    removed = stub.UpdateImageInfo(update(image_id="info_case", info=_struct({"k0": None, "k1": None}))).image
    assert "k0" not in removed.info and "k1" not in removed.info and "k2" in removed.info
    deep = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.UpdateImageInfo(
        update(image_id="info_case", info=_struct(deep))), "deeper")


def test_list_pages_stay_under_the_message_limit(stub, client: MonaiLabelClient, tight) -> None:
    data = _nifti(shape=(4, 4, 4))
    ids = [f"paged_{i:02d}" for i in range(40)]
    for image_id in ids:  # 40 images of 12 KiB info each: about 480 KiB, over this server's 512 KiB message limit
        client.upload_image(image_id, data, encoding=common_pb2.ENCODING_NIFTI, info={"notes": "n" * (12 << 10)})
    response = stub.ListImages(datastore_pb2.ListImagesRequest(page_size=1000))
    assert 0 < len(response.images) < response.total_size and response.next_page_token
    assert response.ByteSize() < 512 << 10
    listed = [i.image_id for i in client.list_images(page_size=1000)]
    assert set(ids) <= set(listed) and len(listed) == len(set(listed)) == response.total_size


# -- 10. the caller's faults are INVALID_ARGUMENT, never INTERNAL ---------------------------------

def test_bad_fields_are_invalid_argument(stub, tight) -> None:
    data = np.zeros((4, 4, 4), np.int16).tobytes()
    raw = dict(encoding=common_pb2.ENCODING_RAW, data_type=common_pb2.DATA_TYPE_INT16, shape=[4, 4, 4])
    cases = {
        "unknown encoding": _upload(stub, "bad", data, encoding=99),
        "NaN direction": _upload(stub, "bad", data, **raw, geometry=common_pb2.Geometry(
            direction=[float("nan")] + [0.0] * 8)),
        "singular direction": _upload(stub, "bad", data, **raw, geometry=common_pb2.Geometry(direction=[0.0] * 9)),
        "inf origin": _upload(stub, "bad", data, **raw, geometry=common_pb2.Geometry(origin=[0, float("inf"), 0])),
        "NaN spacing": _upload(stub, "bad", data, **raw, geometry=common_pb2.Geometry(spacing=[1, float("nan"), 1])),
        "unknown filter": lambda: stub.ListImages(datastore_pb2.ListImagesRequest(filter=7)),
        "garbage token": lambda: stub.ListImages(datastore_pb2.ListImagesRequest(page_token="!!not base64!!")),
        "huge token": lambda: stub.ListImages(datastore_pb2.ListImagesRequest(page_token="QUFB" * 5000)),
        "long id": lambda: stub.GetImage(datastore_pb2.GetImageRequest(image_id="a" * 200)),
        "long tag": _label(stub, "phantom_000", data, tag="t" * 255, **raw),
        "negative chunk_size": lambda: stub.DownloadImage(
            datastore_pb2.DownloadImageRequest(image_id="phantom_000", chunk_size=-5)),
        "negative offset": lambda: stub.DownloadImage(
            datastore_pb2.DownloadImageRequest(image_id="phantom_000", offset=-1)),
        "negative page size": lambda: stub.ListImages(datastore_pb2.ListImagesRequest(page_size=-1)),
    }
    for name, call in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            result = call()
            if hasattr(result, "__iter__"):
                list(result)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, info.value.code(), info.value.details())
    for shape in ([1024, 1024, 1024], [1 << 40, 1 << 40, 1 << 40]):  # over the limit; a product past int64
        assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED, _upload(
            stub, "bad", data, encoding=common_pb2.ENCODING_RAW, data_type=common_pb2.DATA_TYPE_INT16,
            shape=shape), "limit")
    assert_status(grpc.StatusCode.OUT_OF_RANGE, lambda: stub.DownloadImage(
        datastore_pb2.DownloadImageRequest(image_id="phantom_000", offset=1 << 40)))


def test_huge_ids_are_not_echoed(stub) -> None:
    huge = "x" * (20 << 10)
    for call in (lambda: stub.GetImage(datastore_pb2.GetImageRequest(image_id=huge)),
                 _upload(stub, huge, b"0" * 10, encoding=common_pb2.ENCODING_NIFTI),
                 _label(stub, "phantom_000", b"0" * 10, tag=huge, encoding=common_pb2.ENCODING_NIFTI)):
        err = assert_status(grpc.StatusCode.INVALID_ARGUMENT, call, "not valid")
        assert len(err.details()) < 400
        trailer = sum(len(v) for _, v in err.trailing_metadata() or ())
        assert trailer < 4096


# -- 11. corrupt volumes are refused before anything is committed ---------------------------------

def _patched_nifti(**fields) -> bytes:
    good = _nifti()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(good))
    for key, value in fields.items():
        if isinstance(value, dict):
            for index, v in value.items():
                header[key][index] = v
        else:
            header[key] = value
    return header.binaryblock + good[348:]


def test_corrupt_nifti_headers_are_invalid(stub, tight) -> None:
    nan = float("nan")
    cases = {
        "dim0_zero": (_patched_nifti(dim={0: 0}), "dimensions"),
        "negative_dim": (_patched_nifti(dim={2: -4}), "dimensions"),
        "zero_dim": (_patched_nifti(dim={3: 0}), "dimensions"),
        "huge_offset": (_patched_nifti(vox_offset=1e15), "vox_offset"),
        "nan_offset": (_patched_nifti(vox_offset=nan), "nifti"),
        "nan_pixdim": (_patched_nifti(pixdim={1: nan}), "pixdim"),
        "nan_sform": (_patched_nifti(srow_x={0: nan}), "voxel-to-world"),
        "nan_qform": (_patched_nifti(quatern_b=nan, qform_code=1), "voxel-to-world"),
        "one_d": (_patched_nifti(dim={0: 1}), "dimensions"),
        "seven_d": (_patched_nifti(dim={0: 7, 4: 1, 5: 1, 6: 1, 7: 1}), "dimensions"),
    }
    for image_id, (data, why) in cases.items():
        assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                      _upload(stub, image_id, data, encoding=common_pb2.ENCODING_NIFTI), why)
        assert _studies_files(tight, image_id) == []


def _nrrd(fields: str, payload: bytes) -> bytes:
    return b"NRRD0004\n" + fields.encode() + b"\n" + payload


def test_corrupt_and_hostile_nrrd_is_invalid(stub, tight) -> None:
    voxels = np.zeros(SHAPE, np.uint8).tobytes()
    base = f"type: uint8\ndimension: 3\nsizes: {SHAPE[0]} {SHAPE[1]} {SHAPE[2]}\nspace: left-posterior-superior\n"
    nan_dirs = base + "space directions: (nan,0,0) (0,1,0) (0,0,1)\nencoding: raw\n"
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  _upload(stub, "nrrd_nan", _nrrd(nan_dirs, voxels), encoding=common_pb2.ENCODING_NRRD), "nan")
    detached = base + "encoding: raw\ndata file: /etc/passwd\n"
    err = assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                        _upload(stub, "nrrd_detached", _nrrd(detached, b""), encoding=common_pb2.ENCODING_NRRD),
                        "detached")
    assert "/" not in err.details() and "passwd" not in err.details()
    bomb = gzip.compress(b"\0" * (LIMIT + (4 << 20)), compresslevel=1)
    gz = base + "encoding: gzip\n"
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  _upload(stub, "nrrd_bomb", _nrrd(gz, bomb), encoding=common_pb2.ENCODING_NRRD), "limit")
    for image_id in ("nrrd_nan", "nrrd_detached", "nrrd_bomb"):
        assert _studies_files(tight, image_id) == []


def test_gzip_bomb_nifti_is_refused(stub, tight) -> None:
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(_nifti()))
    bomb = gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * (LIMIT + (4 << 20)), compresslevel=1)
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  _upload(stub, "nii_bomb", bomb, encoding=common_pb2.ENCODING_NIFTI_GZ), "limit")
    assert _studies_files(tight, "nii_bomb") == []


def test_labels_are_checked_against_nrrd_images_and_overwrites_keep_labels_valid(stub, tight) -> None:
    voxels = np.arange(np.prod(SHAPE), dtype=np.int16).tobytes()
    fields = (f"type: int16\ndimension: 3\nsizes: {SHAPE[0]} {SHAPE[1]} {SHAPE[2]}\nendian: little\n"
              "encoding: raw\nspace directions: (1,0,0) (0,1,0) (0,0,2)\nspace: left-posterior-superior\n")
    stub.UploadImage(chunked(datastore_pb2.UploadImageRequest, datastore_pb2.UploadImageHeader(
        image_id="nrrd_img", content=common_pb2.ContentHeader(
            encoding=common_pb2.ENCODING_NRRD, total_size=len(_nrrd(fields, voxels)))), _nrrd(fields, voxels)))
    wrong = np.zeros((4, 4, 4), np.uint8).tobytes()
    raw = dict(encoding=common_pb2.ENCODING_RAW, data_type=common_pb2.DATA_TYPE_UINT8)
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, _label(stub, "nrrd_img", wrong, shape=[4, 4, 4], **raw),
                  "does not match")
    right = np.ones(SHAPE, np.uint8).tobytes()
    _label(stub, "nrrd_img", right, shape=list(SHAPE), **raw)()
    # replacing the image with one of another shape would orphan its label: refused, the old image stays
    before = stub.GetImage(datastore_pb2.GetImageRequest(image_id="nrrd_img")).image
    err = assert_status(grpc.StatusCode.FAILED_PRECONDITION,
                        _upload(stub, "nrrd_img", _nifti(shape=(8, 8, 8)), overwrite=True,
                                encoding=common_pb2.ENCODING_NIFTI), "delete its labels")
    assert _details(err)["ErrorInfo"].reason == "LABELS_WOULD_NOT_MATCH"
    after = stub.GetImage(datastore_pb2.GetImageRequest(image_id="nrrd_img")).image
    assert after.sha256 == before.sha256 and [lb.tag for lb in after.labels] == ["final"]
    # an image of the same shape may replace it
    same = _nifti(shape=SHAPE, seed=8)
    replaced = _upload(stub, "nrrd_img", same, overwrite=True, encoding=common_pb2.ENCODING_NIFTI)().image
    assert replaced.sha256 == sha256(same) and replaced.file_extension == ".nii"


def test_no_message_names_a_server_path(stub, tight) -> None:
    studies = str(Path(tight.app.studies))
    calls = [
        _upload(stub, "p1", b"junk" * 100, encoding=common_pb2.ENCODING_NIFTI),
        _upload(stub, "p2", b"junk" * 100, encoding=common_pb2.ENCODING_NIFTI_GZ),
        _upload(stub, "p3", b"NRRD0004\ntype: int8\n\n", encoding=common_pb2.ENCODING_NRRD),
        _upload(stub, "p4", b"junk" * 100, encoding=common_pb2.ENCODING_IMAGE_2D),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        text = info.value.details() + json.dumps([str(v) for _, v in info.value.trailing_metadata() or ()])
        assert studies not in text and "/tmp" not in text and "staging" not in text, text
