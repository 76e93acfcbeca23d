"""The read side of the local datastore: MONAI Label's getters, plus typed records with keyset paging."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from monailabel.datastore import files
from monailabel.datastore.archive import folder_zip, write_dataset_archive
from monailabel.datastore.index import FILTERS, DatastoreIndex
from monailabel.datastore.records import ImageRecord, LabelRecord
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)

__all__ = ["DatastoreQueries"]

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 10_000


class DatastoreQueries(Datastore):
    """Reads of :class:`~monailabel.datastore.local.LocalDatastore` (see there); not meant for direct use.

    Args:
        index: the SQLite index.
        root: the studies folder.
        images_root: the images folder.
        labels_root: the labels folder.
        images_dir: the images folder as configured (relative).
        labels_dir: the labels folder as configured (relative).
    """

    def __init__(
        self, index: DatastoreIndex, root: Path, images_root: Path, labels_root: Path, images_dir: str, labels_dir: str
    ) -> None:
        self._index = index
        self._root = root
        self._images_root = images_root
        self._labels_root = labels_root
        self._images_dir = images_dir
        self._labels_dir = labels_dir

    # helpers ----------------------------------------------------------------------------------

    def _maybe_reload(self) -> None:
        """Rescans when auto reload is on (the writer side overrides this)."""

    def _image_path(self, image_id: str, ext: str) -> Path:
        return self._images_root / f"{image_id}{ext}"

    def _label_path(self, tag: str, image_id: str, ext: str) -> Path:
        return self._labels_root / tag / f"{image_id}{ext}"

    @staticmethod
    def _loads(text: str) -> Dict[str, Any]:
        value = json.loads(text or "{}")
        return value if isinstance(value, dict) else {}

    @staticmethod
    def _check_label_key(label_id: str, label_tag: Any) -> str:
        files.validate_id(label_id, "label id")
        return files.validate_id(str(getattr(label_tag, "value", label_tag)), "label tag")

    def _image(self, image_id: str) -> sqlite3.Row:
        files.validate_id(image_id, "image id")
        row = self._index.image_row(image_id)
        if row is None:
            raise ImageNotFoundException(f"image {image_id!r} not found")
        return row

    def _label(self, label_id: str, label_tag: Any) -> Tuple[sqlite3.Row, str]:
        tag = self._check_label_key(label_id, label_tag)
        row = self._index.label_row(label_id, tag)
        if row is None:
            raise LabelNotFoundException(f"label {label_id!r} with tag {tag!r} not found")
        return row, tag

    @staticmethod
    def _bytes(path: Path) -> io.BytesIO:
        """The content served by ``get_image``/``get_label``: the file, or a zip of a series folder."""
        return folder_zip(path) if path.is_dir() else io.BytesIO(path.read_bytes())

    # MONAI Label's reads ----------------------------------------------------------------------

    def name(self) -> str:
        """Returns the datastore's name (``new-dataset`` until set, as in MONAI Label)."""
        return self._index.get_meta("name", "new-dataset")

    def description(self) -> str:
        """Returns the datastore's description."""
        return self._index.get_meta("description", "New Dataset")

    def datalist(self, full_path: bool = True) -> List[Dict[str, Any]]:
        """Returns ``[{"image": path, "label": path}, ...]`` for the images with a final label, by id.

        Args:
            full_path: absolute paths; False for paths relative to the studies folder.
        """
        self._maybe_reload()
        tag = DefaultLabelTag.FINAL.value
        out = []
        with self._index.read() as c:
            rows = c.execute(
                "SELECT i.id, i.ext AS image_ext, l.ext AS label_ext FROM images i JOIN labels l "
                "ON l.image_id = i.id AND l.tag = ? ORDER BY i.id",
                (tag,),
            ).fetchall()
        for r in rows:
            image = self._image_path(r["id"], r["image_ext"])
            label = self._label_path(tag, r["id"], r["label_ext"])
            if full_path:
                out.append({"image": str(image), "label": str(label)})
            else:
                out.append({"image": os.path.relpath(image, self._root), "label": os.path.relpath(label, self._root)})
        return out

    def get_labels_by_image_id(self, image_id: str) -> Dict[str, str]:
        """Returns the image's labels as ``{tag: label_id}``; ``{}`` for an unknown image, as in MONAI Label.

        Args:
            image_id: the image id.
        """
        files.validate_id(image_id, "image id")
        return {r["tag"]: image_id for r in self._index.label_rows([image_id])[image_id]}

    def get_label_by_image_id(self, image_id: str, tag: str) -> str:
        """Returns the label id of the image's label with that tag, or ``""`` when there is none.

        Args:
            image_id: the image id.
            tag: the label tag.
        """
        tag = self._check_label_key(image_id, tag)
        return image_id if self._index.label_row(image_id, tag) is not None else ""

    def get_image(self, image_id: str, params: Optional[Dict[str, Any]] = None) -> io.BytesIO:
        """Returns the image's content in memory, as MONAI Label does.

        For large files, stream from :meth:`get_image_uri` (or ``image_record(...).path``) instead.

        Args:
            image_id: the image id.
            params: unused.

        Returns:
            A ``BytesIO`` of the file; for a DICOM series, of an uncompressed zip of its files.

        Raises:
            ImageNotFoundException: no such image.
        """
        row = self._image(image_id)
        return self._bytes(self._image_path(image_id, row["ext"]))

    def get_image_uri(self, image_id: str) -> str:
        """Returns the image's absolute path (a folder for a DICOM series, which MONAI's ``LoadImage`` reads).

        Args:
            image_id: the image id.

        Raises:
            ImageNotFoundException: no such image.
        """
        row = self._image(image_id)
        return str(self._image_path(image_id, row["ext"]))

    def get_label(self, label_id: str, label_tag: str, params: Optional[Dict[str, Any]] = None) -> io.BytesIO:
        """Returns the label file's content in memory, as MONAI Label does.

        Args:
            label_id: the label id (the image id).
            label_tag: the tag.
            params: unused.

        Raises:
            LabelNotFoundException: no such label.
        """
        row, tag = self._label(label_id, label_tag)
        return self._bytes(self._label_path(tag, label_id, row["ext"]))

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        """Returns the label's absolute path.

        Args:
            label_id: the label id (the image id).
            label_tag: the tag.

        Raises:
            LabelNotFoundException: no such label.
        """
        row, tag = self._label(label_id, label_tag)
        return str(self._label_path(tag, label_id, row["ext"]))

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        """Returns a copy of the image's info, with ``path`` added as MONAI Label does.

        Args:
            image_id: the image id.

        Raises:
            ImageNotFoundException: no such image.
        """
        row = self._image(image_id)
        return {**self._loads(row["info"]), "path": str(self._image_path(image_id, row["ext"]))}

    def get_label_info(self, label_id: str, label_tag: str) -> Dict[str, Any]:
        """Returns a copy of the label's info.

        Args:
            label_id: the label id (the image id).
            label_tag: the tag.

        Raises:
            LabelNotFoundException: no such label.
        """
        row, _ = self._label(label_id, label_tag)
        return self._loads(row["info"])

    def get_labeled_images(self, label_tag: Optional[str] = None) -> List[str]:
        """Returns, by id, the images that have a label of ``label_tag``.

        Args:
            label_tag: the tag; None for ``final``.
        """
        self._maybe_reload()
        return self._index.image_ids(self._tag(label_tag), labeled=True)

    def get_unlabeled_images(self, label_tag: Optional[str] = None) -> List[str]:
        """Returns, by id, the images that have no label of ``label_tag``.

        Args:
            label_tag: the tag; None for ``final``.
        """
        self._maybe_reload()
        return self._index.image_ids(self._tag(label_tag), labeled=False)

    def list_images(self) -> List[str]:
        """Returns every image id, in id order."""
        self._maybe_reload()
        return self._index.image_ids()

    def status(self) -> Dict[str, Any]:
        """Returns MONAI Label's status dict.

        Returns:
            ``{"total": images, "completed": images with a final label, "label_tags": {tag: labels},
            "train": datalist(full_path=False)}``.
        """
        self._maybe_reload()
        return {
            "total": self._index.count_images(),
            "completed": len(self._index.image_ids(DefaultLabelTag.FINAL.value, labeled=True)),
            "label_tags": self._index.tag_counts(),
            "train": self.datalist(full_path=False),
        }

    def json(self) -> Dict[str, Any]:
        """Returns the index in MONAI Label's ``datastore_v2.json`` layout.

        Returns:
            ``{"name", "description", "images_dir", "labels_dir",
            "objects": {image_id: {"image": {"ext", "info"}, "labels": {tag: {"ext", "info"}}}}}``.
        """
        with self._index.read() as c:
            images = self._index.all_images(c)
            labels = self._index.all_labels(c)
        objects: Dict[str, Any] = {
            r["id"]: {"image": {"ext": r["ext"], "info": self._loads(r["info"])}, "labels": {}} for r in images
        }
        for r in labels:
            objects[r["image_id"]]["labels"][r["tag"]] = {"ext": r["ext"], "info": self._loads(r["info"])}
        return {
            "name": self.name(),
            "description": self.description(),
            "images_dir": self._images_dir,
            "labels_dir": self._labels_dir,
            "objects": objects,
        }

    def get_dataset_archive(self, limit_cases: Optional[int]) -> str:
        """Writes a zip of the images that have a final label, their final labels, and ``metadata.json``.

        Entries are ``image/<file>``, ``label/<file>`` and ``metadata.json`` (:meth:`json`), as MONAI
        Label lays them out (a DICOM series as ``image/<id>/<file>``).

        Args:
            limit_cases: the most cases to include (in id order); None or 0 for all.

        Returns:
            The path of the zip, in the system's temporary folder; the caller deletes it.

        Raises:
            MONAILabelException: ``PRECONDITION_FAILED`` when no image has a final label.
        """
        dl = self.datalist()
        if not dl:
            raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED, "no image has a final label to archive")
        if limit_cases and limit_cases > 0:
            dl = dl[:limit_cases]
        return write_dataset_archive(dl, self.json())

    # typed records (for the gRPC server) ------------------------------------------------------

    def image_record(self, image_id: str, compute_sha256: bool = True) -> ImageRecord:
        """Returns an image with its labels as a typed record.

        Digests still missing (files found by a scan, images stored with ``defer_sha256``) are computed
        and stored, unless ``compute_sha256`` is false (then they read ``""``).

        Args:
            image_id: the image id.
            compute_sha256: compute missing digests.

        Raises:
            ImageNotFoundException: no such image.
        """
        row = self._image(image_id)
        return self._image_record(row, self._index.label_rows([image_id])[image_id], compute_sha256)

    def label_record(self, image_id: str, tag: str) -> LabelRecord:
        """Returns a label as a typed record (its digest computed and stored when missing).

        Args:
            image_id: the image id.
            tag: the tag.

        Raises:
            LabelNotFoundException: no such label.
        """
        row, _ = self._label(image_id, tag)
        return self._label_record(row, True)

    def list_image_records(
        self,
        filter: str = "all",
        label_tag: str = "final",
        page_size: int = DEFAULT_PAGE_SIZE,
        after_id: str = "",
        *,
        compute_sha256: bool = True,
    ) -> Tuple[List[ImageRecord], int]:
        """Returns one page of images, in id order, with keyset paging.

        Args:
            filter: ``"all"``, ``"labeled"`` (has a label of ``label_tag``) or ``"unlabeled"``.
            label_tag: the tag the filter refers to; ``""`` for ``final``.
            page_size: records per page; 0 or less gives 100, more than 10,000 gives 10,000.
            after_id: the id of the last record of the previous page; ``""`` for the first page.
            compute_sha256: compute (and store) digests still missing; False leaves them ``""``.

        Returns:
            ``(records, total_count)``; ``total_count`` counts every image passing the filter. There are
            more pages while a full page came back: pass its last id as ``after_id``.

        Raises:
            MONAILabelException: ``INVALID_INPUT`` for an unknown filter or a bad tag.
        """
        if filter not in FILTERS:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"filter must be one of {FILTERS}, not {filter!r}")
        tag = self._tag(label_tag or None)
        size = DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
        self._maybe_reload()
        rows, total = self._index.page_images(filter, tag, after_id or "", size)
        labels = self._index.label_rows([r["id"] for r in rows])
        return [self._image_record(r, labels[r["id"]], compute_sha256) for r in rows], total

    def _tag(self, label_tag: Optional[str]) -> str:
        if label_tag is None:
            return DefaultLabelTag.FINAL.value
        return files.validate_id(str(getattr(label_tag, "value", label_tag)), "label tag")

    def _digest(self, table: str, key: Tuple[str, ...], row: sqlite3.Row, path: Path, compute: bool) -> str:
        if row["sha256"] or not compute:
            return str(row["sha256"] or "")
        try:
            digest = files.sha256_path(path)
        except OSError as e:  # removed by hand since the last scan
            logger.warning("Cannot hash %s: %s", path, e)
            return ""
        self._index.store_sha256(table, key, digest, row["size"], row["mtime_ns"])
        return digest

    def _label_record(self, row: sqlite3.Row, compute: bool) -> LabelRecord:
        image_id, tag = row["image_id"], row["tag"]
        path = self._label_path(tag, image_id, row["ext"])
        digest = self._digest("labels", (image_id, tag), row, path, compute)
        return LabelRecord(
            id=image_id,
            tag=tag,
            ext=row["ext"],
            info=self._loads(row["info"]),
            size=int(row["size"]),
            sha256=digest,
            path=str(path),
            added_ts=float(row["added_ts"]),
        )

    def _image_record(self, row: sqlite3.Row, label_rows: List[sqlite3.Row], compute: bool) -> ImageRecord:
        path = self._image_path(row["id"], row["ext"])
        return ImageRecord(
            id=row["id"],
            ext=row["ext"],
            info=self._loads(row["info"]),
            size=int(row["size"]),
            sha256=self._digest("images", (row["id"],), row, path, compute),
            path=str(path),
            added_ts=float(row["added_ts"]),
            is_dicom_series=bool(row["is_dir"]),
            labels={r["tag"]: self._label_record(r, compute) for r in label_rows},
        )
