"""The datastore core: images, labels and their uploads, with every rule the API promises.

The servicer converts protobuf to these calls and their results back; everything else happens here:
request values are checked (``validation``), uploads are owned by an :class:`UploadRegistry` (one
writer per target, resumable by id, expiring, capped), received volumes are fully checked before they
are committed, labels must match their image's spatial shape, and info stays within its limits.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from google.protobuf import json_format

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.digests import SHA256, XXH3_128
from monailabel_api.v1 import common_pb2
from monailabel_server.core.uploads import Target, UploadRegistry
from monailabel_server.ingest import Received, receive, resolve_encoding, stage
from monailabel_server.store import ImageView, LabelView, Store, encode_token
from monailabel_server.transfer import announced_checksums, append_at, check_header_size
from monailabel_server.validation import (
    MAX_OFFSET,
    MAX_PAGE_SIZE,
    check_id,
    check_info,
    check_int,
    check_tag,
    check_upload_id,
)
from monailabel_server.volumes import shape_of, spatial_shape

__all__ = ["DatastoreCore", "UploadStatus", "FILTERS", "MAX_APPEND_BYTES"]

logger = logging.getLogger(__name__)

FILTERS = ("all", "labeled", "unlabeled")
DEFAULT_PAGE_SIZE = 100
#: Largest chunk one AppendUploadChunk carries (the server's message limit may be lower).
MAX_APPEND_BYTES = 4 << 20


@dataclass(frozen=True)
class UploadStatus:
    """Where a partial upload stands.

    Attributes:
        upload_id: its id ("" when the target has none).
        committed_size: bytes committed; a resumed stream sends chunks from here.
        total_size: bytes its stream announced.
        expire_time: epoch seconds when it is discarded unless resumed (None when there is none).
        active: whether a stream writes to it now.
    """

    upload_id: str = ""
    committed_size: int = 0
    total_size: int = 0
    expire_time: Optional[float] = None
    active: bool = False


class DatastoreCore:
    """Images, labels and uploads of one datastore.

    Args:
        datastore: the app's datastore.
        max_volume_bytes: largest volume an upload may carry (also once decompressed).
        chunk_size: largest chunk the server sends.
        upload_ttl_s: seconds a partial upload is kept.
        max_partial_uploads: uploads that may exist at once.
        on_final_label: called with the image id after a final label is saved.
        clock: epoch seconds (tests pass their own).
    """

    def __init__(
        self,
        datastore: Datastore,
        *,
        max_volume_bytes: int,
        chunk_size: int,
        upload_ttl_s: float,
        max_partial_uploads: int,
        on_final_label: Optional[Callable[[str], None]] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = Store(datastore)
        self.max_volume_bytes = max_volume_bytes
        self.chunk_size = chunk_size
        self.on_final_label = on_final_label
        self.uploads = UploadRegistry(self.store.staging_dir(), upload_ttl_s, max_partial_uploads, clock)
        # commits that compare a label's shape with its image's, or replace an image, run one at a time
        self._commit_lock = threading.Lock()

    # -- images -----------------------------------------------------------------------------------
    def list_images(self, filter_: str, tag: str, page_size: int, page_token: str) -> Tuple[List[ImageView], str, int]:
        """Returns a page of images (ordered by id), the next page's token and the total count.

        Raises:
            MONAILabelException: INVALID_INPUT for a bad filter, tag, page size or token.
        """
        if filter_ not in FILTERS:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"filter must be one of {FILTERS}",
                                      field="filter")
        size = check_int(page_size, "page_size", 0, 1 << 31) or DEFAULT_PAGE_SIZE
        return self.store.list(filter_, check_tag(tag, "label_tag"), min(size, MAX_PAGE_SIZE), page_token)

    @staticmethod
    def page_token_after(image_id: str) -> str:
        """The token of the page that follows the image ``image_id`` (for a page cut short)."""
        return encode_token(image_id)

    def get_image(self, image_id: str) -> ImageView:
        """Returns an image with its labels (NOT_FOUND when unknown)."""
        return self.store.image(image_id)

    def update_image_info(self, image_id: str, info: Mapping[str, Any]) -> ImageView:
        """Merges keys into an image's info; a key set to None is removed.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown image, INVALID_INPUT or RESOURCE_EXHAUSTED
                for info (or merged info) over its limits.
        """
        check_info(info)
        with self._commit_lock:
            current = self.store.image(image_id, compute_sha256=False).info
            check_info(_merged(current, info), "info (merged with the stored info)")
            self.store.ds.update_image_info(image_id, dict(info))
        return self.store.image(image_id)

    def delete_image(self, image_id: str) -> None:
        """Deletes an image and its labels (NOT_FOUND when unknown)."""
        with self._commit_lock:
            self.store.image(image_id, compute_sha256=False)
            self.store.ds.remove_image(image_id)

    def upload_image(
        self,
        image_id: str,
        content: common_pb2.ContentHeader,
        chunks: Iterable[common_pb2.Chunk],
        *,
        info: Mapping[str, Any],
        overwrite: bool,
        upload_id: str = "",
    ) -> ImageView:
        """Receives an image stream, checks the volume, and commits it.

        Raises:
            MONAILabelException: INVALID_INPUT for bad fields or a bad volume, ALREADY_EXISTS without
                ``overwrite``, CONFLICT while another stream uploads this image, NOT_FOUND for an
                unknown ``upload_id``, OUT_OF_RANGE for chunk offsets, RESOURCE_EXHAUSTED over limits,
                FAILED_PRECONDITION for an overwrite that would leave labels of another shape.
        """
        check_id(image_id, "header.image_id")
        info = check_info(info, "header.info")
        check_upload_id(upload_id)
        self._check_content(content)
        if not overwrite and self.store.exists(image_id):
            raise _exists(image_id)
        checksums = announced_checksums(content)
        with self.uploads.begin(Target(image_id), upload_id, content.total_size, checksums) as upload:
            # a stream checked by its XXH3-128 alone leaves the image's SHA-256 to the datastore, after
            # the answer; otherwise it is computed here (to check the announced one, or to store it)
            fast = bool(content.xxh3_128) or content.trailer_checksum == XXH3_128
            defer = fast and not content.sha256 and content.trailer_checksum != SHA256
            received = receive(content, chunks, self.store.staging_dir(), upload.id, self.max_volume_bytes,
                               want_sha256=not defer)
        try:
            with self._commit_lock:
                if self.store.exists(image_id):
                    if not overwrite:
                        raise _exists(image_id)
                    self._check_labels_still_fit(image_id, shape_of(received.volume))
                view = self.store.add_image(image_id, received.path, info, received.file_sha256, overwrite, defer)
        finally:
            received.discard()
        logger.info("uploaded image %s (%d bytes)", image_id, view.size)
        return view

    def upload_status(self, upload_id: str, image_id: str, tag: str) -> UploadStatus:
        """Returns a partial upload's status, by id or by target (empty when the target has none).

        Raises:
            MONAILabelException: NOT_FOUND for an unknown or expired ``upload_id``.
        """
        check_upload_id(upload_id, "upload_id")
        if upload_id:
            upload = self.uploads.get(upload_id)
        else:
            target = Target(check_id(image_id), check_tag(tag, "label_tag") if tag else "")
            found = self.uploads.of_target(target)
            if found is None:
                return UploadStatus()
            upload = found
        return UploadStatus(upload.id, self.uploads.committed(upload.id), upload.total_size, upload.expire_at,
                            upload.active)

    def image_file(self, image_id: str, offset: int, chunk_size: int) -> Tuple[Path, str, int]:
        """Returns an image's file, its checksum, and the chunk size to send it with.

        Raises:
            MONAILabelException: NOT_FOUND, INVALID_INPUT for a bad offset or chunk size, UNIMPLEMENTED
                for a DICOM series folder.
        """
        view = self.store.image(image_id)
        return self._file(view.path, view.sha256, offset, chunk_size)

    # -- labels -----------------------------------------------------------------------------------
    def get_label(self, image_id: str, tag: str) -> LabelView:
        """Returns a label (NOT_FOUND when unknown)."""
        return self.store.label(image_id, check_tag(tag))

    def update_label_info(self, image_id: str, tag: str, info: Mapping[str, Any]) -> LabelView:
        """Merges keys into a label's info; a key set to None is removed."""
        tag = check_tag(tag)
        check_info(info)
        with self._commit_lock:
            current = self.store.label(image_id, tag).info
            check_info(_merged(current, info), "info (merged with the stored info)")
            self.store.ds.update_label_info(image_id, tag, dict(info))
        return self.store.label(image_id, tag)

    def delete_label(self, image_id: str, tag: str) -> None:
        """Deletes a label (NOT_FOUND when unknown)."""
        tag = check_tag(tag)
        with self._commit_lock:
            self.store.label(image_id, tag)
            self.store.ds.remove_label(image_id, tag)

    def save_label(
        self,
        image_id: str,
        tag: str,
        content: common_pb2.ContentHeader,
        chunks: Iterable[common_pb2.Chunk],
        *,
        info: Mapping[str, Any],
        upload_id: str = "",
    ) -> LabelView:
        """Receives a label stream, checks it decodes and matches its image's shape, and commits it.

        Raises:
            MONAILabelException: as :meth:`upload_image`; INVALID_INPUT for a label whose spatial shape
                differs from its image's (the stored label is left as it was).
        """
        check_id(image_id, "header.image_id")
        tag = check_tag(tag, "header.tag")
        info = check_info(info, "header.info")
        check_upload_id(upload_id)
        self._check_content(content)
        self.store.image(image_id, compute_sha256=False)  # NOT_FOUND before receiving any bytes
        checksums = announced_checksums(content)
        with self.uploads.begin(Target(image_id, tag), upload_id, content.total_size, checksums) as upload:
            received = receive(content, chunks, self.store.staging_dir(), upload.id, self.max_volume_bytes)
        try:
            with self._commit_lock:
                image = self.store.image(image_id, compute_sha256=False)
                _check_label_fits(shape_of(received.volume), image)
                view = self.store.save_label(image_id, received.path, tag, info, received.file_sha256)
        finally:
            received.discard()
        if tag == DefaultLabelTag.FINAL.value and self.on_final_label is not None:
            self.on_final_label(image_id)
        return view

    def label_file(self, image_id: str, tag: str, offset: int, chunk_size: int) -> Tuple[Path, str, int]:
        """Returns a label's file, its checksum, and the chunk size to send it with."""
        view = self.store.label(image_id, check_tag(tag))
        return self._file(view.path, view.sha256, offset, chunk_size)

    def status(self) -> Dict[str, Any]:
        """Returns the datastore's counts."""
        return self.store.status()

    # -- unary uploads (create, append chunks, commit) --------------------------------------------
    def create_upload(
        self,
        kind: str,
        content: common_pb2.ContentHeader,
        *,
        image_id: str = "",
        tag: str = "",
        info: Optional[Mapping[str, Any]] = None,
        overwrite: bool = False,
    ) -> UploadStatus:
        """Creates an upload resource that unary calls fill (:meth:`append_upload`) and commit.

        It is the same kind of upload a stream makes: one writer per target, resumable by id (by a
        stream too), expiring after ``upload_ttl_s`` without a call, and counted in the cap.

        Args:
            kind: ``"image"``, ``"label"``, or ``"volume"`` (a volume to infer on, see :meth:`take_volume`).
            content: what the bytes are.
            image_id: the image to create (image) or the labeled image (label).
            tag: the label tag (label; empty means ``final``).
            info: info to store with the image or label.
            overwrite: replace an existing image.

        Returns:
            The new upload's status (nothing committed).

        Raises:
            MONAILabelException: as the stream's checks of its header (INVALID_INPUT, ALREADY_EXISTS,
                NOT_FOUND for a label's unknown image, RESOURCE_EXHAUSTED), CONFLICT while a stream
                writes to the target.
        """
        prefix = {"image": "image", "label": "label", "volume": "volume"}[kind]
        info = check_info(dict(info or {}), f"{prefix}.info") if kind != "volume" else {}
        if kind == "image":
            target = Target(check_id(image_id, "image.image_id"))
            if not overwrite and self.store.exists(image_id):
                raise _exists(image_id)
        elif kind == "label":
            target = Target(check_id(image_id, "label.image_id"), check_tag(tag, "label.tag"))
            self.store.image(image_id, compute_sha256=False)
        else:
            target = Target(uuid.uuid4().hex, volume=True)
        if content.trailer_checksum:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      "content.trailer_checksum: an upload made of calls takes its checksums in "
                                      "this header (a trailer ends a stream)", field="content.trailer_checksum")
        self._check_content(content)
        spec = {"content": json_format.MessageToDict(content), "info": info, "overwrite": bool(overwrite)}
        with self.uploads.begin(target, "", content.total_size, announced_checksums(content), spec) as upload:
            stage(content, self.store.staging_dir(), upload.id, self.max_volume_bytes)
        created = self.uploads.get(upload.id)
        return UploadStatus(created.id, 0, created.total_size, created.expire_at, False)

    def append_upload(self, upload_id: str, offset: int, data: bytes) -> Tuple[int, int]:
        """Appends one chunk at the committed size of an upload (made by a stream or by :meth:`create_upload`).

        Returns:
            ``(committed_size, total_size)`` after the chunk.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown or expired upload, CONFLICT while a stream
                writes to it, OUT_OF_RANGE for an offset other than the committed size (metadata
                ``committed_size``: a retried chunk that did arrive continues from there),
                INVALID_INPUT for a chunk over :data:`MAX_APPEND_BYTES`.
        """
        _need_upload_id(upload_id, "upload_id")
        check_int(offset, "chunk.offset", 0, MAX_OFFSET)
        if len(data) > MAX_APPEND_BYTES:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      f"a chunk may carry at most {MAX_APPEND_BYTES} bytes", field="chunk.data")
        upload = self.uploads.get(upload_id)
        with self.uploads.begin(upload.target, upload_id, upload.total_size, upload.sha256):
            return append_at(self.uploads.part_path(upload_id), offset, data)

    def commit_upload(self, upload_id: str) -> Union[ImageView, LabelView]:
        """Checks a complete image or label upload and stores it, as the end of its stream would.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown upload, FAILED_PRECONDITION for a volume
                upload, an upload a stream began, or missing bytes (reason ``UPLOAD_INCOMPLETE``);
                then as :meth:`upload_image` and :meth:`save_label`.
        """
        _need_upload_id(upload_id, "upload_id")
        upload = self._complete(upload_id)
        if upload.target.volume:
            raise MONAILabelException(
                MONAILabelError.PRECONDITION_FAILED,
                "a volume upload is not stored: infer on it (Infer with upload_id) or open a session from it",
                resource=("upload", upload_id), reason="VOLUME_UPLOAD",
            )
        content, info = self._spec_content(upload), upload.spec.get("info") or {}
        if upload.target.tag:
            return self.save_label(upload.target.image_id, upload.target.tag, content, (), info=info,
                                   upload_id=upload_id)
        return self.upload_image(upload.target.image_id, content, (), info=info,
                                 overwrite=bool(upload.spec.get("overwrite")), upload_id=upload_id)

    def take_volume(self, upload_id: str, field_name: str = "upload_id") -> Received:
        """Takes a complete volume upload out of the registry as a checked file (the caller discards it).

        Raises:
            MONAILabelException: NOT_FOUND for an unknown upload, FAILED_PRECONDITION for an image or
                label upload or missing bytes; INVALID_INPUT for a bad volume (the upload is discarded).
        """
        _need_upload_id(upload_id, field_name)
        upload = self._complete(upload_id)
        if not upload.target.volume:
            raise MONAILabelException(
                MONAILabelError.PRECONDITION_FAILED,
                f"upload is for {upload.target.kind} '{upload.target.name}': commit it, then infer on the image",
                field=field_name, reason="NOT_A_VOLUME_UPLOAD",
            )
        content = self._spec_content(upload)
        with self.uploads.begin(upload.target, upload_id, upload.total_size, upload.sha256) as held:
            return receive(content, (), self.store.staging_dir(), held.id, self.max_volume_bytes, want_sha256=False)

    def delete_upload(self, upload_id: str) -> None:
        """Discards an upload (NOT_FOUND when unknown, CONFLICT while a call writes to it)."""
        _need_upload_id(upload_id, "upload_id")
        self.uploads.discard(upload_id)

    def _complete(self, upload_id: str) -> Any:
        """The upload, once every byte it announced is committed."""
        upload = self.uploads.get(upload_id)
        if not upload.spec:
            raise MONAILabelException(
                MONAILabelError.PRECONDITION_FAILED,
                "this upload was begun by a stream: finish it with a stream that names its upload_id",
                resource=("upload", upload_id), reason="STREAM_UPLOAD",
            )
        committed = self.uploads.committed(upload_id)
        if committed != upload.total_size:
            raise MONAILabelException(
                MONAILabelError.PRECONDITION_FAILED,
                f"the upload holds {committed} of its {upload.total_size} bytes; append the rest from offset "
                f"{committed}", resource=("upload", upload_id), reason="UPLOAD_INCOMPLETE",
                metadata={"committed_size": str(committed), "total_size": str(upload.total_size)},
            )
        return upload

    @staticmethod
    def _spec_content(upload: Any) -> common_pb2.ContentHeader:
        return json_format.ParseDict(upload.spec.get("content") or {}, common_pb2.ContentHeader())

    # -- helpers ----------------------------------------------------------------------------------
    def _check_content(self, content: common_pb2.ContentHeader) -> None:
        resolve_encoding(content)
        check_header_size(content, self.max_volume_bytes)

    def _file(self, path: str, sha256: str, offset: int, chunk_size: int) -> Tuple[Path, str, int]:
        check_int(offset, "offset", 0, MAX_OFFSET)
        check_int(chunk_size, "chunk_size", 0, 1 << 31)
        file = Path(path)
        if file.is_dir():
            raise MONAILabelException(
                MONAILabelError.UNIMPLEMENTED, "downloading a DICOM series folder is not supported; read it in place"
            )
        return file, sha256, min(chunk_size or self.chunk_size, self.chunk_size)

    def _check_labels_still_fit(self, image_id: str, new_shape: Tuple[int, ...]) -> None:
        """Refuses an overwrite that changes the spatial shape of an image that has labels."""
        image = self.store.image(image_id, compute_sha256=False)
        if not image.labels or not new_shape:
            return
        old_shape = spatial_shape(Path(image.path))
        if old_shape is not None and tuple(old_shape) != tuple(new_shape):
            tags = ", ".join(sorted(lv.tag for lv in image.labels))
            raise MONAILabelException(
                MONAILabelError.PRECONDITION_FAILED,
                f"image '{image_id}' has labels ({tags}) of shape {list(old_shape)}; the new image has shape "
                f"{list(new_shape)}. Delete its labels first, or upload an image of the same shape",
                resource=("image", image_id),
                reason="LABELS_WOULD_NOT_MATCH",
            )


def _check_label_fits(label_shape: Tuple[int, ...], image: ImageView) -> None:
    """Rejects a label whose spatial shape differs from its image's (for every format the server reads)."""
    image_shape = spatial_shape(Path(image.path))
    if image_shape is None or not label_shape:
        return
    n = len(image_shape)
    if tuple(label_shape[:n]) != tuple(image_shape):
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT,
            f"label shape {list(label_shape)} does not match image shape {list(image_shape)}",
            field="header.content",
        )


def _need_upload_id(upload_id: str, field_name: str) -> str:
    """Checks an upload id that must be set."""
    if not upload_id:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{field_name} is required", field=field_name)
    return check_upload_id(upload_id, field_name)


def _exists(image_id: str) -> MONAILabelException:
    return MONAILabelException(
        MONAILabelError.ALREADY_EXISTS, f"image '{image_id}' exists; set overwrite to replace it",
        resource=("image", image_id),
    )


def _merged(old: Mapping[str, Any], new: Mapping[str, Any]) -> Dict[str, Any]:
    merged = {**old, **new}
    return {k: v for k, v in merged.items() if v is not None}
