"""Conversions between numpy arrays / affines and the API's wire messages, shared by client and server."""

from __future__ import annotations

import zlib
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from monailabel_api.buffers import unshared_bytes
from monailabel_api.v1 import common_pb2

__all__ = [
    "DTYPE_BY_ENUM",
    "ENUM_BY_DTYPE",
    "encoding_of_name",
    "geometry_of_affine",
    "affine_of_geometry",
    "encode_chunk_request",
    "read_chunk_request",
    "serialize_request",
    "RawChunk",
    "ChunkMessage",
    "decode_chunk_message",
    "apply_mask_delta",
]

DTYPE_BY_ENUM: Dict[int, np.dtype] = {
    common_pb2.DATA_TYPE_UINT8: np.dtype(np.uint8),
    common_pb2.DATA_TYPE_INT8: np.dtype(np.int8),
    common_pb2.DATA_TYPE_UINT16: np.dtype(np.uint16),
    common_pb2.DATA_TYPE_INT16: np.dtype(np.int16),
    common_pb2.DATA_TYPE_UINT32: np.dtype(np.uint32),
    common_pb2.DATA_TYPE_INT32: np.dtype(np.int32),
    common_pb2.DATA_TYPE_INT64: np.dtype(np.int64),
    common_pb2.DATA_TYPE_FLOAT32: np.dtype(np.float32),
    common_pb2.DATA_TYPE_FLOAT64: np.dtype(np.float64),
}
ENUM_BY_DTYPE: Dict[np.dtype, int] = {v: k for k, v in DTYPE_BY_ENUM.items()}


def encoding_of_name(name: str) -> int:
    """Returns the encoding a file name's extension implies.

    Args:
        name: a file name or an extension such as ".nii.gz".

    Returns:
        An ``Encoding`` value; ENCODING_UNSPECIFIED when the extension is unknown.
    """
    lower = str(name).lower()
    if lower.endswith(".nii.gz"):
        return common_pb2.ENCODING_NIFTI_GZ
    if lower.endswith(".nii"):
        return common_pb2.ENCODING_NIFTI
    if lower.endswith(".nrrd"):
        return common_pb2.ENCODING_NRRD
    if lower.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")):
        return common_pb2.ENCODING_IMAGE_2D
    if lower.endswith(".zip"):
        return common_pb2.ENCODING_DICOM_ZIP
    return common_pb2.ENCODING_UNSPECIFIED


def geometry_of_affine(affine: np.ndarray, ndim: int | None = None) -> common_pb2.Geometry:
    """Splits an affine into spacing, origin and direction.

    Args:
        affine: an (N+1)x(N+1) voxel-to-world matrix.
        ndim: spatial axes to keep (at most N); None keeps all.

    Returns:
        The geometry.
    """
    a = np.asarray(affine, dtype=np.float64)
    n = a.shape[0] - 1 if ndim is None else min(ndim, a.shape[0] - 1)
    linear = a[:n, :n]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / np.where(spacing == 0, 1.0, spacing)
    return common_pb2.Geometry(
        spacing=spacing.tolist(), origin=a[:n, a.shape[0] - 1].tolist(), direction=direction.reshape(-1).tolist()
    )


def affine_of_geometry(geometry: common_pb2.Geometry, ndim: int) -> np.ndarray:
    """Builds an affine from a geometry; unset parts default to identity, unit spacing, zero origin.

    Args:
        geometry: the geometry.
        ndim: number of spatial axes.

    Returns:
        An (ndim+1)x(ndim+1) affine.

    Raises:
        ValueError: a field has the wrong length, or a spacing is not positive.
    """
    spacing = np.ones(ndim) if not geometry.spacing else np.asarray(geometry.spacing, dtype=np.float64)
    origin = np.zeros(ndim) if not geometry.origin else np.asarray(geometry.origin, dtype=np.float64)
    direction = np.eye(ndim) if not geometry.direction else np.asarray(geometry.direction, dtype=np.float64)
    if spacing.shape != (ndim,) or origin.shape != (ndim,) or direction.size != ndim * ndim:
        raise ValueError(f"geometry must have {ndim} spacing and origin values and {ndim * ndim} direction values")
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise ValueError("geometry spacing must be positive")
    affine = np.eye(ndim + 1)
    affine[:ndim, :ndim] = direction.reshape(ndim, ndim) * spacing
    affine[:ndim, ndim] = origin
    return affine


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 goes on the wire as two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_chunk_request(offset: int, data: bytes) -> bytes:
    """Serializes ``{chunk: {offset, data}}`` of any streamed message (``chunk`` is field 2 of each).

    The same bytes protobuf writes, with one copy of ``data`` instead of two (into a message, then
    out of it): both lengths are known up front, so the headers and the data are joined once.
    ``serialize_request`` sends the result as it is.

    Args:
        offset: the chunk's position in the stream.
        data: its bytes.

    Returns:
        The serialized request message.
    """
    if not len(data):
        head = b"\x08" + _varint(offset) if offset else b""  # proto3 leaves zero and empty fields out
        return b"\x12" + _varint(len(head)) + head
    return b"".join((_chunk_prefix(offset, len(data)), data))


def _chunk_prefix(offset: int, size: int) -> bytes:
    """The bytes of ``{chunk: {offset, data}}`` that come before ``size`` bytes of data."""
    head = b"\x08" + _varint(offset) if offset else b""
    data_head = b"\x12" + _varint(size)
    return b"\x12" + _varint(len(head) + len(data_head) + size) + head + data_head


