"""InferService: converts messages to and from the inference core (:mod:`monailabel_server.core.infer`).

Sessions, checks and the pipeline live in :class:`~monailabel_server.core.infer.InferCore`; this
module only reads requests into typed values and writes the answer (result, then mask chunks).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

import grpc
import numpy as np
from google.protobuf import timestamp_pb2

from monailabel.interfaces.app import MONAILabelApp
from monailabel_api.v1 import common_pb2, infer_pb2, infer_pb2_grpc
from monailabel_api.wire import encode_chunk_request
from monailabel_server.config import ServerConfig
from monailabel_server.convert import ENUM_BY_DTYPE, from_struct, geometry_of_affine, to_struct
from monailabel_server.core.infer import InferAnswer, InferCore, result_dtype_name
from monailabel_server.core.infer_request import InferParams, OutputSpec
from monailabel_server.core.sessions import Session
from monailabel_server.datastore_servicer import label_message
from monailabel_server.ingest import chunks_of, header_of
from monailabel_server.validation import invalid
from monailabel_server.workers import CallCancel, ModelWorkers

__all__ = ["InferServicer", "params_of", "output_of"]


def params_of(params: infer_pb2.InferParams, prefix: str) -> InferParams:
    """Reads InferParams into the core's typed parameters (checked by the core)."""
    return InferParams(
        foreground=[list(p.coordinates) for p in params.foreground],
        background=[list(p.coordinates) for p in params.background],
        label_info=[(e.name, int(e.index)) for e in params.label_info],
        device=params.device,
        result_dtype=result_dtype_name(params.result_dtype, f"{prefix}.result_dtype"),
        extra=from_struct(params.extra),
        field_prefix=prefix,
    )


def output_of(output: infer_pb2.OutputOptions, prefix: str) -> OutputSpec:
    """Reads OutputOptions into the core's output options (checked by the core)."""
    return OutputSpec(int(output.encoding), output.result_extension, int(output.chunk_size),
                      bool(output.save_label), bool(output.skip_mask), prefix)


def session_message(session: Session) -> infer_pb2.Session:
    """Builds a Session message."""
    image = session.image
    affine = getattr(image, "affine", None)
    geometry = geometry_of_affine(np.asarray(affine)) if affine is not None else common_pb2.Geometry()
    return infer_pb2.Session(
        session_id=session.session_id,
        expire_time=timestamp_pb2.Timestamp(seconds=int(session.expires_at)),
        shape=[int(s) for s in image.shape],
        geometry=geometry,
        image_id=session.image_id,
    )


def _answer(answer: InferAnswer, message: Any) -> Iterator[Any]:
    """The result message, then the mask in pre-serialized chunks."""
    result = infer_pb2.InferResult(result=to_struct(answer.result), labels=answer.labels,
                                   latency=infer_pb2.Latency(**answer.latency))
    if answer.saved_label is not None:
        result.saved_label.CopyFrom(label_message(answer.saved_label))
    mask = answer.mask
    if mask is not None:
        header = common_pb2.ContentHeader(encoding=common_pb2.Encoding.ValueType(mask.encoding),
                                          total_size=len(mask.data), sha256=mask.sha256,
                                          file_extension=mask.extension)
        if mask.shape:
            header.shape.extend(mask.shape)
        if mask.dtype is not None:
            header.data_type = common_pb2.DataType.ValueType(ENUM_BY_DTYPE.get(mask.dtype, 0))
        if mask.affine is not None:
            header.geometry.CopyFrom(geometry_of_affine(mask.affine, min(len(mask.shape), 3) or None))
        result.mask.CopyFrom(header)
    yield message(result=result)
    if mask is None:
        return
    view, size = memoryview(mask.data), answer.chunk_size
    for offset in range(0, len(mask.data), size):
        yield encode_chunk_request(offset, view[offset : offset + size])  # type: ignore[arg-type] # a view: no copy


class InferServicer(infer_pb2_grpc.InferServiceServicer):
    """Serves the app's infer tasks.

    Args:
        app: the app.
        config: server settings.
        workers: the model workers.
        core: the inference core (one over ``app`` by default).
    """

    def __init__(self, app: MONAILabelApp, config: ServerConfig, workers: ModelWorkers,
                 core: Optional[InferCore] = None) -> None:
        self.core = core if core is not None else InferCore(app, config, workers)

    def Infer(self, request: infer_pb2.InferRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        params, output = params_of(request.params, "params"), output_of(request.output, "output")
        source = request.WhichOneof("source")
        if source == "image_id":
            answer = self.core.infer_image(request.model, request.image_id, params, output, CallCancel(context))
        elif source == "session_id":
            answer = self.core.infer_session(request.model, request.session_id, params, output, CallCancel(context))
        else:
            raise invalid("source", "set image_id or session_id")
        yield from _answer(answer, infer_pb2.InferResponse)

    def InferVolume(self, request_iterator: Iterable[infer_pb2.InferVolumeRequest],
                    context: grpc.ServicerContext) -> Iterator[Any]:
        requests = iter(request_iterator)
        header = header_of(next(requests, None), "InferVolume")
        answer = self.core.infer_volume(header.model, header.content, chunks_of(requests, "InferVolume"),
                                        params_of(header.params, "header.params"),
                                        output_of(header.output, "header.output"), CallCancel(context))
        yield from _answer(answer, infer_pb2.InferVolumeResponse)

    def CreateSession(self, request_iterator: Iterable[infer_pb2.CreateSessionRequest],
                      context: grpc.ServicerContext) -> infer_pb2.CreateSessionResponse:
        requests = iter(request_iterator)
        header = header_of(next(requests, None), "CreateSession")
        source = header.WhichOneof("source")
        session = self.core.create_session(header.ttl_seconds, header.content if source == "content" else None,
                                           header.image_id if source == "image_id" else "",
                                           chunks_of(requests, "CreateSession"))
        return infer_pb2.CreateSessionResponse(session=session_message(session))

    def GetSession(self, request: infer_pb2.GetSessionRequest, context: grpc.ServicerContext):
        return infer_pb2.GetSessionResponse(session=session_message(self.core.sessions.get(request.session_id)))

    def DeleteSession(self, request: infer_pb2.DeleteSessionRequest, context: grpc.ServicerContext):
        self.core.sessions.delete(request.session_id)
        return infer_pb2.DeleteSessionResponse()

    def Interact(self, request_iterator: Iterable[infer_pb2.InteractRequest],
                 context: grpc.ServicerContext) -> Iterator[Any]:
        from monailabel_server.interact import interact

        yield from interact(self.core, request_iterator, context)
