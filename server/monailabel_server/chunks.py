"""Zero-copy decoding of the chunk messages of upload streams.

A streamed volume arrives as messages ``{chunk: {offset, data}}`` of about 1 MiB. Parsing each with
protobuf copies its bytes twice while holding the GIL (into the message, then out of it as a new
``bytes``), which makes the RPC thread the bottleneck of an upload. Such a message has a fixed, tiny
wire layout, so this decoder reads the offset and hands the data on as a ``memoryview`` of the
received buffer; any other message (the header, unknown fields, an unexpected layout) goes to
protobuf as usual. ``ChunkDecoderInterceptor`` installs it for every client-streaming method whose
request is a ``header``/``chunk`` oneof.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import grpc

from monailabel.v1 import common_pb2

__all__ = ["RawChunk", "ChunkRequest", "decode_chunk_request", "ChunkDecoderInterceptor"]

_CHUNK_FIELD_TAG = (2 << 3) | 2  # field 2 (chunk), length-delimited
_OFFSET_TAG = (1 << 3) | 0  # Chunk.offset, varint
_DATA_TAG = (2 << 3) | 2  # Chunk.data, length-delimited


class RawChunk:
    """A chunk whose data is a view of the received message (no copy)."""

    __slots__ = ("offset", "data")

    def __init__(self, offset: int, data: memoryview) -> None:
        self.offset = offset
        self.data = data


class ChunkRequest:
    """Stands for a request message whose ``part`` oneof holds a chunk."""

    __slots__ = ("chunk",)

    def __init__(self, chunk: RawChunk) -> None:
        self.chunk = chunk

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's method name
        return name == "chunk"

    def WhichOneof(self, name: str) -> str:  # noqa: N802 - protobuf's method name
        return "chunk"


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def decode_chunk_request(raw: bytes, fallback: Callable[[bytes], Any]) -> Any:
    """Decodes a ``{chunk: {offset, data}}`` message without copying its data, else calls ``fallback``.

    Args:
        raw: the serialized request.
        fallback: the message class's ``FromString``.

    Returns:
        A ChunkRequest, or what ``fallback`` returns.
    """
    try:
        if len(raw) < 2 or raw[0] != _CHUNK_FIELD_TAG:
            return fallback(raw)
        size, pos = _varint(raw, 1)
        end = pos + size
        if end != len(raw):
            return fallback(raw)
        offset, data = 0, memoryview(b"")
        seen = 0
        while pos < end:
            tag = raw[pos]
            pos += 1
            if tag == _OFFSET_TAG and seen < 1:
                offset, pos = _varint(raw, pos)
                if offset >= 1 << 63:  # int64 is two's complement on the wire
                    offset -= 1 << 64
                seen = 1
            elif tag == _DATA_TAG and seen < 2:
                length, pos = _varint(raw, pos)
                if pos + length > end:
                    return fallback(raw)
                data = memoryview(raw)[pos : pos + length]
                pos += length
                seen = 2
            else:
                return fallback(raw)
        return ChunkRequest(RawChunk(offset, data))
    except (IndexError, ValueError):
        return fallback(raw)


def _is_chunked_request(cls: Optional[type]) -> bool:
    descriptor = getattr(cls, "DESCRIPTOR", None)
    if descriptor is None:
        return False
    chunk = descriptor.fields_by_name.get("chunk")
    header = descriptor.fields_by_name.get("header")
    return (
        chunk is not None
        and header is not None
        and chunk.number == 2
        and chunk.message_type is common_pb2.Chunk.DESCRIPTOR
        and chunk.containing_oneof is not None
    )


class ChunkDecoderInterceptor(grpc.ServerInterceptor):
    """Installs the zero-copy chunk decoder on client-streaming methods with header/chunk requests."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Optional[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Optional[grpc.RpcMethodHandler]:
        handler = continuation(handler_call_details)
        if handler is None or not handler.request_streaming or handler.request_deserializer is None:
            return handler
        fallback = handler.request_deserializer
        if not _is_chunked_request(getattr(fallback, "__self__", None)):
            return handler
        return handler._replace(  # type: ignore[attr-defined]
            request_deserializer=lambda raw: decode_chunk_request(raw, fallback)
        )
