"""Receives a volume stream (header, then chunks) into a checked file, for every RPC that takes one."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import grpc

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.digests import HEX_DIGITS, SHA256, SUPPORTED, XXH3_128, is_hex_digest
from monailabel_api.v1 import common_pb2
from monailabel_server.convert import EXTENSION_BY_ENCODING, encoding_of_name
from monailabel_server.file_digests import FILE_DIGESTS
from monailabel_server.transfer import StagedUpload, check_header_size
from monailabel_server.validation import check_enum, shown
from monailabel_server.volumes import VolumeInfo, inspect_volume, nifti_prefix_for_raw

__all__ = ["Received", "receive", "stage", "chunks_of", "header_of", "resolve_encoding"]


@dataclass
class Received:
    """A whole, checked volume file in the staging folder.

    Attributes:
        path: the file, named with its extension.
        encoding: its encoding (raw voxels arrive as a ``.nii`` file).
        file_sha256: SHA-256 of the file's bytes, when it was computed and equals the stream's (not
            for raw voxels); "" when the caller did not want it and the stream announced none.
        volume: what the file holds.
    """

    path: Path
    encoding: int
    file_sha256: str
    volume: VolumeInfo

    def discard(self) -> None:
        """Removes the file if it is still in staging."""
        self.path.unlink(missing_ok=True)


def header_of(first: Any, kind: str) -> Any:
    """Returns the header of a stream's first message.

    Args:
        first: the first request message, or None when the stream was empty.
        kind: the RPC's name, for the message.

    Raises:
        MONAILabelException: INVALID_INPUT when the stream is empty or starts with a chunk.
    """
    if first is None or not first.HasField("header"):
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{kind}: the first message must be the header")
    return first.header


class StreamChunks:
    """The chunks of the rest of a request stream, and the ``ContentTrailer`` that may end it.

    Iterating raises INVALID_INPUT when a second header comes, or anything after the trailer.

    Args:
        requests: the stream after its header.
        kind: the RPC's name, for messages.
    """

    def __init__(self, requests: Iterable[Any], kind: str) -> None:
        self._requests = requests
        self.kind = kind
        self.trailer: Optional[common_pb2.ContentTrailer] = None

    def __iter__(self) -> Iterator[common_pb2.Chunk]:
        for message in self._requests:
            if self.trailer is not None:
                raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{self.kind}: nothing may follow the trailer",
                                          field="trailer")
            part = message.WhichOneof("part")
            if part == "chunk":
                yield message.chunk
            elif part == "trailer":
                self.trailer = message.trailer
            else:
                raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                          f"{self.kind}: only chunks, then a trailer, may follow the header")


def chunks_of(requests: Iterable[Any], kind: str) -> StreamChunks:
    """The chunks of the rest of a request stream (and its trailer, once they are read)."""
    return StreamChunks(requests, kind)


def resolve_encoding(content: common_pb2.ContentHeader) -> int:
    """Returns the content's encoding, guessed from its file extension when unset.

    Raises:
        MONAILabelException: INVALID_INPUT when the value is unknown or neither says what the bytes are.
    """
    check_enum(content.encoding, "content.encoding", [int(v) for v in common_pb2.Encoding.values()][1:],
               names={int(v): common_pb2.Encoding.Name(v) for v in common_pb2.Encoding.values()})
    if content.file_extension:
        _own_extension(content)  # a short ".ext" of letters and digits, or nothing: never a path
    encoding = content.encoding or encoding_of_name(content.file_extension[:32])
    if encoding == common_pb2.ENCODING_UNSPECIFIED:
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT,
            "content.encoding is unset and content.file_extension names no known format",
            field="content.encoding",
        )
    return encoding


def receive(
    content: common_pb2.ContentHeader,
    chunks: Iterable[common_pb2.Chunk],
    staging: Path,
    key: Optional[str],
    max_bytes: int,
    want_sha256: bool = True,
) -> Received:
    """Streams chunks into a staging file and checks the result is a whole volume of its encoding.

    The volume is fully checked (see ``volumes.inspect_volume``) before it is returned, so a caller
    commits only checked files; a file that fails is removed.

    Args:
        content: the stream's header.
        chunks: the chunks that follow it.
        staging: the staging folder.
        key: the upload id of a resumable upload (its staging file's name); None for a one-off stream.
        max_bytes: the server's volume limit.
        want_sha256: compute the SHA-256 even when the stream announces none (to store it).

    Returns:
        The received file.

    Raises:
        MONAILabelException: INVALID_INPUT, OUT_OF_RANGE or RESOURCE_EXHAUSTED for bad streams.
    """
    encoding = resolve_encoding(content)
    check_header_size(content, max_bytes)
    if content.trailer_checksum and not isinstance(chunks, StreamChunks):
        raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                  "content.trailer_checksum: this call takes its checksums in the header; a trailer "
                                  "ends UploadImage, SaveLabel and CreateSession streams only",
                                  field="content.trailer_checksum")
    prefix = _prefix(content, encoding, max_bytes)
    if encoding == common_pb2.ENCODING_IMAGE_2D:
        ext = ".img"  # renamed to the extension of the format it decodes as
    elif encoding == common_pb2.ENCODING_DICOM_ZIP:
        ext = ".archive"  # a zip or tar of one series, converted to NIfTI once whole
    else:
        ext = EXTENSION_BY_ENCODING.get(encoding) or _own_extension(content)
    resumable = key is not None
    part = staging / (f"{key}.part" if resumable else f"{uuid.uuid4().hex}.part")
    upload = StagedUpload(part, content.total_size, content.sha256, prefix, resumable, content.xxh3_128,
                          want_sha256 or content.trailer_checksum == SHA256, content.trailer_checksum).open()
    try:
        for chunk in chunks:
            upload.write(chunk.offset, chunk.data)
        if upload.committed == upload.total_size:
            _take_trailer(upload, content, chunks.trailer if isinstance(chunks, StreamChunks) else None)
    except MONAILabelException as exc:
        upload.suspend() if exc.error == MONAILabelError.OUT_OF_RANGE else upload.discard()
        raise
    except grpc.RpcError as exc:  # the client went away: keep what is committed for a resume
        upload.suspend()
        raise MONAILabelException(MONAILabelError.CANCELLED, "the client ended the stream") from exc
    except BaseException:
        upload.suspend()
        raise
    digests = upload.finish()
    digest = digests.get(SHA256, "")
    name = uuid.uuid4().hex
    path = staging / f"{name}{ext}"
    os.replace(part, path)
    if not prefix and encoding != common_pb2.ENCODING_DICOM_ZIP:  # the file holds exactly the stream's bytes
        FILE_DIGESTS.remember(path, digests[XXH3_128])
    if encoding == common_pb2.ENCODING_DICOM_ZIP:
        path, encoding, digest = _series_to_nifti(path, staging / f"{name}.nii.gz", max_bytes), \
            common_pb2.ENCODING_NIFTI_GZ, ""
    try:
        volume = inspect_volume(path, encoding, max_bytes)
        if volume.ext and volume.ext != ext:
            renamed = staging / f"{name}{volume.ext}"
            os.replace(path, renamed)
            path = renamed
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Received(path, encoding, "" if prefix else digest, volume)


def _take_trailer(upload: StagedUpload, content: common_pb2.ContentHeader,
                  trailer: Optional[common_pb2.ContentTrailer]) -> None:
    """Sets the checksum a whole stream's trailer carries as the one its upload must match.

    Raises:
        MONAILabelException: OUT_OF_RANGE when the header announced a trailer and none came (the
            bytes are kept: a stream that resumes may still send it); INVALID_INPUT for a trailer the
            header did not announce, or one that carries other or malformed checksums.
    """
    name = content.trailer_checksum
    if trailer is None:
        if name:
            raise MONAILabelException(MONAILabelError.OUT_OF_RANGE,
                                      f"the stream ended without the trailer its header announced ({name}); resume "
                                      "the upload and end it with the trailer", field="trailer",
                                      reason="TRAILER_MISSING")
        return
    if not name:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                  "a trailer ended a stream whose header announced none (content.trailer_checksum)",
                                  field="trailer")
    for other in SUPPORTED:
        value = getattr(trailer, other)
        if other != name and value:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      f"trailer.{other} is set; the header announced a trailer with {name}",
                                      field=f"trailer.{other}")
        if other == name and not is_hex_digest(value, name):
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      f"trailer.{name} must be {HEX_DIGITS[name]} lower-case hex digits",
                                      field=f"trailer.{name}")
    upload.expect(name, getattr(trailer, name))


def _series_to_nifti(archive: Path, output: Path, max_bytes: int) -> Path:
    """Converts a received zip or tar of one DICOM series to a NIfTI volume; the archive is removed.

    Raises:
        MONAILabelException: INVALID_INPUT for an archive that is not one, RESOURCE_EXHAUSTED when its
            members add up to more than ``max_bytes`` (checked before anything is extracted),
            PRECONDITION_FAILED for a series that is not a volume.
    """
    import tarfile
    import zipfile

    from monailabel.datastore.dicom import series_archive_to_nifti

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                unpacked = sum(i.file_size for i in z.infolist())
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                unpacked = sum(m.size for m in t.getmembers())
        else:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "the DICOM series is not a zip or tar archive",
                                      field="content.encoding")
        if unpacked > max_bytes:
            raise MONAILabelException(
                MONAILabelError.RESOURCE_EXHAUSTED,
                f"the archive unpacks to {unpacked} bytes; this server's limit is {max_bytes}",
                field="content.total_size", reason="VOLUME_TOO_LARGE")
        series_archive_to_nifti(archive, output)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        output.unlink(missing_ok=True)
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"cannot read the DICOM archive: {exc}",
                                  field="content") from exc
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    finally:
        archive.unlink(missing_ok=True)
    return output


def stage(content: common_pb2.ContentHeader, staging: Path, key: str, max_bytes: int) -> None:
    """Creates the empty staging file of a resumable upload, as :func:`receive` would open it.

    Unary calls then append to it (``transfer.append_at``) and :func:`receive` with no chunks
    commits it.

    Args:
        content: the upload's header.
        staging: the staging folder.
        key: the upload id.
        max_bytes: the server's volume limit.

    Raises:
        MONAILabelException: INVALID_INPUT or RESOURCE_EXHAUSTED for a bad header.
    """
    encoding = resolve_encoding(content)
    check_header_size(content, max_bytes)
    if encoding not in EXTENSION_BY_ENCODING and encoding != common_pb2.ENCODING_IMAGE_2D:
        _own_extension(content)
    prefix = _prefix(content, encoding, max_bytes)
    StagedUpload(staging / f"{key}.part", content.total_size, content.sha256, prefix, True,
                 content.xxh3_128).open().suspend()


def _prefix(content: common_pb2.ContentHeader, encoding: int, max_bytes: int) -> bytes:
    """Bytes the staging file holds before the stream's: a NIfTI header for raw voxels."""
    return nifti_prefix_for_raw(content, max_bytes) if encoding == common_pb2.ENCODING_RAW else b""


def _own_extension(content: common_pb2.ContentHeader) -> str:
    ext = content.file_extension.lower()
    if not ext.startswith(".") or len(ext) > 8 or not ext[1:].replace(".", "").isalnum():
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"file_extension {shown(ext)} is not valid",
                                  field="content.file_extension")
    return ext
