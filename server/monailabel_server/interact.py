"""InferService.Interact: clicks in, mask deltas out, on one session.

A reader thread takes the client's messages as they come, so a cancel reaches a click while the
model runs it (the click's cancel check turns true and the task stops with CANCELLED). Clicks run
one at a time, in the order they came; each is answered with a :class:`~MaskDelta` and its voxel
chunks, or with ``cancelled``.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Set

import grpc
import numpy as np

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.digests import SHA256
from monailabel_api.v1 import common_pb2, infer_pb2
from monailabel_api.wire import encode_chunk_request
from monailabel_server.convert import ENUM_BY_DTYPE, geometry_of_affine
from monailabel_server.core.infer import InferCore
from monailabel_server.core.infer_request import MIN_CHUNK_SIZE, check_checksum
from monailabel_server.core.interact import COMPRESS_NONE, COMPRESS_ZLIB, Delta, MaskState
from monailabel_server.validation import check_enum, invalid, shown
from monailabel_server.workers import CallCancel

__all__ = ["interact", "MAX_QUEUED_CLICKS"]

#: Messages read ahead of the click being run; the reader waits (flow control) beyond this.
MAX_QUEUED_CLICKS = 64

_COMPRESSION: Dict[int, str] = {
    infer_pb2.VOXEL_COMPRESSION_UNSPECIFIED: COMPRESS_ZLIB,
    infer_pb2.VOXEL_COMPRESSION_NONE: COMPRESS_NONE,
    infer_pb2.VOXEL_COMPRESSION_ZLIB: COMPRESS_ZLIB,
}
_COMPRESSION_ENUM = {COMPRESS_NONE: infer_pb2.VOXEL_COMPRESSION_NONE, COMPRESS_ZLIB: infer_pb2.VOXEL_COMPRESSION_ZLIB}
_END = object()


class _Reader(threading.Thread):
    """Reads the request stream: cancels are recorded at once, everything else is queued in order."""

    def __init__(self, requests: Iterator[infer_pb2.InteractRequest], active: Callable[[], bool]) -> None:
        super().__init__(daemon=True, name="interact-reader")
        self.requests = requests
        self.active = active
        self.inbox: queue.Queue[Any] = queue.Queue(maxsize=MAX_QUEUED_CLICKS)
        self.cancelled: Set[int] = set()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            for message in self.requests:
                part = message.WhichOneof("part")
                if part == "cancel":
                    self.cancelled.add(int(message.cancel.click_id))  # seen by the running click's check
                elif part in ("click", "full_mask"):
                    if not self._put(message):
                        return
                else:
                    self.error = invalid(f"{part or 'part'}", "after start, send click, cancel or full_mask")
                    break
        except grpc.RpcError:  # the client went away: the response side sees the context end
            pass
        except BaseException as exc:  # surfaced to the RPC thread
            self.error = exc
        finally:
            self._put(_END)

    def _put(self, item: Any) -> bool:
        """Queues ``item``, waiting while the queue is full and the call lives; False once it ended."""
        while True:
            try:
                self.inbox.put(item, timeout=0.5)
                return True
            except queue.Full:  # the clicks ahead still run; a call that ended has no one to read them
                if not self.active():
                    return False


def _messages(delta: Delta, click_id: int, labels: Dict[str, int], latency: Optional[Dict[str, float]], chunk_size: int,
              geometry: common_pb2.Geometry) -> Iterator[Any]:
    header = infer_pb2.MaskDelta(
        click_id=click_id, shape=list(delta.shape), box_start=list(delta.start), box_size=list(delta.size),
        data_type=common_pb2.DataType.ValueType(ENUM_BY_DTYPE.get(delta.dtype.newbyteorder("="), 0)),
        compression=_COMPRESSION_ENUM[delta.compression], compressed_size=len(delta.data), sha256=delta.sha256,
        xxh3_128=delta.xxh3_128,
        labels=labels, full=delta.full, geometry=geometry,
    )
    if latency is not None:
        header.latency.CopyFrom(infer_pb2.Latency(**latency))
    yield infer_pb2.InteractResponse(delta=header)
    view = memoryview(delta.data)
    for offset in range(0, len(delta.data), chunk_size):
        yield encode_chunk_request(offset, view[offset : offset + chunk_size])  # type: ignore[arg-type]


def interact(core: InferCore, request_iterator: Iterable[infer_pb2.InteractRequest],
             context: grpc.ServicerContext) -> Iterator[Any]:
    """Serves one Interact stream (see the module docstring).

    Raises:
        MONAILabelException: INVALID_INPUT for a stream that does not begin with ``start`` or a bad
            option; NOT_FOUND for an unknown session or model; a click's own error ends the stream.
    """
    from monailabel_server.infer_servicer import params_of  # that module serves this one

    requests = iter(request_iterator)
    first = next(requests, None)
    if first is None or first.WhichOneof("part") != "start":
        raise invalid("start", "the first message of Interact must be start (session_id and model)")
    start = first.start
    names = {k: infer_pb2.VoxelCompression.Name(infer_pb2.VoxelCompression.ValueType(k)) for k in _COMPRESSION}
    check_enum(int(start.compression), "start.compression", list(_COMPRESSION), names=names)
    chunk = int(start.chunk_size) or core.config.chunk_size
    if not MIN_CHUNK_SIZE <= chunk <= core.config.chunk_size:
        raise invalid("start.chunk_size", f"start.chunk_size is {shown(start.chunk_size)}; use 0 (server default) "
                                          f"or {MIN_CHUNK_SIZE} to {core.config.chunk_size} bytes")
    core.task(start.model, "start.model")  # NOT_FOUND before any click
    session = core.sessions.get(start.session_id, "start.session_id")
    affine = getattr(session.image, "affine", None)
    geometry = geometry_of_affine(np.asarray(affine)) if affine is not None else common_pb2.Geometry()
    check_checksum(start.checksum, "start.checksum")
    state = MaskState(session.spatial_shape, _COMPRESSION[int(start.compression)], start.checksum or SHA256)
    labels = core.task(start.model, "start.model").label_map()
    call_cancel = CallCancel(context)
    reader = _Reader(requests, context.is_active)
    reader.start()
    yield from _serve(core, start, reader, state, labels, chunk, geometry, call_cancel, params_of)
    if reader.error is not None:
        raise reader.error


def _serve(core: InferCore, start: Any, reader: _Reader, state: MaskState, labels: Dict[str, int], chunk: int,
           geometry: common_pb2.Geometry, call_cancel: CallCancel,
           params_of: Callable[..., Any]) -> Iterator[Any]:
    """Answers the stream's clicks and full-mask requests in order until the client closes its side."""
    while True:
        message = reader.inbox.get()
        if message is _END:
            break
        if message.WhichOneof("part") == "full_mask":
            yield from _messages(state.full(), int(message.full_mask.request_id), labels, None, chunk, geometry)
            continue
        click = message.click
        click_id = int(click.click_id)
        if click_id in reader.cancelled:
            yield infer_pb2.InteractResponse(cancelled=infer_pb2.ClickCancelled(click_id=click_id))
            continue

        def cancel(click_id: int = click_id) -> bool:
            return click_id in reader.cancelled or call_cancel()

        try:
            mask, labels, latency = core.session_mask(start.model, start.session_id,
                                                      params_of(click.params, "click.params"), cancel)
        except MONAILabelException as exc:
            if exc.error == MONAILabelError.CANCELLED and click_id in reader.cancelled and not call_cancel():
                yield infer_pb2.InteractResponse(cancelled=infer_pb2.ClickCancelled(click_id=click_id))
                continue
            raise
        delta = state.update(mask)
        latency["write"] = delta.seconds
        yield from _messages(delta, click_id, labels, latency, chunk, geometry)
