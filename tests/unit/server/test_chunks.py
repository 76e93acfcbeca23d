"""The zero-copy chunk codec reads and writes exactly protobuf's bytes, and defers to protobuf otherwise."""

from __future__ import annotations

import os

import pytest
from google.protobuf.message import DecodeError

from monailabel_api.v1 import common_pb2, datastore_pb2, infer_pb2, strategy_pb2
from monailabel_api.wire import ChunkMessage, decode_chunk_message, encode_chunk_request, serialize_request

REQUESTS = [
    datastore_pb2.UploadImageRequest,
    datastore_pb2.SaveLabelRequest,
    infer_pb2.InferVolumeRequest,
    infer_pb2.CreateSessionRequest,
    datastore_pb2.DownloadImageResponse,
    datastore_pb2.DownloadLabelResponse,
    infer_pb2.InferResponse,
    infer_pb2.InferVolumeResponse,
    strategy_pb2.GetNextSampleResponse,
]


@pytest.mark.parametrize("cls", REQUESTS)
@pytest.mark.parametrize("offset", [0, 1, 300, 2**40, -5])
@pytest.mark.parametrize("size", [0, 1, 1 << 20])
def test_encoder_writes_protobufs_bytes_and_decoder_reads_them(cls, offset: int, size: int) -> None:
    data = os.urandom(size)
    wire = cls(chunk=common_pb2.Chunk(offset=offset, data=data)).SerializeToString()
    assert encode_chunk_request(offset, data) == wire
    decoded = decode_chunk_message(wire, cls.FromString)
    assert isinstance(decoded, ChunkMessage) and decoded.HasField("chunk") and not decoded.HasField("header")
    assert decoded.chunk.offset == offset
    assert bytes(decoded.chunk.data) == data


def test_headers_and_unexpected_layouts_go_to_protobuf() -> None:
    header = datastore_pb2.UploadImageRequest(header=datastore_pb2.UploadImageHeader(image_id="a"))
    got = decode_chunk_message(header.SerializeToString(), datastore_pb2.UploadImageRequest.FromString)
    assert isinstance(got, datastore_pb2.UploadImageRequest) and got.header.image_id == "a"
    # data before offset (legal protobuf, not what encoders write) still decodes right, through protobuf
    inner = b"\x12\x02hi\x08\x07"
    odd = b"\x12" + bytes([len(inner)]) + inner
    got = decode_chunk_message(odd, datastore_pb2.UploadImageRequest.FromString)
    assert isinstance(got, datastore_pb2.UploadImageRequest)
    assert (got.chunk.offset, got.chunk.data) == (7, b"hi")
    # a truncated message is protobuf's to reject
    with pytest.raises(DecodeError):
        decode_chunk_message(encode_chunk_request(5, b"abcdef")[:-2], datastore_pb2.UploadImageRequest.FromString)


def test_serializer_passes_bytes_and_serializes_messages() -> None:
    message = datastore_pb2.UploadImageRequest(header=datastore_pb2.UploadImageHeader(image_id="b"))
    assert serialize_request(message) == message.SerializeToString()
    assert serialize_request(b"\x12\x00") == b"\x12\x00"


@pytest.mark.parametrize("in_place", [True, False])
def test_a_file_read_into_chunk_messages_is_what_protobuf_writes(tmp_path, monkeypatch, in_place: bool) -> None:
    import io

    from monailabel_api import wire

    if not in_place:  # a Python that cannot fill a bytes in place: read, then encode
        monkeypatch.setattr(wire, "unshared_bytes", lambda size: None)
    data = os.urandom(3 * 4096 + 100)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    for source in (open(path, "rb"), io.BytesIO(data)):
        with source as f:
            pos, got = 0, b""
            while True:
                message, view = wire.read_chunk_request(f, pos, 4096)
                if not view:
                    assert message == b""
                    break
                chunk = data[pos:pos + 4096]
                assert message == datastore_pb2.UploadImageRequest(
                    chunk=common_pb2.Chunk(offset=pos, data=chunk)).SerializeToString()
                assert bytes(view) == chunk and type(message) is bytes
                got += bytes(view)
                pos += len(view)
            assert got == data
