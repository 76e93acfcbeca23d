"""Clicks on a session over one Interact stream, with the mask mirrored on the client from deltas.

Example::

    with client.interact(session.session_id, "deepgrow_3d") as live:
        live.click(foreground=[[40, 52, 20]])
        answer = live.answer()          # the changed box, applied to live.mask
        live.request_full()             # the whole mask, e.g. to check the mirror
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from monailabel_api.digests import XXH3_128, Digests
from monailabel_api.v1 import infer_pb2
from monailabel_api.wire import DTYPE_BY_ENUM, affine_of_geometry, apply_mask_delta

__all__ = ["Interaction", "ClickAnswer", "COMPRESSION_NONE", "COMPRESSION_ZLIB"]

#: Voxels as they are: the fastest choice on loopback.
COMPRESSION_NONE = infer_pb2.VOXEL_COMPRESSION_NONE
#: zlib-compressed voxels (the default): the smallest on a network.
COMPRESSION_ZLIB = infer_pb2.VOXEL_COMPRESSION_ZLIB
_NAMES: Dict[int, str] = {infer_pb2.VOXEL_COMPRESSION_NONE: "none", infer_pb2.VOXEL_COMPRESSION_ZLIB: "zlib"}
_CLOSE = object()

_inflate: Any = zlib.decompress
try:  # ISA-L inflates the same zlib streams about twice as fast, when it is installed
    from isal import isal_zlib

    _inflate = isal_zlib.decompress
except ImportError:  # pragma: no cover - depends on the environment
    pass


class DeltaChecksumError(RuntimeError):
    """The voxels of a delta do not match the checksum the server sent."""


@dataclass
class ClickAnswer:
    """The answer to a click (or a full-mask request).

    Attributes:
        click_id: the click.
        cancelled: the click was cancelled; the mask is unchanged.
        box_start: first voxel of the changed box (empty: nothing changed).
        box_size: size of the changed box.
        wire_bytes: voxel bytes received for it (after compression).
        labels: label names and values.
        latency: seconds per stage on the server.
        full: this answers a full-mask request.
    """

    click_id: int
    cancelled: bool = False
    box_start: Tuple[int, ...] = ()
    box_size: Tuple[int, ...] = ()
    wire_bytes: int = 0
    labels: Dict[str, int] = field(default_factory=dict)
    latency: Dict[str, float] = field(default_factory=dict)
    full: bool = False


class Interaction:
    """One Interact stream; send clicks, read answers in order, keep the mask current.

    Created by :meth:`MonaiLabelClient.interact`. Not thread-safe: one thread sends and reads.

    Args:
        call: the Interact stream-stream callable.
        session_id: the session.
        model: the infer task taking clicks.
        compression: ``COMPRESSION_ZLIB`` (default) or ``COMPRESSION_NONE``.
        timeout: deadline of the whole stream in seconds.
        checksum: what each delta carries: ``"sha256"`` (default) or ``"xxh3_128"``.
    """

    def __init__(self, call: Any, session_id: str, model: str, compression: int = 0,
                 timeout: Optional[float] = None, checksum: str = "") -> None:
        self._outbox: queue.Queue[Any] = queue.Queue()
        self._ids = itertools.count(1)
        start = infer_pb2.InteractStart(session_id=session_id, model=model,
                                        compression=infer_pb2.VoxelCompression.ValueType(compression),
                                        checksum=checksum)
        self._outbox.put(infer_pb2.InteractRequest(start=start))
        self._responses: Iterator[Any] = call(self._requests(), timeout=timeout)
        #: The mask as the answers so far built it (None before the first answer).
        self.mask: Optional[np.ndarray] = None
        #: Voxel-to-world affine of the mask (from the first answer).
        self.affine: Optional[np.ndarray] = None

    def _requests(self) -> Iterator[infer_pb2.InteractRequest]:
        while (message := self._outbox.get()) is not _CLOSE:
            yield message

    # -- sending ----------------------------------------------------------------------------------
    def click(self, foreground: Sequence[Sequence[int]] = (), background: Sequence[Sequence[int]] = (),
              params: Optional[Dict[str, Any]] = None, device: str = "") -> int:
        """Sends a click; returns its id (answers come in order from :meth:`answer`)."""
        from monailabel_client.client import MonaiLabelClient

        click_id = next(self._ids)
        message = infer_pb2.Click(click_id=click_id,
                                  params=MonaiLabelClient._params(foreground, background, params, device))
        self._outbox.put(infer_pb2.InteractRequest(click=message))
        return click_id

    def cancel(self, click_id: int) -> None:
        """Cancels a click that a newer one superseded (its answer is ``cancelled``, unless it was done)."""
        self._outbox.put(infer_pb2.InteractRequest(cancel=infer_pb2.CancelClick(click_id=click_id)))

    def request_full(self) -> int:
        """Asks for the whole mask; returns the request's id (answered like a click)."""
        request_id = next(self._ids)
        self._outbox.put(infer_pb2.InteractRequest(full_mask=infer_pb2.FullMaskRequest(request_id=request_id)))
        return request_id

    # -- receiving --------------------------------------------------------------------------------
    def answer(self) -> ClickAnswer:
        """Reads the next answer and applies it to :attr:`mask`.

        Raises:
            grpc.RpcError: the stream ended with an error.
            StopIteration: the stream ended.
            DeltaChecksumError: the voxels do not match their checksum.
        """
        message = next(self._responses)
        part = message.WhichOneof("part")
        if part == "cancelled":
            return ClickAnswer(int(message.cancelled.click_id), cancelled=True)
        if part != "delta":
            raise RuntimeError(f"unexpected {part} in the Interact stream")
        delta = message.delta
        data = bytearray()
        while len(data) < delta.compressed_size:
            chunk = next(self._responses).chunk
            data += chunk.data
        dtype = DTYPE_BY_ENUM[int(delta.data_type)]
        name = _NAMES[int(delta.compression)]
        shape = tuple(int(s) for s in delta.shape)
        size = tuple(int(s) for s in delta.box_size)
        if size:
            raw = _inflate(bytes(data)) if name == "zlib" else bytes(data)
            if delta.xxh3_128:
                if Digests.of(raw, XXH3_128) != delta.xxh3_128:
                    raise DeltaChecksumError(f"click {delta.click_id}: the voxels do not match their XXH3-128")
            elif hashlib.sha256(raw).hexdigest() != delta.sha256:
                raise DeltaChecksumError(f"click {delta.click_id}: the voxels do not match their SHA-256")
            self.mask = apply_mask_delta(self.mask, shape, tuple(delta.box_start), size, dtype, raw, "none")
        else:
            self.mask = apply_mask_delta(self.mask, shape, (), (), dtype, b"", "none")
        if self.affine is None and delta.HasField("geometry"):
            self.affine = affine_of_geometry(delta.geometry, len(shape))
        latency = {k: getattr(delta.latency, k) for k in ("pre", "infer", "invert", "post", "write", "total", "queue")}
        return ClickAnswer(int(delta.click_id), False, tuple(int(s) for s in delta.box_start), size, len(data),
                           dict(delta.labels), latency, bool(delta.full))

    def close(self) -> None:
        """Ends the request side; the server finishes the clicks it has, then ends the stream."""
        self._outbox.put(_CLOSE)

    def cancel_stream(self) -> None:
        """Drops the stream at once (running clicks are cancelled on the server)."""
        self._outbox.put(_CLOSE)
        cancel = getattr(self._responses, "cancel", None)
        if cancel is not None:
            cancel()

    def __enter__(self) -> Interaction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel_stream()

