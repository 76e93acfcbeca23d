"""Errors from the real server as a client reads them: a 20 KB id is refused as INVALID_ARGUMENT (never
echoed into trailers past the client's metadata limit), and the field at fault arrives as a detail."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from monailabel_api.v1 import common_pb2, datastore_pb2, datastore_pb2_grpc
from monailabel_client import error_details

HUGE_ID = "a" * 20_000


def _upload(channel: grpc.Channel, image_id: str) -> None:
    data = b"\x00" * 16
    header = datastore_pb2.UploadImageHeader(image_id=image_id, content=common_pb2.ContentHeader(
        encoding=common_pb2.ENCODING_NIFTI, total_size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    requests = [datastore_pb2.UploadImageRequest(header=header),
                datastore_pb2.UploadImageRequest(chunk=common_pb2.Chunk(offset=0, data=data))]
    datastore_pb2_grpc.DatastoreServiceStub(channel).UploadImage(iter(requests), timeout=30)


@pytest.mark.parametrize("image_id", [HUGE_ID, "../escape", "a/b", ".hidden"])
def test_bad_ids_are_invalid_with_their_field(channel: grpc.Channel, image_id: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _upload(channel, image_id)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert len(err.details()) < 512 and HUGE_ID[:200] not in err.details()
    assert sum(len(k) + len(v) for k, v in err.trailing_metadata()) < 4096
    read = error_details(err)
    assert read.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in read.field_violations] == ["header.image_id"]  # its path in the request


def test_a_huge_id_in_a_lookup_is_not_echoed(channel: grpc.Channel) -> None:
    stub = datastore_pb2_grpc.DatastoreServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetImage(datastore_pb2.GetImageRequest(image_id=HUGE_ID), timeout=30)
    err = info.value
    # refused or not found, but never RESOURCE_EXHAUSTED from trailers over the client's limit
    assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), err.details()
    assert len(err.details()) <= 1024
    assert sum(len(k) + len(v) for k, v in err.trailing_metadata()) < 4096
