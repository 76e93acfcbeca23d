"""Checksums on a real server: XXH3-128 announced and verified beside SHA-256, the SHA-256 of an image
computed after the answer, downloads and masks that announce both, and the client choosing by what the
server lists."""

from __future__ import annotations

import io
import time
from pathlib import Path

import grpc
import pytest
import xxhash

from monailabel_api.v1 import app_pb2, app_pb2_grpc, common_pb2, datastore_pb2, infer_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.server import RunningServer

from .helpers import assert_status, chunked, sha256, write_volume
from .hostile import index_rows, staging_files, wait_until


def _nifti(tmp: Path, name: str, seed: int) -> bytes:
    path = tmp / name
    write_volume(path, shape=(24, 20, 12), seed=seed)
    return path.read_bytes()


def _xxh3(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _upload(client: MonaiLabelClient, image_id: str, data: bytes, **checksums: str) -> datastore_pb2.Image:
    content = common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data), **checksums)
    header = datastore_pb2.UploadImageHeader(image_id=image_id, content=content)
    answer: datastore_pb2.UploadImageResponse = client.datastore.UploadImage(
        chunked(datastore_pb2.UploadImageRequest, header, data, size=4096))
    return answer.image


def _stored_sha256(server: RunningServer, image_id: str) -> object:
    rows = {r[0]: r for r in index_rows(Path(server.app.studies))["images"]}
    return rows[image_id][5] if image_id in rows else "missing"


def test_the_server_lists_both_digests(channel: grpc.Channel) -> None:
    limits = app_pb2_grpc.AppServiceStub(channel).GetAppInfo(app_pb2.GetAppInfoRequest()).limits
    assert list(limits.digests) == ["sha256", "xxh3_128"]


def test_an_upload_checked_by_xxh3_alone_gets_its_sha256_after_the_answer(
    client: MonaiLabelClient, server: RunningServer, tmp_path: Path
) -> None:
    data = _nifti(tmp_path, "a.nii", 1)
    image = _upload(client, "dg_xxh3", data, xxh3_128=_xxh3(data))
    assert image.sha256 == ""  # not computed before answering
    assert image.size == len(data)
    # computed by the server on its own (no read asks for it): the index row gets the file's SHA-256
    deadline = time.monotonic() + 30
    while _stored_sha256(server, "dg_xxh3") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stored_sha256(server, "dg_xxh3") == sha256(data)
    assert client.get_image("dg_xxh3").sha256 == sha256(data)


def test_an_upload_that_announces_sha256_is_checked_and_answered_with_it(client: MonaiLabelClient,
                                                                         tmp_path: Path) -> None:
    data = _nifti(tmp_path, "b.nii", 2)
    assert _upload(client, "dg_both", data, sha256=sha256(data), xxh3_128=_xxh3(data)).sha256 == sha256(data)
    assert _upload(client, "dg_none", data).sha256 == sha256(data)  # no checksum: stored with the computed one


def test_a_wrong_xxh3_is_refused_and_nothing_is_stored(client: MonaiLabelClient, server: RunningServer,
                                                      tmp_path: Path) -> None:
    data = _nifti(tmp_path, "c.nii", 3)
    before = staging_files(Path(server.app.studies))
    for name, checksums in {
        "xxh3 alone": {"xxh3_128": _xxh3(b"other")},
        "xxh3 wrong, sha256 right": {"xxh3_128": _xxh3(b"other"), "sha256": sha256(data)},
        "xxh3 right, sha256 wrong": {"xxh3_128": _xxh3(data), "sha256": sha256(b"other")},
    }.items():
        err = assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda c=checksums: _upload(client, "dg_bad", data, **c),
                            "checksum mismatch")
        assert ("xxh3_128" if "xxh3 wrong" in name or name == "xxh3 alone" else "sha256") in (err.details() or "")
        assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.get_image("dg_bad"))
    assert staging_files(Path(server.app.studies)) == before


def test_a_malformed_xxh3_is_refused_before_any_byte_is_read(client: MonaiLabelClient, tmp_path: Path) -> None:
    data = _nifti(tmp_path, "d.nii", 4)
    for bad in ("AB" * 16, "ab" * 15, "ab" * 32, "zz" * 16):
        assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda b=bad: _upload(client, "dg_malformed", data,
                                                                            xxh3_128=b), "32 lower-case hex")


