"""What the gRPC server needs from a datastore: record-level reads and file-moving writes.

MONAI Label's :class:`~monailabel.interfaces.datastore.Datastore` answers with paths and info dicts;
the server also needs each file's size and SHA-256, keyset paging, and writes that rename a staged
upload into place. :class:`RecordDatastore` declares exactly that. The local datastore implements it
itself; :class:`PlainRecords` adapts any other MONAI Label datastore (hashing and copying as needed),
so the server never probes a datastore for optional methods.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)

if TYPE_CHECKING:  # the local datastore package imports this module
    from monailabel.datastore.records import ImageRecord, LabelRecord

__all__ = ["RecordDatastore", "PlainRecords", "records_of"]


class RecordDatastore(ABC):
    """Record-level operations of a datastore, as the server uses them.

    Writes take a file that may be renamed into place (``move=True``) and its known digest, and leave
    neither a half-written file nor a record without its file when they fail.
    """

    @abstractmethod
    def image_record(self, image_id: str, compute_sha256: bool = True) -> ImageRecord:
        """Returns an image with its labels, size and SHA-256.

        Args:
            image_id: the image.
            compute_sha256: compute (and keep) a digest still missing; False leaves it ``""``.

        Raises:
            ImageNotFoundException: no such image.
        """

    @abstractmethod
    def label_record(self, image_id: str, tag: str) -> LabelRecord:
        """Returns a label with its size and SHA-256.

        Raises:
            LabelNotFoundException: no such label.
        """

    @abstractmethod
    def list_image_records(
        self, filter: str = "all", label_tag: str = "final", page_size: int = 100, after_id: str = ""
    ) -> Tuple[List[ImageRecord], int]:
        """Returns up to ``page_size`` images with ids after ``after_id``, in id order, and the total count.

        Args:
            filter: ``"all"``, ``"labeled"`` or ``"unlabeled"`` (by a label of ``label_tag``).
            label_tag: the tag the filter looks at.
            page_size: most records to return.
            after_id: the last id of the previous page ("" for the first).
        """

    @abstractmethod
    def add_image(
        self,
        image_id: str,
        image_filename: Union[str, os.PathLike],
        image_info: Optional[Dict[str, Any]],
        *,
        sha256: Optional[str] = None,
        move: bool = False,
        overwrite: bool = False,
        defer_sha256: bool = False,
    ) -> str:
        """Adds (or, with ``overwrite``, replaces) an image from a file; returns its id.

        ``defer_sha256`` (with no ``sha256``) lets a datastore that can store the image without its
        digest compute it when it is first read (the server checked the bytes another way).

        Raises:
            MONAILabelException: ALREADY_EXISTS when the id is taken and ``overwrite`` is false.
        """

    @abstractmethod
    def save_label(
        self,
        image_id: str,
        label_filename: Union[str, os.PathLike],
        label_tag: str,
        label_info: Optional[Dict[str, Any]],
        *,
        sha256: Optional[str] = None,
        move: bool = False,
    ) -> str:
        """Saves (replaces) the label of an image under a tag from a file; returns the label id.

        Raises:
            ImageNotFoundException: no such image.
        """

    @abstractmethod
    def staging_dir(self) -> Path:
        """Returns a folder for uploads in progress, on the datastore's filesystem when it has one."""


class PlainRecords(RecordDatastore):
    """Adapts a plain MONAI Label datastore: digests computed (and kept in info), paging done in memory.

    Args:
        datastore: the datastore.
    """

    def __init__(self, datastore: Datastore) -> None:
        self.ds = datastore
        self._staging: Optional[Path] = None

    def image_record(self, image_id: str, compute_sha256: bool = True) -> ImageRecord:
        from monailabel.datastore.records import ImageRecord

        path = self._image_uri(image_id)
        if not path:
            raise ImageNotFoundException(f"image '{image_id}' does not exist")
        info = dict(self.ds.get_image_info(image_id) or {})
        labels = {tag: self.label_record(image_id, tag) for tag in self.ds.get_labels_by_image_id(image_id)}
        return ImageRecord(
            image_id, _ext(path), info, _size(path), str(info.get("sha256", "")), path, float(info.get("ts", 0)),
            os.path.isdir(path), labels,
        )

    def label_record(self, image_id: str, tag: str) -> LabelRecord:
        from monailabel.datastore.records import LabelRecord

        path = _uri(lambda: self.ds.get_label_uri(image_id, tag))
        if not path:
            raise LabelNotFoundException(f"image '{image_id}' has no label tagged '{tag}'")
        info = dict(self.ds.get_label_info(image_id, tag) or {})
        return LabelRecord(
            image_id, tag, _ext(path), info, _size(path), str(info.get("sha256", "")), path, float(info.get("ts", 0))
        )

    def list_image_records(
        self, filter: str = "all", label_tag: str = "final", page_size: int = 100, after_id: str = ""
    ) -> Tuple[List[ImageRecord], int]:
        ids = sorted(self.ds.list_images())
        if filter != "all":
            labeled = {i for i in ids if self.ds.get_label_by_image_id(i, label_tag)}
            ids = [i for i in ids if (i in labeled) == (filter == "labeled")]
        return [self.image_record(i) for i in ids if i > after_id][:page_size], len(ids)

    def add_image(
        self,
        image_id: str,
        image_filename: Union[str, os.PathLike],
        image_info: Optional[Dict[str, Any]],
        *,
        sha256: Optional[str] = None,
        move: bool = False,
        overwrite: bool = False,
        defer_sha256: bool = False,
    ) -> str:
        # the digest lives in the image's info here, written with it: computed now
        if self._image_uri(image_id):
            if not overwrite:
                raise MONAILabelException(MONAILabelError.ALREADY_EXISTS, f"image '{image_id}' exists")
            self.ds.remove_image(image_id)
        digest = sha256 or _sha256(Path(image_filename))
        return self.ds.add_image(image_id, str(image_filename), {**(image_info or {}), "sha256": digest})

    def save_label(
        self,
        image_id: str,
        label_filename: Union[str, os.PathLike],
        label_tag: str,
        label_info: Optional[Dict[str, Any]],
        *,
        sha256: Optional[str] = None,
        move: bool = False,
    ) -> str:
        digest = sha256 or _sha256(Path(label_filename))
        return self.ds.save_label(image_id, str(label_filename), label_tag, {**(label_info or {}), "sha256": digest})

    def _image_uri(self, image_id: str) -> str:
        return _uri(lambda: self.ds.get_image_uri(image_id))

    def staging_dir(self) -> Path:
        # a folder of this adapter's own: the server removes files there that belong to no upload
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="monailabel-staging-"))
        return self._staging


def _uri(get: Callable[[], str]) -> str:
    """A datastore's URI answer; "" when it says NOT_FOUND (datastores differ: some raise, some return "")."""
    try:
        return get() or ""
    except MONAILabelException as exc:
        if exc.error != MONAILabelError.NOT_FOUND:
            raise
        return ""


def records_of(datastore: Datastore) -> RecordDatastore:
    """Returns the datastore itself when it implements :class:`RecordDatastore`, else its adapter."""
    return datastore if isinstance(datastore, RecordDatastore) else PlainRecords(datastore)


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
