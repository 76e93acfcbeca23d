"""InferService: runs the app's infer tasks on model workers and streams the mask back in chunks."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional

import grpc
import numpy as np
from google.protobuf import timestamp_pb2

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.v1 import common_pb2, infer_pb2, infer_pb2_grpc
from monailabel_api.wire import encode_chunk_request
from monailabel_server.chunks import encoded_chunks
from monailabel_server.config import ServerConfig
from monailabel_server.convert import (
    DTYPE_BY_ENUM,
    EXTENSION_BY_ENCODING,
    encoding_of_name,
    from_struct,
    geometry_of_affine,
    jsonable,
    to_struct,
)
from monailabel_server.datastore_servicer import label_message
from monailabel_server.ingest import chunks_of, header_of, receive
from monailabel_server.sessions import Session, SessionStore
from monailabel_server.store import Store
from monailabel_server.transfer import read_chunks
from monailabel_server.volumes import content_header_for_file, raw_voxels
from monailabel_server.workers import CallCancel, ModelWorkers

__all__ = ["InferServicer"]

logger = logging.getLogger(__name__)

_LATENCY_KEYS = ("pre", "infer", "invert", "post", "write", "total")
# masks of 2D models (pathology) come back as PNG; uploads of 2D images keep their own extension
_MASK_EXTENSIONS = {**EXTENSION_BY_ENCODING, common_pb2.ENCODING_IMAGE_2D: ".png"}


def _decode(path: str) -> Any:
    """Decodes a volume once, as a MetaTensor carrying its affine (MONAI's LoadImage)."""
    from monai.transforms import LoadImage

    # 2D TIFF needs Pillow's reader named: MONAI's default order tries the DICOM reader on it
    reader = "PILReader" if path.lower().endswith((".tif", ".tiff")) else None
    try:
        return LoadImage(image_only=True, reader=reader)(path)
    except Exception as exc:  # MONAI raises several types for unreadable files
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"cannot decode the volume: {exc}") from exc


def _labels_of(task: Any) -> Dict[str, int]:
    labels = getattr(task, "labels", None)
    if isinstance(labels, dict):
        return {str(k): int(v) for k, v in labels.items()}
    if isinstance(labels, (list, tuple)):
        return {str(name): i + 1 for i, name in enumerate(labels)}
    if isinstance(labels, str):
        return {labels: 1}
    return {}


