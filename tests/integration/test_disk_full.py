"""A disk without room for an upload, on a real server and file system: the upload is refused with
RESOURCE_EXHAUSTED (reason DISK_FULL) before its first chunk, and nothing is left staged.

The server's volume limit is raised past the size of the disk, so that a header can announce more
bytes than the file system holds; the refusal comes from the file system itself (``fallocate``), as it
would on a full disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import grpc
import pytest

from monailabel.datasets import write_phantoms
from monailabel_api.v1 import common_pb2, datastore_pb2, datastore_pb2_grpc
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start
from tests.disk import past_the_disk, reserves_ahead

from .conftest import copy_template
from .helpers import error_info
from .hostile import staging_files


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("diskfull")
    if not reserves_ahead(root):
        pytest.skip("this file system cannot reserve space ahead (no fallocate): a full disk shows mid-stream")
    app_dir = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=1, shape=(16, 16, 8), labeled=0)
    running = start(ServerConfig(app_dir=app_dir, studies=str(studies), port=0, max_volume_bytes=1 << 50))
    yield running
    running.stop(grace=1)


def _header(total: int) -> common_pb2.ContentHeader:
    return common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=total)


def test_a_stream_larger_than_the_disk_is_refused_before_its_bytes(server: RunningServer) -> None:
    total = past_the_disk(Path(server.app.studies))
    sent = []

    def requests() -> Iterator[datastore_pb2.UploadImageRequest]:
        yield datastore_pb2.UploadImageRequest(
            header=datastore_pb2.UploadImageHeader(image_id="too_big", content=_header(total)))
        for i in range(4):
            sent.append(i)
            yield datastore_pb2.UploadImageRequest(chunk=common_pb2.Chunk(offset=i << 20, data=b"\0" * (1 << 20)))

    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            datastore_pb2_grpc.DatastoreServiceStub(channel).UploadImage(requests(), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "no room" in info.value.details() and str(total) in info.value.details()
    assert error_info(info.value).reason == "DISK_FULL"
    assert staging_files(Path(server.app.studies)) == []


def test_a_resumable_upload_larger_than_the_disk_is_refused_at_create(server: RunningServer) -> None:
    total = past_the_disk(Path(server.app.studies))
    with grpc.insecure_channel(server.address) as channel:
        stub = datastore_pb2_grpc.DatastoreServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateUpload(datastore_pb2.CreateUploadRequest(
                image=datastore_pb2.UploadImageHeader(image_id="too_big_resumable", content=_header(total))),
                timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        assert error_info(info.value).reason == "DISK_FULL"
        # the refusal left nothing to resume, and the server goes on taking uploads that fit
        data = (Path(server.app.studies) / "phantom_000.nii.gz").read_bytes()
        header = datastore_pb2.UploadImageHeader(image_id="fits", content=common_pb2.ContentHeader(
            encoding=common_pb2.ENCODING_NIFTI_GZ, total_size=len(data)))
        reply = stub.UploadImage(iter([datastore_pb2.UploadImageRequest(header=header),
                                       datastore_pb2.UploadImageRequest(chunk=common_pb2.Chunk(data=data))]),
                                 timeout=30)
        assert reply.image.size == len(data)
