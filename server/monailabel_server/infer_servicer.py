"""InferService: converts messages to and from the inference core (:mod:`monailabel_server.core.infer`).

Sessions, checks and the pipeline live in :class:`~monailabel_server.core.infer.InferCore`; this
module only reads requests into typed values and writes the answer (result, then mask chunks).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional

import grpc
import numpy as np
from google.protobuf import duration_pb2, timestamp_pb2

from monailabel.interfaces.app import MONAILabelApp
from monailabel_api.digests import SHA256, XXH3_128, Digests
from monailabel_api.v1 import common_pb2, infer_pb2, infer_pb2_grpc
from monailabel_api.wire import encode_chunk_request
from monailabel_server.config import ServerConfig
from monailabel_server.convert import ENUM_BY_DTYPE, from_struct, geometry_of_affine, to_struct
from monailabel_server.core.infer import EncodedMask, InferAnswer, InferCore, result_dtype_name
from monailabel_server.core.infer_request import InferParams, OutputSpec
from monailabel_server.core.sessions import Session
from monailabel_server.datastore_servicer import label_message
from monailabel_server.ingest import Received, chunks_of, header_of
from monailabel_server.validation import check_chunk_size, invalid
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
                      bool(output.save_label), bool(output.skip_mask), prefix, output.checksum)


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


def content_header(mask: EncodedMask, checksum: str = "") -> common_pb2.ContentHeader:
    """The header announcing encoded bytes: encoding, size, checksums (``checksum``'s, or both when ""),
    and shape, type and geometry when known."""
    header = common_pb2.ContentHeader(encoding=common_pb2.Encoding.ValueType(mask.encoding),
                                      total_size=len(mask.data), file_extension=mask.extension)
    if checksum in ("", SHA256):
        header.sha256 = Digests.of(mask.data, SHA256)
    if checksum in ("", XXH3_128):
        header.xxh3_128 = Digests.of(mask.data, XXH3_128)
    if mask.shape:
        header.shape.extend(mask.shape)
    if mask.dtype is not None:
        header.data_type = common_pb2.DataType.ValueType(ENUM_BY_DTYPE.get(mask.dtype, 0))
    if mask.affine is not None:
        header.geometry.CopyFrom(geometry_of_affine(mask.affine, min(len(mask.shape), 3) or None))
    return header


class _VolumeThenLabel:
    """Splits an InferVolume stream after its header: the volume's chunks, then the input label's."""

    def __init__(self, requests: Iterator[Any], has_label: bool) -> None:
        self._requests = requests
        self._has_label = has_label
        self._first_label: Optional[common_pb2.Chunk] = None

    def volume(self) -> Iterator[common_pb2.Chunk]:
        for message in self._requests:
            if message.HasField("chunk"):
                yield message.chunk
            elif message.HasField("label_chunk"):
                if not self._has_label:
                    raise invalid("label_chunk", "InferVolume: label chunks need a label in the header")
                self._first_label = message.label_chunk
                return
            else:
                raise invalid("part", "InferVolume: only chunks may follow the header")

    def label(self) -> Iterator[common_pb2.Chunk]:
        if self._first_label is not None:
            yield self._first_label
        for message in self._requests:
            if not message.HasField("label_chunk"):
                raise invalid("chunk", "InferVolume: the volume's chunks must all come before the label's")
            yield message.label_chunk


def _answer(answer: InferAnswer, message: Any) -> Iterator[Any]:
    """The result message, then the mask in pre-serialized chunks."""
    result = infer_pb2.InferResult(result=to_struct(answer.result), labels=answer.labels,
                                   latency=infer_pb2.Latency(**answer.latency))
    if answer.saved_label is not None:
        result.saved_label.CopyFrom(label_message(answer.saved_label))
    mask = answer.mask
    if mask is not None:
        result.mask.CopyFrom(content_header(mask, answer.checksum))
    yield message(result=result)
    if mask is None:
        return
    view, size = memoryview(mask.data), answer.chunk_size
    for offset in range(0, len(mask.data), size):
        yield encode_chunk_request(offset, view[offset : offset + size])  # type: ignore[arg-type] # a view: no copy


def _seconds(ttl: duration_pb2.Duration) -> int:
    """Whole seconds of a duration, a fraction counted as a second (so a short ttl never becomes the default)."""
    return int(ttl.seconds) + (1 if ttl.nanos > 0 else -1 if ttl.nanos < 0 and ttl.seconds == 0 else 0)


class InferServicer(infer_pb2_grpc.InferServiceServicer):
    """Serves the app's infer tasks.

    Args:
        app: the app.
        config: server settings.
        workers: the model workers.
        core: the inference core (one over ``app`` by default).
        volumes: takes a volume upload by id (``DatastoreCore.take_volume``), for ``upload_id`` sources.
    """

    def __init__(self, app: MONAILabelApp, config: ServerConfig, workers: ModelWorkers,
                 core: Optional[InferCore] = None, volumes: Optional[Callable[[str, str], Received]] = None) -> None:
        self.core = core if core is not None else InferCore(app, config, workers, volumes=volumes)

    def Infer(self, request: infer_pb2.InferRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        params, output = params_of(request.params, "params"), output_of(request.output, "output")
        source = request.WhichOneof("source")
        if source == "image_id":
            answer = self.core.infer_image(request.model, request.image_id, params, output, CallCancel(context),
                                           request.input_label_tag)
        elif source == "session_id":
            answer = self.core.infer_session(request.model, request.session_id, params, output, CallCancel(context),
                                             request.input_label_tag)
        elif source == "upload_id":
            answer = self.core.infer_upload(request.model, request.upload_id, params, output, CallCancel(context))
        else:
            raise invalid("source", "set image_id, session_id or upload_id")
        yield from _answer(answer, infer_pb2.InferResponse)

    def InferVolume(self, request_iterator: Iterable[infer_pb2.InferVolumeRequest],
                    context: grpc.ServicerContext) -> Iterator[Any]:
        requests = iter(request_iterator)
        header = header_of(next(requests, None), "InferVolume")
        # the volume's chunks, then the input label's when the header announces one
        split = _VolumeThenLabel(requests, header.HasField("label"))
        answer = self.core.infer_volume(header.model, header.content, split.volume(),
                                        params_of(header.params, "header.params"),
                                        output_of(header.output, "header.output"), CallCancel(context),
                                        header.label if header.HasField("label") else None, split.label)
        yield from _answer(answer, infer_pb2.InferVolumeResponse)

    def CreateSession(self, request_iterator: Iterable[infer_pb2.CreateSessionRequest],
                      context: grpc.ServicerContext) -> infer_pb2.CreateSessionResponse:
        requests = iter(request_iterator)
        header = header_of(next(requests, None), "CreateSession")
        source = header.WhichOneof("source")
        session = self.core.create_session(_seconds(header.ttl), header.content if source == "content" else None,
                                           header.image_id if source == "image_id" else "",
                                           chunks_of(requests, "CreateSession"))
        return infer_pb2.CreateSessionResponse(session=session_message(session))

    def OpenSession(self, request: infer_pb2.OpenSessionRequest,
                    context: grpc.ServicerContext) -> infer_pb2.OpenSessionResponse:
        source = request.WhichOneof("source")
        image_id = request.image_id if source == "image_id" else ""
        upload_id = request.upload_id if source == "upload_id" else ""
        session = self.core.create_session(_seconds(request.ttl), None, image_id, (), upload_id=upload_id,
                                           field_prefix="")
        return infer_pb2.OpenSessionResponse(session=session_message(session))

    def GetSession(self, request: infer_pb2.GetSessionRequest,
                   context: grpc.ServicerContext) -> infer_pb2.GetSessionResponse:
        return infer_pb2.GetSessionResponse(session=session_message(self.core.sessions.get(request.session_id)))

    def DeleteSession(self, request: infer_pb2.DeleteSessionRequest,
                      context: grpc.ServicerContext) -> infer_pb2.DeleteSessionResponse:
        self.core.sessions.delete(request.session_id)
        return infer_pb2.DeleteSessionResponse()

    def DownloadSessionImage(self, request: infer_pb2.DownloadSessionImageRequest,
                             context: grpc.ServicerContext) -> Iterator[Any]:
        chunk_size = check_chunk_size(request.chunk_size, "chunk_size", self.core.config.chunk_size)
        image = self.core.session_image(request.session_id, int(request.encoding))
        yield infer_pb2.DownloadSessionImageResponse(header=content_header(image))
        view = memoryview(image.data)
        for offset in range(0, len(image.data), chunk_size):
            yield encode_chunk_request(offset, view[offset : offset + chunk_size])  # type: ignore[arg-type]

    def Interact(self, request_iterator: Iterable[infer_pb2.InteractRequest],
                 context: grpc.ServicerContext) -> Iterator[Any]:
        from monailabel_server.interact import interact

        yield from interact(self.core, request_iterator, context)
