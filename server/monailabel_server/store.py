"""What the servicers need of a datastore, on top of MONAI Label's Datastore API.

The server reads and writes through :class:`~monailabel.interfaces.records.RecordDatastore` (records
with size and checksum, keyset paging, a staging folder on the datastore's filesystem so that a
finished upload is renamed into place). The local datastore implements it; any other Datastore an
app brings is adapted by :class:`~monailabel.interfaces.records.PlainRecords`.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from monailabel.datastore.records import ImageRecord, LabelRecord
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.records import RecordDatastore, records_of
from monailabel_server.validation import MAX_ID_CHARS, check_id

__all__ = ["Store", "ImageView", "LabelView", "check_id", "encode_token", "decode_token"]

logger = logging.getLogger(__name__)
_MAX_PENDING_DIGESTS = 10_000

@dataclass
class LabelView:
    """A label as the API shows it."""

    image_id: str
    tag: str
    info: Dict[str, Any]
    size: int
    sha256: str
    ext: str
    path: str


@dataclass
class ImageView:
    """An image as the API shows it."""

    id: str
    info: Dict[str, Any]
    size: int
    sha256: str
    ext: str
    path: str
    labels: List[LabelView] = field(default_factory=list)


class Store:
    """Adapts a Datastore for the servicers, through the record interface the server needs.

    Args:
        datastore: the app's datastore; one that does not implement
            :class:`~monailabel.interfaces.records.RecordDatastore` is adapted by ``PlainRecords``.
    """

    def __init__(self, datastore: Datastore) -> None:
        self.ds = datastore
        self.records: RecordDatastore = records_of(datastore)
        self._pending: Set[str] = set()
        self._digests: queue.Queue[str] = queue.Queue()
        self._digester: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------------------
    def image(self, image_id: str, compute_sha256: bool = True) -> ImageView:
        """Returns an image with its labels.

        Args:
            image_id: the image.
            compute_sha256: compute a digest the datastore does not hold yet; False shows it as "".

        Raises:
            MONAILabelException: INVALID_INPUT for a bad id, NOT_FOUND for an unknown image.
        """
        check_id(image_id)
        return self._image_view(self.records.image_record(image_id, compute_sha256))

    def label(self, image_id: str, tag: str) -> LabelView:
        """Returns one label.

        Raises:
            MONAILabelException: INVALID_INPUT for a bad id or tag, NOT_FOUND for an unknown image or label.
        """
        check_id(image_id)
        check_id(tag, "tag")
        return self._label_view(self.records.label_record(image_id, tag))

    def list(self, filter_: str, tag: str, page_size: int, page_token: str) -> Tuple[List[ImageView], str, int]:
        """Returns a page of images ordered by id, the next page's token and the total count.

        Args:
            filter_: "all", "labeled" or "unlabeled".
            tag: label tag the filter looks at.
            page_size: most images to return.
            page_token: token of the previous page.
        """
        after = decode_token(page_token)
        records, total = self.records.list_image_records(
            filter=filter_, label_tag=tag, page_size=page_size + 1, after_id=after
        )
        views = [self._image_view(r) for r in records]
        more = len(views) > page_size
        views = views[:page_size]
        return views, encode_token(views[-1].id) if more else "", total

    def status(self) -> Dict[str, Any]:
        """Returns the datastore's counts."""
        return self.ds.status()

    # -- writing ----------------------------------------------------------------------------------
    def staging_dir(self) -> Path:
        """Returns a folder for partial uploads, on the datastore's filesystem when it has one."""
        path = Path(self.records.staging_dir())
        path.mkdir(parents=True, exist_ok=True)
        return path

    def exists(self, image_id: str) -> bool:
        """Returns whether an image id is taken."""
        try:
            self.image(image_id, compute_sha256=False)
            return True
        except MONAILabelException as exc:
            if exc.error != MONAILabelError.NOT_FOUND:
                raise
            return False

    def add_image(self, image_id: str, path: Path, info: Dict[str, Any], sha256: str, overwrite: bool,
                  defer_sha256: bool = False) -> ImageView:
        """Adds a finished upload as an image (renamed into place when the datastore can).

        With ``defer_sha256`` (and no ``sha256``: the stream was checked by its XXH3-128) a datastore
        that can store the image without its digest does; the digest is then computed on a background
        thread after the answer, or by the first read that needs it, whichever comes first.
        """
        self.records.add_image(image_id, str(path), info, sha256=sha256 or None, move=True, overwrite=overwrite,
                               defer_sha256=defer_sha256 and not sha256)
        view = self.image(image_id, compute_sha256=not defer_sha256)
        if not view.sha256:
            self._digest_later(image_id)
        return view

    def _digest_later(self, image_id: str) -> None:
        with self._lock:
            if image_id in self._pending or len(self._pending) >= _MAX_PENDING_DIGESTS:
                return  # queued already, or too many: the first read computes it
            self._pending.add(image_id)
            if self._digester is None or not self._digester.is_alive():
                self._digester = threading.Thread(target=self._digest_pending, daemon=True, name="image-digests")
                self._digester.start()
        self._digests.put(image_id)

    def _digest_pending(self) -> None:
        while True:
            image_id = self._digests.get()
            with self._lock:
                self._pending.discard(image_id)
            try:
                self.records.image_record(image_id)  # computes and stores the missing digest
            except Exception as exc:  # removed meanwhile, or unreadable: a later read tries again
                logger.debug("no digest for image %s now: %s", image_id, exc)

    def save_label(self, image_id: str, path: Path, tag: str, info: Dict[str, Any], sha256: str) -> LabelView:
        """Saves a finished upload as the image's label with that tag."""
        self.records.save_label(image_id, str(path), tag, info, sha256=sha256 or None, move=True)
        return self.label(image_id, tag)

    # -- conversions ------------------------------------------------------------------------------
    def _label_view(self, r: LabelRecord) -> LabelView:
        return LabelView(r.image_id, r.tag, dict(r.info or {}), int(r.size or 0), r.sha256 or "", r.ext or "",
                         str(r.path))

    def _image_view(self, r: ImageRecord) -> ImageView:
        return ImageView(
            r.id, dict(r.info or {}), int(r.size or 0), r.sha256 or "", r.ext or "", str(r.path),
            [self._label_view(lr) for lr in r.labels.values()],
        )


def encode_token(last_id: str) -> str:
    """The page token of the page after the image ``last_id``."""
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def decode_token(token: str) -> str:
    """The last image id of the previous page, from a token :func:`encode_token` issued.

    Raises:
        MONAILabelException: INVALID_INPUT for a token this server did not issue.
    """
    if not token:
        return ""
    try:
        if len(token) > 4 * MAX_ID_CHARS:
            raise ValueError("too long")
        last_id = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode()
        return check_id(last_id, "page_token")
    except (ValueError, UnicodeError, MONAILabelException) as exc:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, "page_token is not one this server issued",
                                  field="page_token") from exc
