"""Server reflection under both names: ``grpc.reflection.v1`` (what current tools ask first) and ``v1alpha``.

grpcio-reflection serves only ``v1alpha``. The ``v1`` protocol is the same messages with the same
field numbers under another package, so the same servicer answers it, its messages read and written
with the ``v1alpha`` classes. So that reflection can describe the ``v1`` service too, its file
(``v1alpha``'s, renamed) is added to the descriptor pool.
"""

from __future__ import annotations

from typing import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

__all__ = ["V1_SERVICE_NAME", "enable_reflection"]

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"


def _add_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(file)
    file.name, file.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    for message in file.message_type:
        for field in message.field:
            if field.type_name.startswith(".grpc.reflection.v1alpha."):
                field.type_name = ".grpc.reflection.v1." + field.type_name.rsplit(".", 1)[1]
    for service in file.service:
        for method in service.method:
            method.input_type = ".grpc.reflection.v1." + method.input_type.rsplit(".", 1)[1]
            method.output_type = ".grpc.reflection.v1." + method.output_type.rsplit(".", 1)[1]
    pool.Add(file)


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Adds reflection (``v1`` and ``v1alpha``) for ``service_names`` and both reflection services."""
    _add_v1_descriptor()
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    servicer = reflection.ReflectionServicer(names)
    reflection.enable_server_reflection(names, server)  # v1alpha
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=v1alpha.ServerReflectionRequest.FromString,
            response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
        ),
    }),))
