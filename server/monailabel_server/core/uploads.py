"""Uploads as resources: an id each, one writer per target, an expiry, a cap, and no debris.

An upload writes into the staging file ``<upload_id>.part`` (with the transfer's own state in
``<upload_id>.part.json``) and is described by ``<upload_id>.upload.json`` (its target and expiry), so
partial uploads survive a restart. Two streams never share a file: a stream with an empty upload id
starts a new upload, a stream that names an id resumes exactly that upload, and while one stream
writes to a target (an image, or an image's label of one tag) any other stream for that target is
refused with CONFLICT. Expired partial uploads are swept at startup and whenever an upload begins
(bounded by the cap); at startup, staging files that belong to no live upload are removed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.utils.others.atomic import atomic_write_json

__all__ = ["Target", "Upload", "UploadRegistry"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What an upload writes: an image, or the label of an image under a tag.

    Attributes:
        image_id: the image id (for a volume, a key of its own that names no image).
        tag: the label tag; "" for the image itself.
        volume: a volume to infer on (an unary upload's, see ``DatastoreCore.create_upload``), not
            a datastore resource.
    """

    image_id: str
    tag: str = ""
    volume: bool = False

    @property
    def kind(self) -> str:
        """``"image"``, ``"label"`` or ``"volume"``."""
        return "volume" if self.volume else "label" if self.tag else "image"

    @property
    def name(self) -> str:
        """The resource name clients see, as ``ct_01`` or ``ct_01/final``."""
        return f"{self.image_id}/{self.tag}" if self.tag else self.image_id


@dataclass
class Upload:
    """One upload, partial or being written.

    Attributes:
        id: the upload id (32 hex digits).
        target: what it writes.
        total_size: bytes its stream announced.
        sha256: checksum its stream announced ("" for none).
        expire_at: epoch seconds after which a partial upload is discarded.
        active: whether a stream writes to it now.
        spec: what the unary calls that created it asked for (content header, info, overwrite), to
            commit it with; empty for an upload a stream began.
    """

    id: str
    target: Target
    total_size: int
    sha256: str
    expire_at: float
    active: bool = False
    spec: Dict[str, Any] = field(default_factory=dict)