def read_chunk_request(source: Any, offset: int, size: int) -> Tuple[bytes, memoryview]:
    """Reads up to ``size`` bytes of ``source`` into a serialized ``{chunk: {offset, data}}`` message.

    The file's bytes are read straight into the message (:func:`monailabel_api.buffers.unshared_bytes`):
    one copy, from the file, where reading a block and then :func:`encode_chunk_request` made two.

    Args:
        source: a binary file (``readinto``), positioned where the chunk starts.
        offset: the chunk's position in the stream.
        size: the most bytes to read.

    Returns:
        ``(message, data)``: the message (empty at the end of the file) and a view of its data.
    """
    prefix = _chunk_prefix(offset, size)
    made = unshared_bytes(len(prefix) + size)
    if made is not None:
        message, view = made
        view[: len(prefix)] = prefix
        got = source.readinto(view[len(prefix):])
        if got == size:
            return message, view[len(prefix):]
        block = bytes(view[len(prefix): len(prefix) + (got or 0)])  # the file's end: the short rest, copied
    else:
        block = source.read(size)
    if not block:
        return b"", memoryview(b"")
    message = encode_chunk_request(offset, block)
    return message, memoryview(message)[len(message) - len(block):]


def serialize_request(message: object) -> bytes:
    """Serializer that passes pre-serialized bytes through and serializes messages."""
    if isinstance(message, (bytes, bytearray)):
        return bytes(message)
    data: bytes = message.SerializeToString()  # type: ignore[attr-defined]
    return data


# -- decoding -------------------------------------------------------------------------------------
_CHUNK_FIELD_TAG = (2 << 3) | 2  # field 2 (chunk) of every streamed message, length-delimited
_OFFSET_TAG = (1 << 3) | 0  # Chunk.offset, varint
_DATA_TAG = (2 << 3) | 2  # Chunk.data, length-delimited


class RawChunk:
    """A chunk whose data is a view of the received message (no copy)."""

    __slots__ = ("offset", "data")

    def __init__(self, offset: int, data: memoryview) -> None:
        self.offset = offset
        self.data = data


class ChunkMessage:
    """Stands for a streamed message whose ``part`` oneof holds a chunk."""

    __slots__ = ("chunk",)

    def __init__(self, chunk: RawChunk) -> None:
        self.chunk = chunk

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's method name
        return name == "chunk"

    def WhichOneof(self, name: str) -> str:  # noqa: N802 - protobuf's method name
        return "chunk"


def _read_varint(buf: bytes, pos: int) -> Tuple[int, int]:
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


def decode_chunk_message(raw: bytes, fallback: Callable[[bytes], Any]) -> Any:
    """Decodes a ``{chunk: {offset, data}}`` message without copying its data, else calls ``fallback``.

    Every streamed message of the API (requests and responses) keeps its chunk in field 2; protobuf
    would copy each 1 MiB chunk twice while holding the GIL. Any other message (a header, a result,
    unknown fields, an unexpected layout) goes to ``fallback``.

    Args:
        raw: the serialized message.
        fallback: the message class's ``FromString``.

    Returns:
        A ChunkMessage, or what ``fallback`` returns.
    """
    try:
        if len(raw) < 2 or raw[0] != _CHUNK_FIELD_TAG:
            return fallback(raw)
        size, pos = _read_varint(raw, 1)
        end = pos + size
        if end != len(raw):
            return fallback(raw)
        offset, data = 0, memoryview(b"")
        seen = 0
        while pos < end:
            tag = raw[pos]
            pos += 1
            if tag == _OFFSET_TAG and seen < 1:
                offset, pos = _read_varint(raw, pos)
                if offset >= 1 << 63:  # int64 is two's complement on the wire
                    offset -= 1 << 64
                seen = 1
            elif tag == _DATA_TAG and seen < 2:
                length, pos = _read_varint(raw, pos)
                if pos + length > end:
                    return fallback(raw)
                data = memoryview(raw)[pos : pos + length]
                pos += length
                seen = 2
            else:
                return fallback(raw)
        return ChunkMessage(RawChunk(offset, data))
    except (IndexError, ValueError):
        return fallback(raw)


# -- interactive mask deltas ----------------------------------------------------------------------
def apply_mask_delta(mask: Optional[np.ndarray], shape: Sequence[int], start: Sequence[int], size: Sequence[int],
                     dtype: np.dtype, voxels: bytes, compression: str) -> np.ndarray:
    """Applies an Interact delta to a mask; returns the new mask (the same array when it could be updated in place).

    Args:
        mask: the mask before (None: the all-zero mask a stream starts from).
        shape: the whole mask's shape.
        start: the box's first voxel per axis.
        size: the box's size per axis (empty: the click changed nothing).
        dtype: the voxels' element type (the mask is widened to it when narrower).
        voxels: the box's voxels as sent, last axis fastest.
        compression: ``"none"`` or ``"zlib"``.

    Raises:
        ValueError: the voxels do not fill the box.
    """
    dtype = np.dtype(dtype)
    if mask is None:
        mask = np.zeros(tuple(int(s) for s in shape), dtype=dtype)
    elif mask.dtype != dtype:
        mask = mask.astype(np.promote_types(mask.dtype, dtype))
    if len(size):
        raw = zlib.decompress(voxels) if compression == "zlib" else voxels
        box = tuple(slice(int(a), int(a) + int(n)) for a, n in zip(start, size, strict=True))
        mask[box] = np.frombuffer(raw, dtype=dtype).reshape(tuple(int(n) for n in size))
    return mask