def test_a_resume_must_announce_the_same_xxh3(client: MonaiLabelClient, tmp_path: Path) -> None:
    data = _nifti(tmp_path, "e.nii", 5)
    content = common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data),
                                       xxh3_128=_xxh3(data))
    header = datastore_pb2.UploadImageHeader(image_id="dg_resume", content=content)
    stub = client.datastore

    def breaking_stream():  # the header and two chunks, then a break once the server committed them
        stream = chunked(datastore_pb2.UploadImageRequest, header, data, size=4096)
        for _ in range(3):
            yield next(stream)
        wait_until("two chunks committed", lambda: stub.GetUploadStatus(
            datastore_pb2.GetUploadStatusRequest(image_id="dg_resume")).committed_size == 8192, 30)
        raise RuntimeError("client broke the stream")

    with pytest.raises(grpc.RpcError):
        stub.UploadImage(breaking_stream())
    status = wait_until("the broken stream's upload to settle", lambda: next(
        (s for s in [stub.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(image_id="dg_resume"))]
         if s.upload_id and not s.active), None), 30)
    assert status.committed_size == 8192
    other = datastore_pb2.UploadImageHeader(image_id="dg_resume", upload_id=status.upload_id)
    other.content.CopyFrom(content)
    other.content.xxh3_128 = _xxh3(b"other")
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.datastore.UploadImage(
        chunked(datastore_pb2.UploadImageRequest, other, data, offsets=[])), "checksum")
    header.upload_id = status.upload_id
    offsets = list(range(status.committed_size, len(data), 4096))
    answer = client.datastore.UploadImage(chunked(datastore_pb2.UploadImageRequest, header, data, size=4096,
                                                  offsets=offsets))
    assert answer.image.size == len(data)
    assert client.download_image("dg_resume") == data


def test_downloads_and_masks_announce_both_and_the_client_checks_by_xxh3(client: MonaiLabelClient,
                                                                        tmp_path: Path) -> None:
    src = tmp_path / "f.nii.gz"
    write_volume(src, shape=(32, 32, 16), seed=6)
    data = src.read_bytes()
    client.upload_image("dg_down", src)
    assert client.upload_digest() == "xxh3_128"
    headers = [m.header for m in client._download_image(datastore_pb2.DownloadImageRequest(image_id="dg_down"))
               if m.HasField("header")]
    assert headers[0].xxh3_128 == _xxh3(data) and headers[0].sha256 == sha256(data)
    assert client.download_image("dg_down") == data
    assert client.download_image("dg_down", tmp_path / "copy.nii.gz").read_bytes() == data
    # the client asks masks for the fast checksum alone; a request that names none gets both
    out = client.infer("segmentation", image_id="dg_down")
    assert out.header is not None and out.header.xxh3_128 == _xxh3(out.data) and out.header.sha256 == ""
    request = infer_pb2.InferRequest(model="segmentation", image_id="dg_down")
    result = next(m for m in client._infer(request) if m.HasField("result")).result
    assert result.mask.xxh3_128 and result.mask.sha256 and len(result.mask.sha256) == 64
    request.output.checksum = "sha256"
    result = next(m for m in client._infer(request) if m.HasField("result")).result
    assert result.mask.sha256 and not result.mask.xxh3_128
    request.output.checksum = "md5"
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client._infer(request), "output.checksum")


def _trailer_stream(image_id: str, data: bytes, trailer: object, upload_id: str = "", start: int = 0,
                    announce: str = "xxh3_128") -> list:
    content = common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data),
                                       trailer_checksum=announce)
    header = datastore_pb2.UploadImageHeader(image_id=image_id, content=content, upload_id=upload_id)
    messages = list(chunked(datastore_pb2.UploadImageRequest, header, data, size=4096,
                            offsets=list(range(start, len(data), 4096))))
    if trailer is not None:
        messages.append(datastore_pb2.UploadImageRequest(trailer=trailer))
    return messages