class InferServicer(infer_pb2_grpc.InferServiceServicer):
    """Serves the app's infer tasks.

    Args:
        app: the app.
        config: server settings.
        workers: the model workers.
    """

    def __init__(self, app: MONAILabelApp, config: ServerConfig, workers: ModelWorkers) -> None:
        self.app = app
        self.config = config
        self.workers = workers
        self.store = Store(app.datastore())
        self.sessions = SessionStore(config.max_sessions, config.max_session_bytes, config.session_ttl_s)

    # -- RPCs -------------------------------------------------------------------------------------
    def Infer(self, request: infer_pb2.InferRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        task = self._task(request.model)
        source = request.WhichOneof("source")
        if source == "image_id":
            self.store.image(request.image_id)  # NOT_FOUND before queueing
            yield from self._run(task, request.model, request.image_id, request.image_id, request.params,
                                 request.output, context, infer_pb2.InferResponse)
        elif source == "session_id":
            session = self.sessions.get(request.session_id)
            with session.lock:
                image = session.image.clone()
            yield from self._run(task, request.model, image, session.image_id, request.params, request.output,
                                 context, infer_pb2.InferResponse)
        else:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "set image_id or session_id")

    def InferVolume(self, request_iterator: Iterable[infer_pb2.InferVolumeRequest], context: grpc.ServicerContext):
        requests = iter(request_iterator)
        header = header_of(next(requests, None), "InferVolume")
        task = self._task(header.model)
        received = receive(header.content, chunks_of(requests, "InferVolume"), self.store.staging_dir(), None,
                           self.config.max_volume_bytes)
        try:
            yield from self._run(task, header.model, str(received.path), "", header.params, header.output,
                                 context, infer_pb2.InferVolumeResponse)
        finally:
            received.discard()

    def CreateSession(self, request_iterator: Iterable[infer_pb2.CreateSessionRequest], context: grpc.ServicerContext):
        requests = iter(request_iterator)
        header = header_of(next(requests, None), "CreateSession")
        if header.ttl_seconds < 0:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "ttl_seconds must not be negative")
        source = header.WhichOneof("source")
        if source == "image_id":
            path = self.store.image(header.image_id).path
            image = _decode(path)
            image_id = header.image_id
        elif source == "content":
            self.sessions.reserve(header.content.total_size)
            received = receive(header.content, chunks_of(requests, "CreateSession"), self.store.staging_dir(), None,
                               self.config.max_volume_bytes)
            try:
                image = _decode(str(received.path))
            finally:
                received.discard()
            image_id = ""
        else:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "the session header needs content or image_id")
        nbytes = int(image.numel() * image.element_size())
        session = self.sessions.add(image, nbytes, header.ttl_seconds, image_id)
        logger.info("session %s: %s volume of %d bytes", session.session_id, tuple(image.shape), nbytes)
        return infer_pb2.CreateSessionResponse(session=self._session_message(session))

    def GetSession(self, request: infer_pb2.GetSessionRequest, context: grpc.ServicerContext):
        return infer_pb2.GetSessionResponse(session=self._session_message(self.sessions.get(request.session_id)))

    def DeleteSession(self, request: infer_pb2.DeleteSessionRequest, context: grpc.ServicerContext):
        self.sessions.delete(request.session_id)
        return infer_pb2.DeleteSessionResponse()

    # -- helpers ----------------------------------------------------------------------------------
    def _task(self, model: str) -> Any:
        infers = self.app.infer_tasks() if hasattr(self.app, "infer_tasks") else self.app._infers
        if model not in infers:
            names = ", ".join(sorted(infers)) or "none"
            raise MONAILabelException(MONAILabelError.NOT_FOUND, f"model '{model}' does not exist; models: {names}")
        return infers[model]

    def _session_message(self, session: Session) -> infer_pb2.Session:
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

    def _request(self, model: str, image: Any, image_id: str, params: infer_pb2.InferParams,
                 output: infer_pb2.OutputOptions) -> Dict[str, Any]:
        """Builds MONAI Label's request dict from the typed parameters."""
        request: Dict[str, Any] = from_struct(params.extra)
        request.update(model=model, image=image)
        if image_id:
            request["image_id"] = image_id
        if params.foreground:
            request["foreground"] = [list(p.coordinates) for p in params.foreground]
        if params.background:
            request["background"] = [list(p.coordinates) for p in params.background]
        if params.label_info:
            request["label_info"] = [{"name": e.name, "idx": e.index} for e in params.label_info]
        if params.device:
            request["device"] = params.device
        if params.result_dtype:
            if params.result_dtype not in DTYPE_BY_ENUM:
                raise MONAILabelException(MONAILabelError.INVALID_INPUT, "result_dtype is not a known data type")
            request["result_dtype"] = DTYPE_BY_ENUM[params.result_dtype].name
        encoding = output.encoding or (encoding_of_name(output.result_extension) if output.result_extension else 0)
        if encoding and encoding not in _MASK_EXTENSIONS:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      "masks come back as NIfTI, NRRD, raw voxels or a 2D image (PNG)")
        two_d = getattr(self._task(model), "dimension", 3) == 2
        request["result_extension"] = _MASK_EXTENSIONS.get(encoding, ".png" if two_d else ".nii.gz")
        request["save_label"] = bool(output.save_label)
        return request

    def _run(self, task: Any, model: str, image: Any, image_id: str, params: infer_pb2.InferParams,
             output: infer_pb2.OutputOptions, context: grpc.ServicerContext, message: Any) -> Iterator[Any]:
        if output.chunk_size < 0:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "chunk_size must not be negative")
        request = self._request(model, image, image_id, params, output)
        if request["save_label"] and not image_id:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "save_label needs a datastore image")
        cancel = CallCancel(context)
        request["cancel_check"] = cancel
        started = time.perf_counter()
        result, queued = self.workers.run(lambda: self.app.infer(request), cancel)
        params_json: Dict[str, Any] = dict(result.get("params") or {})
        file: Optional[str] = result.get("file")  # the result file; "label" may be the saved label's id
        try:
            yield from self._answer(task, params_json, file, queued, started, output, image_id, message)
        finally:
            if file and _is_temporary(file):
                Path(file).unlink(missing_ok=True)

    def _answer(self, task: Any, params_json: Dict[str, Any], file: Optional[str], queued: float, started: float,
                output: infer_pb2.OutputOptions, image_id: str, message: Any) -> Iterator[Any]:
        latencies = params_json.get("latencies") or {}
        latency = infer_pb2.Latency(queue=queued, **{k: float(latencies.get(k, 0.0) or 0.0) for k in _LATENCY_KEYS})
        result = infer_pb2.InferResult(result=to_struct(jsonable(params_json)), labels=_labels_of(task),
                                       latency=latency)
        if output.save_label and image_id:
            result.saved_label.CopyFrom(label_message(self.store.label(image_id, "original")))
        payload: Optional[bytes] = None
        path = Path(file) if file else None
        if path is not None and not output.skip_mask:
            if output.encoding == common_pb2.ENCODING_RAW:
                header, payload = raw_voxels(path)
            else:
                header = content_header_for_file(path, encoding_of_name(path.name))
            result.mask.CopyFrom(header)
        logger.info("infer %s: %.3f s (model %.3f s)", params_json.get("model", ""), time.perf_counter() - started,
                    latency.infer)
        yield message(result=result)
        if path is None or output.skip_mask:
            return
        size = min(output.chunk_size or self.config.chunk_size, self.config.chunk_size)
        if payload is not None:
            view = memoryview(payload)
            for offset in range(0, len(payload), size):
                yield encode_chunk_request(offset, view[offset : offset + size])
            return
        yield from encoded_chunks(read_chunks(path, 0, size))


def _is_temporary(file: str) -> bool:
    return os.path.abspath(file).startswith(os.path.abspath(tempfile.gettempdir()) + os.sep)
