"""MONAI Label's local datastore, indexed in SQLite, with crash-safe writes.

The folder layout is MONAI Label's, so a folder it populated opens here unchanged (and the other way
round)::

    <studies>/<images_dir>/<image_id><ext>        images (or <image_id>/ folders of DICOM files)
    <studies>/<labels_dir>/<tag>/<image_id><ext>  labels, tagged "final", "original", or anything else
    <studies>/.monailabel/datastore.db            the SQLite index (WAL)
    <studies>/.monailabel/staging/                uploads in progress (same filesystem, for renames)

Every write puts the file in place first (a hidden temporary copy, fsynced, then ``os.replace``) and
commits its row in the same step: a failure leaves neither a half-written file nor a row without its
file.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from monailabel.datastore import files
from monailabel.datastore.dicom import is_dicom_series
from monailabel.datastore.index import DatastoreIndex, dumps
from monailabel.datastore.queries import DatastoreQueries
from monailabel.datastore.scan import import_v2, reconcile, scan_files, scan_label_tags
from monailabel.datastore.writes import put_file, set_aside
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)
from monailabel.interfaces.records import RecordDatastore

__all__ = ["LocalDatastore"]

logger = logging.getLogger(__name__)

_RELOAD_INTERVAL_S = 2.0


class LocalDatastore(DatastoreQueries, RecordDatastore):
    """A datastore in a local folder, as MONAI Label's ``LocalDatastore``.

    Reads (``get_*``, ``list_*``, ``datalist``, ``status``, ``json``, the record methods) live in
    :class:`~monailabel.datastore.queries.DatastoreQueries`; this class adds opening, scanning and writes.
    It is safe to call from many threads at once; writes are serialised, reads run in parallel.

    Args:
        datastore_path: the studies folder (created when missing, unless ``read_only``).
        images_dir: the images folder, relative to ``datastore_path``.
        labels_dir: the labels folder, relative to ``datastore_path``.
        datastore_config: MONAI Label's JSON index in ``datastore_path``; imported once into an empty
            SQLite index, never written.
        extensions: file name patterns of images and labels that scans pick up.
        auto_reload: rescan the folder (at most every 2 s) before listing, so that files copied in or
            deleted by hand show up without calling :meth:`refresh`.
        read_only: refuse every change to images, labels, info, name and description with
            ``MONAILabelException(MONAILabelError.PRECONDITION_FAILED)``. The index itself is still kept up
            to date; when ``<studies>/.monailabel`` cannot be written it lives in a temporary folder.
    """

    def __init__(
        self,
        datastore_path: Union[str, os.PathLike],
        images_dir: str = ".",
        labels_dir: str = "labels",
        datastore_config: str = "datastore_v2.json",
        extensions: Union[str, Sequence[str]] = ("*.nii.gz", "*.nii", "*.nrrd"),
        auto_reload: bool = False,
        read_only: bool = False,
    ) -> None:
        root = Path(os.path.realpath(datastore_path))
        self._patterns = [extensions] if isinstance(extensions, str) else list(extensions)
        self._auto_reload = auto_reload
        self._read_only = read_only
        self._write_lock = threading.RLock()
        self._last_scan = 0.0
        self._tmp_home: Optional[Path] = None
        if not read_only:
            for folder in (root / images_dir, root / labels_dir / "final", root / labels_dir / "original"):
                folder.mkdir(parents=True, exist_ok=True)
        home = root / ".monailabel"
        try:
            index = DatastoreIndex(home / "datastore.db")
        except (OSError, sqlite3.Error):
            if not read_only:
                raise
            self._tmp_home = home = Path(tempfile.mkdtemp(prefix="monailabel-datastore-"))
            logger.warning("%s is not writable; the index of this read-only datastore lives in %s", root, home)
            index = DatastoreIndex(home / "datastore.db")
        super().__init__(index, root, root / images_dir, root / labels_dir, images_dir, labels_dir)
        self._home = home
        import_v2(index, root / datastore_config)
        self.refresh()
        logger.info("Datastore %s: %d images (read_only=%s)", root, index.count_images(), read_only)

    # lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the index; the datastore cannot be used afterwards."""
        self._index.close()
        if self._tmp_home is not None:
            shutil.rmtree(self._tmp_home, ignore_errors=True)

    def __enter__(self) -> LocalDatastore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def read_only(self) -> bool:
        """Whether writes are refused."""
        return self._read_only

    def staging_dir(self) -> Path:
        """Returns a folder for uploads in progress, on the datastore's filesystem.

        A file written there can be handed to :meth:`add_image` or :meth:`save_label` with ``move=True``,
        which then renames it into place instead of copying it.
        """
        folder = self._home / "staging"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _maybe_reload(self) -> None:
        if self._auto_reload and time.monotonic() - self._last_scan >= _RELOAD_INTERVAL_S:
            self.refresh()

    def refresh(self) -> None:
        """Rescans the folder: files added by hand get rows, rows of removed files go, changed files are re-hashed."""
        with self._write_lock:
            labels_root = self._labels_root
            images = scan_files(self._images_root, self._patterns, series=True, exclude=[labels_root])
            labels = scan_label_tags(labels_root, self._patterns)
            changes = reconcile(self._index, images, labels, self._image_path, self._label_path)
            self._last_scan = time.monotonic()
        if changes:
            logger.info("Refresh of %s: %d changes", self._root, changes)

    # name and description ---------------------------------------------------------------------

    def set_name(self, name: str) -> None:
        """Sets the datastore's name.

        Args:
            name: the new name.
        """
        self._set_meta("name", name)

    def set_description(self, description: str) -> None:
        """Sets the datastore's description.

        Args:
            description: the new description.
        """
        self._set_meta("description", description)

    def _set_meta(self, key: str, value: str) -> None:
        self._check_writable()
        with self._write_lock, self._index.write() as c:
            self._index.set_meta(c, key, str(value))

    # images -----------------------------------------------------------------------------------

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
        """Adds an image file, or a folder holding a DICOM series.

        Args:
            image_id: the id to give it; empty to take the file name without extension.
            image_filename: the file (or series folder) to add; its extension is kept.
            image_info: info to store with it; ``ts`` and ``name`` are set as MONAI Label does.
            sha256: the file's hex SHA-256 when the caller knows it (stored without re-hashing).
            move: rename the file into place (from :meth:`staging_dir`, or anywhere on the same filesystem)
                instead of copying it; across filesystems it is copied, then the source is removed.
            overwrite: replace an image with that id (its labels stay).
            defer_sha256: without ``sha256``, store the image now and compute its digest when it is
                first read (see :meth:`image_record`), rather than reading the file again here.

        Returns:
            The image id.

        Raises:
            MONAILabelException: ``INVALID_INPUT`` for a bad id or a missing source,
                ``ALREADY_EXISTS`` when the id is taken and ``overwrite`` is false,
                ``PRECONDITION_FAILED`` when read-only.
        """
        self._check_writable()
        src = Path(image_filename)
        if src.is_dir():
            if not is_dicom_series(src):
                raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"{src.name} is a folder without DICOM files")
            default_id, ext = src.name, ""
        else:
            default_id, ext = files.split_name(src.name, [p.lstrip("*") for p in self._patterns])
        image_id = files.validate_id(image_id or default_id, "image id")
        info = dict(image_info or {})
        info.update(ts=int(time.time()), name=image_id + ext)
        with self._write_lock:
            old = self._index.image_row(image_id)
            if old is not None and not overwrite:
                raise MONAILabelException(MONAILabelError.ALREADY_EXISTS, f"image {image_id!r} exists already")
            old_path = self._image_path(image_id, old["ext"]) if old is not None else None

            def row(c: sqlite3.Connection, size: int, mtime: int, digest: Optional[str]) -> None:
                self._index.upsert_image(c, image_id, ext, src.is_dir(), info, size, mtime, digest, time.time())

            put_file(self._index, src, self._image_path(image_id, ext), sha256, move, row, old_path, defer_sha256)
        logger.info("Added image %s from %s", image_id, src)
        return image_id

    def remove_image(self, image_id: str) -> None:
        """Removes an image with all its labels.

        Args:
            image_id: the image id.

        Raises:
            ImageNotFoundException: no such image.
        """
        self._check_writable()
        files.validate_id(image_id, "image id")
        with self._write_lock:
            row = self._index.image_row(image_id)
            if row is None:
                raise ImageNotFoundException(f"image {image_id!r} not found")
            paths = [
                self._label_path(r["tag"], image_id, r["ext"]) for r in self._index.label_rows([image_id])[image_id]
            ]
            paths.append(self._image_path(image_id, row["ext"]))
            with set_aside(paths) as move_aside, self._index.write() as c:
                move_aside()
                c.execute("DELETE FROM images WHERE id = ?", (image_id,))
        logger.info("Removed image %s", image_id)

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        """Merges keys into the image's info (existing keys not given stay; a key set to None is removed).

        Args:
            image_id: the image id.
            info: keys to set.

        Raises:
            ImageNotFoundException: no such image.
        """
        self._check_writable()
        files.validate_id(image_id, "image id")
        with self._write_lock, self._index.write() as c:
            row = self._index.image_row(image_id, c)
            if row is None:
                raise ImageNotFoundException(f"image {image_id!r} not found")
            merged = _merged(self._loads(row["info"]), info)
            c.execute("UPDATE images SET info = ? WHERE id = ?", (dumps(merged), image_id))

    # labels -----------------------------------------------------------------------------------

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
        """Saves a label of an image under a tag, replacing the one with that tag.

        Args:
            image_id: the image id.
            label_filename: the label file; its extension is kept.
            label_tag: the tag (``final``, ``original``, or any other valid name).
            label_info: info to store; ``ts``, ``name`` and ``checksum`` are set as MONAI Label does.
            sha256: the file's hex SHA-256 when the caller knows it (stored without re-hashing).
            move: rename the file into place instead of copying it (see :meth:`add_image`).

        Returns:
            The label id (the image id).

        Raises:
            ImageNotFoundException: no such image.
            MONAILabelException: ``INVALID_INPUT`` for a bad id or tag or a missing file,
                ``PRECONDITION_FAILED`` when read-only.
        """
        self._check_writable()
        files.validate_id(image_id, "image id")
        tag = files.validate_id(str(getattr(label_tag, "value", label_tag)), "label tag")
        src = Path(label_filename)
        _, ext = files.split_name(src.name, [p.lstrip("*") for p in self._patterns])
        info = dict(label_info or {})
        info.update(ts=int(time.time()), name=image_id + ext)
        with self._write_lock:
            if self._index.image_row(image_id) is None:
                raise ImageNotFoundException(f"image {image_id!r} not found")
            old = self._index.label_row(image_id, tag)
            old_path = self._label_path(tag, image_id, old["ext"]) if old is not None else None
            final = self._label_path(tag, image_id, ext)
            final.parent.mkdir(parents=True, exist_ok=True)

            def row(c: sqlite3.Connection, size: int, mtime: int, digest: Optional[str]) -> None:
                if self._index.image_row(image_id, c) is None:
                    raise ImageNotFoundException(f"image {image_id!r} not found")
                linfo = {**info, "checksum": f"SHA256:{digest}"}
                self._index.upsert_label(c, image_id, tag, ext, src.is_dir(), linfo, size, mtime, digest, time.time())

            put_file(self._index, src, final, sha256, move, row, old_path)
        logger.info("Saved label %s/%s from %s", image_id, tag, src)
        return image_id

    def remove_label(self, label_id: str, label_tag: str) -> None:
        """Removes a label.

        Args:
            label_id: the label id (the image id).
            label_tag: the tag.

        Raises:
            LabelNotFoundException: no such label.
        """
        self._check_writable()
        tag = self._check_label_key(label_id, label_tag)
        with self._write_lock:
            row = self._index.label_row(label_id, tag)
            if row is None:
                raise LabelNotFoundException(f"label {label_id!r} with tag {tag!r} not found")
            with set_aside([self._label_path(tag, label_id, row["ext"])]) as move_aside, self._index.write() as c:
                move_aside()
                c.execute("DELETE FROM labels WHERE image_id = ? AND tag = ?", (label_id, tag))

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        """Merges keys into the label's info (existing keys not given stay; a key set to None is removed).

        Args:
            label_id: the label id (the image id).
            label_tag: the tag.
            info: keys to set.

        Raises:
            LabelNotFoundException: no such label.
        """
        self._check_writable()
        tag = self._check_label_key(label_id, label_tag)
        with self._write_lock, self._index.write() as c:
            row = self._index.label_row(label_id, tag, c)
            if row is None:
                raise LabelNotFoundException(f"label {label_id!r} with tag {tag!r} not found")
            merged = _merged(self._loads(row["info"]), info)
            c.execute("UPDATE labels SET info = ? WHERE image_id = ? AND tag = ?", (dumps(merged), label_id, tag))

    # helpers ----------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._read_only:
            raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED, "the datastore is read-only")

    # archive ----------------------------------------------------------------------------------


def _merged(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    """Merges info: keys of ``new`` win; a key whose new value is None is removed."""
    merged = {**old, **new}
    return {k: v for k, v in merged.items() if v is not None}