class UploadRegistry:
    """Owns the partial uploads of one staging folder.

    Args:
        staging: the staging folder (created when missing).
        ttl_s: seconds a partial upload is kept after its last stream ended.
        max_uploads: partial and active uploads that may exist at once.
        clock: returns epoch seconds (tests pass their own).
    """

    def __init__(self, staging: Path, ttl_s: float, max_uploads: int, clock: Callable[[], float] = time.time) -> None:
        self.staging = staging
        self.ttl_s = ttl_s
        self.max_uploads = max_uploads
        self.clock = clock
        self._lock = threading.Lock()
        self._uploads: Dict[str, Upload] = {}
        self._by_target: Dict[Target, str] = {}
        staging.mkdir(parents=True, exist_ok=True)
        self._load()

    # -- queries ----------------------------------------------------------------------------------
    def get(self, upload_id: str) -> Upload:
        """Returns a live upload by id.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown or expired id.
        """
        with self._lock:
            self._sweep()
            upload = self._uploads.get(upload_id)
            if upload is None:
                raise _not_found(upload_id)
            return _copy(upload)

    def of_target(self, target: Target) -> Optional[Upload]:
        """Returns the live upload of a target, or None."""
        with self._lock:
            self._sweep()
            upload_id = self._by_target.get(target)
            return _copy(self._uploads[upload_id]) if upload_id else None

    def committed(self, upload_id: str) -> int:
        """Bytes of an upload's stream that its staging file holds (as a resumed stream would find them)."""
        from monailabel_server.transfer import StagedUpload

        return StagedUpload.status(self.part_path(upload_id))[0]

    def part_path(self, upload_id: str) -> Path:
        """The staging file of an upload."""
        return self.staging / f"{upload_id}.part"

    def __len__(self) -> int:
        with self._lock:
            return len(self._uploads)

    # -- writing ----------------------------------------------------------------------------------
    @contextmanager
    def begin(self, target: Target, upload_id: str, total_size: int, sha256: str,
              spec: Optional[Dict[str, Any]] = None) -> Iterator[Upload]:
        """Makes the caller the one writer of a target for the duration of the block.

        An empty ``upload_id`` starts a new upload (an idle partial upload of the same target is
        discarded); a set one resumes that upload, whose target, size and checksum must match. When
        the block ends, the upload is forgotten if its staging file is gone (finished or discarded),
        and kept as a partial upload with a new expiry otherwise.

        Args:
            target: what the upload writes.
            upload_id: "" for a new upload, or the id of a partial upload to resume.
            total_size: bytes the stream announces.
            sha256: checksum the stream announces.
            spec: for a new upload, what its unary calls asked for (kept with it, see :class:`Upload`).

        Yields:
            The upload (write to :meth:`part_path` of its id).

        Raises:
            MONAILabelException: CONFLICT when a stream writes to the target already, NOT_FOUND for an
                unknown or expired ``upload_id``, INVALID_INPUT when the header does not match the
                upload it resumes, RESOURCE_EXHAUSTED when the cap of partial uploads is reached.
        """
        upload = self._acquire(target, upload_id, total_size, sha256, spec or {})
        try:
            yield upload
        except MONAILabelException as exc:
            if exc.error == MONAILabelError.OUT_OF_RANGE:  # the client resumes with this id
                exc.metadata["upload_id"] = upload.id
            raise
        finally:
            self._release(upload)

    def _acquire(self, target: Target, upload_id: str, total_size: int, sha256: str, spec: Dict[str, Any]) -> Upload:
        stale: Optional[str] = None
        with self._lock:
            self._sweep()
            current_id = self._by_target.get(target)
            current = self._uploads.get(current_id) if current_id else None
            if current is not None and current.active:
                raise MONAILabelException(
                    MONAILabelError.CONFLICT,
                    f"another upload to {target.kind} '{target.name}' is in progress; "
                    "wait for it to end, then resume it by its upload_id or start a new one",
                    resource=(f"{target.kind}_upload", target.name),
                    reason="UPLOAD_IN_PROGRESS",
                )
            if upload_id:
                upload = self._uploads.get(upload_id)
                if upload is None:
                    raise _not_found(upload_id)
                if upload.target != target:
                    raise MONAILabelException(
                        MONAILabelError.INVALID_INPUT,
                        f"upload_id belongs to an upload to {upload.target.kind} '{upload.target.name}', "
                        f"not to {target.kind} '{target.name}'",
                        field="header.upload_id",
                    )
                if (upload.total_size, upload.sha256) != (total_size, sha256):
                    raise MONAILabelException(
                        MONAILabelError.INVALID_INPUT,
                        "the header announces another size or checksum than the upload it resumes; "
                        "send the same content, or leave upload_id empty to start over",
                        field="header.content",
                    )
            else:
                if current is not None:  # a new upload replaces the target's idle partial upload
                    stale = current.id
                    self._forget(current.id)
                if len(self._uploads) >= self.max_uploads:
                    raise MONAILabelException(
                        MONAILabelError.RESOURCE_EXHAUSTED,
                        f"this server holds {self.max_uploads} partial uploads already; "
                        "finish or let some expire first",
                        retry_after_s=60.0,
                    )
                upload = Upload(uuid.uuid4().hex, target, total_size, sha256, 0.0, spec=dict(spec))
                self._uploads[upload.id] = upload
                self._by_target[target] = upload.id
            upload.active = True
            upload.expire_at = self.clock() + self.ttl_s
            acquired = _copy(upload)
        if stale:
            self._remove_files(stale)
        self._write_meta(acquired)
        return acquired

    def _release(self, upload: Upload) -> None:
        kept = self.part_path(upload.id).exists()
        with self._lock:
            live = self._uploads.get(upload.id)
            if live is None:
                return
            live.active = False
            live.expire_at = self.clock() + self.ttl_s
            if not kept:
                self._forget(upload.id)
            released = _copy(live)
        if kept:
            self._write_meta(released)
        else:
            self._remove_files(upload.id)

    # -- cleaning ---------------------------------------------------------------------------------
    def discard(self, upload_id: str) -> None:
        """Discards a partial upload and its files.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown or expired id, CONFLICT while a call writes to it.
        """
        with self._lock:
            self._sweep()
            upload = self._uploads.get(upload_id)
            if upload is None:
                raise _not_found(upload_id)
            if upload.active:
                raise MONAILabelException(
                    MONAILabelError.CONFLICT, "a call is writing to this upload; delete it once that call ended",
                    resource=("upload", upload_id), reason="UPLOAD_IN_PROGRESS",
                )
            self._forget(upload_id)
        self._remove_files(upload_id)

    def sweep(self) -> int:
        """Discards expired partial uploads; returns how many."""
        with self._lock:
            return self._sweep()

    def _sweep(self) -> int:
        """Discards expired idle uploads (the caller holds the lock); the work is bounded by the cap."""
        now = self.clock()
        expired = [u.id for u in self._uploads.values() if not u.active and u.expire_at <= now]
        for upload_id in expired:
            self._forget(upload_id)
            self._remove_files(upload_id)
        if expired:
            logger.info("discarded %d expired partial uploads", len(expired))
        return len(expired)

    def _forget(self, upload_id: str) -> None:
        upload = self._uploads.pop(upload_id, None)
        if upload is not None and self._by_target.get(upload.target) == upload_id:
            del self._by_target[upload.target]

    def _remove_files(self, upload_id: str) -> None:
        for suffix in (".part", ".part.json", ".upload.json"):
            (self.staging / f"{upload_id}{suffix}").unlink(missing_ok=True)

    def _write_meta(self, upload: Upload) -> None:
        atomic_write_json(self.staging / f"{upload.id}.upload.json", {
            "image_id": upload.target.image_id, "tag": upload.target.tag, "total_size": upload.total_size,
            "sha256": upload.sha256, "expire_at": upload.expire_at, "volume": upload.target.volume,
            "spec": upload.spec,
        })

    def _load(self) -> None:
        """Takes up the partial uploads a previous run left; removes expired ones and every other file."""
        now = self.clock()
        for meta in sorted(self.staging.glob("*.upload.json")):
            upload_id = meta.name[: -len(".upload.json")]
            try:
                state = json.loads(meta.read_text())
                upload = Upload(upload_id, Target(str(state["image_id"]), str(state["tag"]), bool(state.get("volume"))),
                                int(state["total_size"]), str(state["sha256"]), float(state["expire_at"]),
                                spec=dict(state.get("spec") or {}))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if upload.expire_at > now and self.part_path(upload_id).exists() and len(self._uploads) < self.max_uploads \
                    and upload.target not in self._by_target:
                self._uploads[upload_id] = upload
                self._by_target[upload.target] = upload_id
        live = {f"{i}{s}" for i in self._uploads for s in (".part", ".part.json", ".upload.json")}
        removed = 0
        for path in self.staging.iterdir():
            if path.name not in live and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            logger.info("removed %d staging files of no live upload", removed)


def _copy(upload: Upload) -> Upload:
    return Upload(upload.id, upload.target, upload.total_size, upload.sha256, upload.expire_at, upload.active,
                  dict(upload.spec))


def _not_found(upload_id: str) -> MONAILabelException:
    return MONAILabelException(
        MONAILabelError.NOT_FOUND,
        "no partial upload with that upload_id: it finished, expired or was replaced; start a new upload",
        resource=("upload", upload_id),
    )