def test_a_trailer_checks_the_stream_after_its_last_chunk(client: MonaiLabelClient, server: RunningServer,
                                                          tmp_path: Path) -> None:
    data = _nifti(tmp_path, "t.nii", 8)
    right = common_pb2.ContentTrailer(xxh3_128=_xxh3(data))
    answer = client.datastore.UploadImage(iter(_trailer_stream("dg_trailer", data, right)))
    assert answer.image.sha256 == "" and client.get_image("dg_trailer").sha256 == sha256(data)
    assert client.download_image("dg_trailer") == data
    # a trailer with SHA-256: checked, and the answer has it
    with_sha = common_pb2.ContentTrailer(sha256=sha256(data))
    answer = client.datastore.UploadImage(iter(_trailer_stream("dg_trailer_sha", data, with_sha, announce="sha256")))
    assert answer.image.sha256 == sha256(data)
    before = staging_files(Path(server.app.studies))
    for bad, reason in (
        (common_pb2.ContentTrailer(xxh3_128=_xxh3(b"other")), "checksum mismatch"),
        (common_pb2.ContentTrailer(xxh3_128="AB" * 16), "32 lower-case hex"),
        (common_pb2.ContentTrailer(xxh3_128=_xxh3(data), sha256=sha256(data)), "trailer.sha256 is set"),
    ):
        assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda b=bad: client.datastore.UploadImage(
            iter(_trailer_stream("dg_trailer_bad", data, b))), reason)
        assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.get_image("dg_trailer_bad"))
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.datastore.UploadImage(
        iter(_trailer_stream("dg_trailer_bad", data, right, announce=""))), "announced none")
    late = _trailer_stream("dg_trailer_bad", data, right) + [
        datastore_pb2.UploadImageRequest(chunk=common_pb2.Chunk(offset=len(data), data=b"x"))]
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.datastore.UploadImage(iter(late)),
                  "nothing may follow the trailer")
    assert staging_files(Path(server.app.studies)) == before


def test_a_stream_without_its_trailer_keeps_its_bytes_for_the_trailer_to_come(client: MonaiLabelClient,
                                                                              tmp_path: Path) -> None:
    data = _nifti(tmp_path, "u.nii", 9)
    err = assert_status(grpc.StatusCode.OUT_OF_RANGE, lambda: client.datastore.UploadImage(
        iter(_trailer_stream("dg_no_trailer", data, None))), "without the trailer")
    assert err.details()
    status = client.datastore.GetUploadStatus(datastore_pb2.GetUploadStatusRequest(image_id="dg_no_trailer"))
    assert status.committed_size == len(data) and status.upload_id
    # the resume sends no bytes, only the trailer
    right = common_pb2.ContentTrailer(xxh3_128=_xxh3(data))
    answer = client.datastore.UploadImage(iter(_trailer_stream("dg_no_trailer", data, right,
                                                               upload_id=status.upload_id, start=len(data))))
    assert answer.image.size == len(data) and client.download_image("dg_no_trailer") == data


def test_calls_that_take_no_trailer_refuse_to_wait_for_one(client: MonaiLabelClient, tmp_path: Path) -> None:
    data = _nifti(tmp_path, "v.nii", 10)
    content = common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data),
                                       trailer_checksum="xxh3_128")
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.datastore.CreateUpload(
        datastore_pb2.CreateUploadRequest(image=datastore_pb2.UploadImageHeader(image_id="dg_unary", content=content))),
        "trailer_checksum")
    content.trailer_checksum = "md5"
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.datastore.UploadImage(
        iter(_trailer_stream("dg_md5", data, None, announce="md5"))), "trailer_checksum")


def test_the_client_sends_a_file_once_and_resumes_with_a_trailer_over_all_of_it(client: MonaiLabelClient,
                                                                                tmp_path: Path) -> None:
    src = tmp_path / "w.nii"
    write_volume(src, shape=(64, 64, 32), seed=11)
    data = src.read_bytes()
    content, _ = client._source(src, None, None, trailer=True)
    assert content.trailer_checksum == "xxh3_128" and not content.sha256 and not content.xxh3_128
    header = datastore_pb2.UploadImageHeader(image_id="dg_client_trailer", content=content)
    opened = []

    class BreaksOnce(io.BytesIO):
        """Fails after 100 KiB the first time, once the server has committed part of the stream."""

        def _maybe_break(self) -> None:
            if len(opened) == 1 and self.tell() >= 100 << 10:
                wait_until("some bytes committed", lambda: client.datastore.GetUploadStatus(
                    datastore_pb2.GetUploadStatusRequest(image_id="dg_client_trailer")).committed_size, 30)
                raise OSError("source became unreadable")

        def read(self, n: int | None = -1) -> bytes:
            self._maybe_break()
            return super().read(n)

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
            self._maybe_break()
            return super().readinto(buffer)

    def opener() -> BreaksOnce:
        opened.append(True)
        return BreaksOnce(data)

    answer = client._upload(datastore_pb2.UploadImageRequest, header, opener, client._upload_image,
                            "dg_client_trailer", "")
    assert len(opened) == 2 and header.upload_id  # resumed: its trailer hashed the held bytes too
    assert answer.image.size == len(data) and client.get_image("dg_client_trailer").sha256 == sha256(data)
