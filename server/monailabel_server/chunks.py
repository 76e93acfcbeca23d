"""Zero-copy chunks on the server: decoding streamed requests, sending pre-serialized responses.

A volume streams as messages ``{chunk: {offset, data}}`` of about 1 MiB. Through protobuf, each
chunk's bytes are copied twice more while holding the GIL, which makes the RPC thread the bottleneck
of a transfer. ``ChunkCodecInterceptor`` gives every streaming method whose messages hold a
header/result and a ``chunk`` oneof a decoder that hands chunk data on as a view of the received
buffer (``monailabel_api.wire.decode_chunk_message``), and a response serializer that sends bytes
a servicer pre-serialized with ``encode_chunk_request`` as they are.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, MethodDescriptor

from monailabel_api.v1 import common_pb2
from monailabel_api.wire import ChunkMessage, RawChunk, decode_chunk_message, encode_chunk_request, serialize_request
from monailabel_server.errors import replaced_handler

__all__ = ["RawChunk", "ChunkMessage", "decode_chunk_message", "ChunkCodecInterceptor", "encoded_chunks"]


def _method(name: str) -> Optional[MethodDescriptor]:
    """The descriptor of ``/package.Service/Method``, or None for a method not in the pool."""
    try:
        return descriptor_pool.Default().FindMethodByName(name.lstrip("/").replace("/", "."))
    except KeyError:
        return None


def _has_chunk_part(descriptor: Descriptor) -> bool:
    chunk = descriptor.fields_by_name.get("chunk")
    return (
        chunk is not None
        and chunk.number == 2
        and chunk.message_type is common_pb2.Chunk.DESCRIPTOR
        and chunk.containing_oneof is not None
    )


def encoded_chunks(data_chunks: Iterator[Tuple[int, bytes]]) -> Iterator[bytes]:
    """Pre-serializes ``(offset, data)`` chunks for a streamed response (sent as they are by the
    interceptor's serializer)."""
    for offset, data in data_chunks:
        yield encode_chunk_request(offset, data)


class ChunkCodecInterceptor(grpc.ServerInterceptor):
    """Installs zero-copy chunk decoding and pre-serialized chunk sending on streaming methods."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Optional[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Optional[grpc.RpcMethodHandler[Any, Any]]:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = _method(handler_call_details.method)
        if method is None:
            return handler
        changes: Dict[str, Any] = {}
        decode = handler.request_deserializer
        if handler.request_streaming and decode is not None and _has_chunk_part(method.input_type):
            changes["request_deserializer"] = lambda raw: decode_chunk_message(raw, decode)
        if handler.response_streaming and handler.response_serializer is not None and _has_chunk_part(
            method.output_type
        ):
            changes["response_serializer"] = serialize_request
        return replaced_handler(handler, **changes) if changes else handler
