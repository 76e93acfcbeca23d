"""What the servicers need of a datastore, on top of MONAI Label's Datastore API.

The local datastore answers these directly (records with size and checksum, keyset paging, a staging
folder on its own filesystem so that a finished upload is renamed into place). Any other Datastore an
app brings works too, through the generic MONAI Label methods.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)
from monailabel_server.validation import check_id

__all__ = ["Store", "ImageView", "LabelView", "check_id"]

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


def _ext(path: str) -> str:
    name = os.path.basename(path).lower()
    if os.path.isdir(path):
        return ""
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def _size(path: str) -> int:
    try:
        return 0 if os.path.isdir(path) else os.path.getsize(path)
    except OSError:
        return 0


class Store:
    """Adapts a Datastore for the servicers.

    Args:
        datastore: the app's datastore.
    """

    def __init__(self, datastore: Datastore) -> None:
        self.ds = datastore
        self._local = hasattr(datastore, "image_record")

    # -- reading ----------------------------------------------------------------------------------
    def image(self, image_id: str) -> ImageView:
        """Returns an image with its labels.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown image.
        """
        check_id(image_id)
        if self._local:
            return self._image_view(self.ds.image_record(image_id))  # type: ignore[attr-defined]
        path = self.ds.get_image_uri(image_id)
        if not path:
            raise ImageNotFoundException(f"image '{image_id}' does not exist")
        labels = [self.label(image_id, tag) for tag in self.ds.get_labels_by_image_id(image_id)]
        info = self.ds.get_image_info(image_id)
        return ImageView(image_id, info, _size(path), info.get("sha256", ""), _ext(path), path, labels)

    def label(self, image_id: str, tag: str) -> LabelView:
        """Returns one label.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown image or label.
        """
        check_id(image_id)
        check_id(tag, "tag")
        if self._local:
            return self._label_view(self.ds.label_record(image_id, tag))  # type: ignore[attr-defined]
        path = self.ds.get_label_uri(image_id, tag)
        if not path:
            raise LabelNotFoundException(f"image '{image_id}' has no label tagged '{tag}'")
        info = self.ds.get_label_info(image_id, tag)
        return LabelView(image_id, tag, info, _size(path), info.get("sha256", ""), _ext(path), path)

    def list(self, filter_: str, tag: str, page_size: int, page_token: str) -> Tuple[List[ImageView], str, int]:
        """Returns a page of images ordered by id, the next page's token and the total count.

        Args:
            filter_: "all", "labeled" or "unlabeled".
            tag: label tag the filter looks at.
            page_size: most images to return.
            page_token: token of the previous page.
        """
        after = _decode_token(page_token)
        if self._local:
            records, total = self.ds.list_image_records(  # type: ignore[attr-defined]
                filter=filter_, label_tag=tag, page_size=page_size + 1, after_id=after
            )
            views = [self._image_view(r) for r in records]
        else:
            ids = sorted(self._filtered_ids(filter_, tag))
            total = len(ids)
            views = [self.image(i) for i in ids if i > after][: page_size + 1]
        more = len(views) > page_size
        views = views[:page_size]
        return views, _encode_token(views[-1].id) if more else "", total

    def _filtered_ids(self, filter_: str, tag: str) -> List[str]:
        ids = self.ds.list_images()
        if filter_ == "all":
            return ids
        labeled = {i for i in ids if self.ds.get_label_by_image_id(i, tag)}
        return [i for i in ids if (i in labeled) == (filter_ == "labeled")]

    def status(self) -> Dict[str, Any]:
        """Returns the datastore's counts."""
        return self.ds.status()

    # -- writing ----------------------------------------------------------------------------------
    def staging_dir(self) -> Path:
        """Returns a folder for partial uploads, on the datastore's filesystem when it has one."""
        if hasattr(self.ds, "staging_dir"):
            path = Path(self.ds.staging_dir())
        else:
            path = Path(tempfile.gettempdir()) / "monailabel-staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def exists(self, image_id: str) -> bool:
        """Returns whether an image id is taken."""
        try:
            self.image(image_id)
            return True
        except MONAILabelException as exc:
            if exc.error != MONAILabelError.NOT_FOUND:
                raise
            return False

    def add_image(self, image_id: str, path: Path, info: Dict[str, Any], sha256: str, overwrite: bool) -> ImageView:
        """Adds a finished upload as an image (renamed into place by the local datastore)."""
        if self._local:
            self.ds.add_image(image_id, str(path), info, sha256=sha256 or None, move=True, overwrite=overwrite)  # type: ignore[call-arg]
        else:
            if self.exists(image_id):
                if not overwrite:
                    raise MONAILabelException(MONAILabelError.ALREADY_EXISTS, f"image '{image_id}' exists")
                self.ds.remove_image(image_id)
            self.ds.add_image(image_id, str(path), {**info, "sha256": sha256 or _sha256(path)})
        return self.image(image_id)

    def save_label(self, image_id: str, path: Path, tag: str, info: Dict[str, Any], sha256: str) -> LabelView:
        """Saves a finished upload as the image's label with that tag."""
        if self._local:
            self.ds.save_label(image_id, str(path), tag, info, sha256=sha256 or None, move=True)  # type: ignore[call-arg]
        else:
            self.ds.save_label(image_id, str(path), tag, {**info, "sha256": sha256 or _sha256(path)})
        return self.label(image_id, tag)

    # -- conversions ------------------------------------------------------------------------------
    def _label_view(self, r: Any) -> LabelView:
        return LabelView(
            getattr(r, "image_id", ""), getattr(r, "tag", DefaultLabelTag.FINAL.value), dict(r.info or {}),
            int(r.size or 0), r.sha256 or "", r.ext or "", str(r.path),
        )

    def _image_view(self, r: Any) -> ImageView:
        labels = getattr(r, "labels", None) or []
        if isinstance(labels, dict):
            labels = list(labels.values())
        return ImageView(
            r.id, dict(r.info or {}), int(r.size or 0), r.sha256 or "", r.ext or "", str(r.path),
            [self._label_view(lr) for lr in labels],
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def _decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, "page_token is not one this server issued") from exc
