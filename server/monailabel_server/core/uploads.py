"""Uploads as resources: an id each, one writer per target, an expiry, a cap, and no debris.

An upload writes into the staging file ``<upload_id>.part`` (with the transfer's own state in
``<upload_id>.part.json``) and is described by a row in the database (its target, expiry, writer and
committed bytes), so partial uploads survive a restart and, with a shared database and studies
folder, resume on any replica. Two streams never share a file: a stream with an empty upload id
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
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from monailabel.db import Migration, database_url, migrate, open_database
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

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


_MIGRATIONS = [
    Migration(1, "upload resources", [
        "CREATE TABLE IF NOT EXISTS uploads (upload_id TEXT PRIMARY KEY, image_id TEXT NOT NULL, tag TEXT NOT NULL, "
        "total_size INTEGER NOT NULL, sha256 TEXT NOT NULL, expire_at REAL NOT NULL, owner TEXT NOT NULL DEFAULT '', "
        "committed INTEGER NOT NULL DEFAULT 0, UNIQUE (image_id, tag))",
    ]),
    # unary uploads (browsers): volumes to infer on, and what their create call asked for
    Migration(2, "volume uploads and unary upload specs", [
        "ALTER TABLE uploads ADD COLUMN volume INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE uploads ADD COLUMN spec TEXT NOT NULL DEFAULT '{}'",
    ]),
]
_COLUMNS = "upload_id, image_id, tag, total_size, sha256, expire_at, owner, volume, spec"


class UploadRegistry:
    """Owns the partial uploads of one staging folder, recorded in the database.

    The database is the one ``MONAI_LABEL_DATABASE_URL`` names (shared by replicas, whose staging folder
    is the shared studies folder's), else an SQLite file next to the staging folder. An upload being
    written records its writer (``owner``); a writer that is no longer alive (see :meth:`attach_replica`)
    does not hold its upload, so a stream broken by a dead replica resumes on another.

    Args:
        staging: the staging folder (created when missing).
        ttl_s: seconds a partial upload is kept after its last stream ended.
        max_uploads: partial and active uploads that may exist at once.
        clock: returns epoch seconds (tests pass their own).
        url: the database; empty for ``MONAI_LABEL_DATABASE_URL`` or else ``<staging>.uploads.db``.
    """

    def __init__(self, staging: Path, ttl_s: float, max_uploads: int, clock: Callable[[], float] = time.time,
                 url: str = "") -> None:
        self.staging = staging
        self.ttl_s = ttl_s
        self.max_uploads = max_uploads
        self.clock = clock
        staging.mkdir(parents=True, exist_ok=True)
        self.db = open_database(url or database_url(staging.with_name(staging.name + ".uploads.db")))
        migrate(self.db, "uploads", _MIGRATIONS)
        # the writer id of this registry; other writers count as gone unless a replica registry says otherwise
        self.owner = uuid.uuid4().hex
        self._alive: Callable[[str], bool] = lambda owner: owner == self.owner
        self._load()
        # expired partial uploads go on time even when no call comes: a daemon sweeps them
        self._closed = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_forever, name="upload-sweeper", daemon=True)
        self._sweeper.start()

    def attach_replica(self, replica_id: str, alive: Callable[[str], bool]) -> None:
        """Names writers by replica, so an upload held by a live replica (any) stays held.

        Args:
            replica_id: this replica.
            alive: tells whether a replica is alive.
        """
        self.owner = replica_id
        self._alive = lambda owner: owner == replica_id or alive(owner)

    def close(self) -> None:
        """Stops the sweeper and closes the database."""
        self._closed.set()
        self._sweeper.join(timeout=5)
        self.db.close()

    def _sweep_forever(self) -> None:
        interval = min(max(self.ttl_s / 4, 0.5), 60.0)
        while not self._closed.wait(interval):
            try:
                self.sweep()
            except Exception:  # a database hiccup: the next round tries again
                logger.exception("sweeping expired uploads failed")

    # -- queries ----------------------------------------------------------------------------------
    def _upload(self, row: Any) -> Upload:
        owner = str(row[6])
        return Upload(str(row[0]), Target(str(row[1]), str(row[2]), bool(row[7])), int(row[3]), str(row[4]),
                      float(row[5]), bool(owner) and self._alive(owner), dict(json.loads(str(row[8]) or "{}")))

    def _row(self, upload_id: str) -> Optional[Upload]:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone()
        return self._upload(row) if row is not None else None

    def _of_target(self, target: Target) -> Optional[Upload]:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM uploads WHERE image_id = ? AND tag = ?",
                              (target.image_id, target.tag)).fetchone()
        return self._upload(row) if row is not None else None

    def get(self, upload_id: str) -> Upload:
        """Returns a live upload by id.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown or expired id.
        """
        self.sweep()
        upload = self._row(upload_id)
        if upload is None:
            raise _not_found(upload_id)
        return upload

    def of_target(self, target: Target) -> Optional[Upload]:
        """Returns the live upload of a target, or None."""
        self.sweep()
        return self._of_target(target)

    def committed(self, upload_id: str) -> int:
        """Bytes of an upload's stream that its staging file holds (as a resumed stream would find them)."""
        from monailabel_server.transfer import StagedUpload

        return StagedUpload.status(self.part_path(upload_id))[0]

    def part_path(self, upload_id: str) -> Path:
        """The staging file of an upload."""
        return self.staging / f"{upload_id}.part"

    def stats(self) -> Tuple[int, int]:
        """Returns the number of partial uploads and the bytes their streams have committed (as of their last end)."""
        row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(committed), 0) FROM uploads").fetchone()
        return int(row[0]), int(row[1])

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM uploads").fetchone()[0])

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
        self.sweep()
        with self.db.write(lock="uploads"):
            current = self._of_target(target)
            if current is not None and current.active:
                raise MONAILabelException(
                    MONAILabelError.CONFLICT,
                    f"another upload to {target.kind} '{target.name}' is in progress; "
                    "wait for it to end, then resume it by its upload_id or start a new one",
                    resource=(f"{target.kind}_upload", target.name),
                    reason="UPLOAD_IN_PROGRESS",
                )
            expire_at = self.clock() + self.ttl_s
            if upload_id:
                upload = self._row(upload_id)
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
                self.db.execute("UPDATE uploads SET owner = ?, expire_at = ? WHERE upload_id = ?",
                                (self.owner, expire_at, upload.id))
            else:
                if current is not None:  # a new upload replaces the target's idle partial upload
                    stale = current.id
                    self.db.execute("DELETE FROM uploads WHERE upload_id = ?", (current.id,))
                if len(self) >= self.max_uploads:
                    raise MONAILabelException(
                        MONAILabelError.RESOURCE_EXHAUSTED,
                        f"this server holds {self.max_uploads} partial uploads already; "
                        "finish or let some expire first",
                        retry_after_s=60.0,
                    )
                upload = Upload(uuid.uuid4().hex, target, total_size, sha256, expire_at, spec=dict(spec))
                self.db.execute(
                    f"INSERT INTO uploads ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (upload.id, target.image_id, target.tag, total_size, sha256, expire_at, self.owner,
                     int(target.volume), json.dumps(upload.spec)),
                )
        if stale:
            self._remove_files(stale)
        return Upload(upload.id, target, total_size, sha256, expire_at, True, dict(upload.spec))

    def _release(self, upload: Upload) -> None:
        kept = self.part_path(upload.id).exists()
        if kept:
            self.db.execute(
                "UPDATE uploads SET owner = '', expire_at = ?, committed = ? WHERE upload_id = ? AND owner = ?",
                (self.clock() + self.ttl_s, self.committed(upload.id), upload.id, self.owner),
            )
        else:
            self.db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload.id,))
            self._remove_files(upload.id)

    def discard(self, upload_id: str) -> None:
        """Discards a partial upload and its files.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown or expired id, CONFLICT while a call writes to it.
        """
        with self.db.write(lock="uploads"):
            upload = self._row(upload_id)
            if upload is None or upload.expire_at <= self.clock() and not upload.active:
                raise _not_found(upload_id)
            if upload.active:
                raise MONAILabelException(
                    MONAILabelError.CONFLICT, "a call is writing to this upload; delete it once that call ended",
                    resource=("upload", upload_id), reason="UPLOAD_IN_PROGRESS",
                )
            self.db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        self._remove_files(upload_id)

    # -- cleaning ---------------------------------------------------------------------------------
    def sweep(self) -> int:
        """Discards expired partial uploads (whose writer, if any, is gone); returns how many."""
        now = self.clock()
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM uploads WHERE expire_at <= ?", (now,)).fetchall()
        expired = [u.id for u in map(self._upload, rows) if not u.active]
        for upload_id in expired:
            if self.db.execute("DELETE FROM uploads WHERE upload_id = ? AND expire_at <= ?",
                               (upload_id, now)).rowcount:
                self._remove_files(upload_id)
        if expired:
            logger.info("discarded %d expired partial uploads", len(expired))
        return len(expired)

    def _remove_files(self, upload_id: str) -> None:
        for suffix in (".part", ".part.json", ".upload.json"):
            (self.staging / f"{upload_id}{suffix}").unlink(missing_ok=True)

    def _load(self) -> None:
        """Drops expired uploads and uploads whose staging file is gone; removes files of no upload.

        A file belongs to an upload when its name starts with the upload's id (a staging file, its
        state, or a temporary file of either); uploads are recorded before their files are written, so
        this never removes the file of an upload another replica is starting. A partial upload lives
        at most this server's ``ttl_s`` from now, whatever lifetime the server that wrote it gave it.
        """
        latest = self.clock() + self.ttl_s
        self.db.execute("UPDATE uploads SET expire_at = ? WHERE expire_at > ?", (latest, latest))
        self.sweep()
        for row in self.db.execute(f"SELECT {_COLUMNS} FROM uploads").fetchall():
            upload = self._upload(row)
            if not upload.active and not self.part_path(upload.id).exists():
                self.db.execute("DELETE FROM uploads WHERE upload_id = ? AND owner = ''", (upload.id,))
        known = {str(r[0]) for r in self.db.execute("SELECT upload_id FROM uploads").fetchall()}
        removed = 0
        for path in self.staging.iterdir():
            if path.name.lstrip(".")[:32] not in known and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            logger.info("removed %d staging files of no live upload", removed)


def _not_found(upload_id: str) -> MONAILabelException:
    return MONAILabelException(
        MONAILabelError.NOT_FOUND,
        "no partial upload with that upload_id: it finished, expired or was replaced; start a new upload",
        resource=("upload", upload_id),
    )
