"""Keeping the index in step with the folder: scanning, reconciling, and importing MONAI Label's JSON index."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Sequence

from monailabel.datastore.dicom import is_dicom_series
from monailabel.datastore.files import split_name, stat_path, validate_id
from monailabel.datastore.index import DatastoreIndex
from monailabel.interfaces.exception import MONAILabelException

logger = logging.getLogger(__name__)

V2_IMPORTED = "v2_imported"
"""Setting recording that a ``datastore_v2.json`` was imported (so it is imported once)."""


@dataclass(frozen=True)
class Found:
    """A data file (or DICOM series folder) found on disk.

    Attributes:
        id: the image id its name gives.
        ext: its extension (``""`` for a folder).
        path: where it is.
        is_dir: whether it is a DICOM series folder.
    """

    id: str
    ext: str
    path: Path
    is_dir: bool


def _valid(value: str, what: str) -> bool:
    try:
        validate_id(value, what)
    except MONAILabelException:
        return False
    return True


def scan_files(folder: Path, patterns: Sequence[str], series: bool, exclude: Sequence[Path] = ()) -> Dict[str, Found]:
    """Finds data files (and, when asked, DICOM series folders) directly inside a folder.

    Hidden names are skipped. When two files give the same id (``a.nii`` and ``a.nii.gz``), the one
    matching the earlier pattern wins.

    Args:
        folder: where to look.
        patterns: file name patterns, such as ``*.nii.gz``, in order of preference.
        series: also take DICOM series folders (id = folder name).
        exclude: folders never to take (the labels folder, when it lies inside the images folder).

    Returns:
        What was found, by id.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    extensions = [p.lstrip("*") for p in patterns]
    excluded = {os.path.realpath(p) for p in exclude}
    found: Dict[str, Found] = {}
    rank: Dict[str, int] = {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            if series and os.path.realpath(path) not in excluded and _valid(entry.name, "image id"):
                if entry.name not in found and is_dicom_series(path):
                    found[entry.name] = Found(entry.name, "", path, True)
                    rank[entry.name] = len(patterns)
            continue
        for i, pattern in enumerate(patterns):
            if fnmatch.fnmatchcase(entry.name, pattern):
                item_id, ext = split_name(entry.name, extensions)
                if _valid(item_id, "id") and i < rank.get(item_id, len(patterns) + 1):
                    found[item_id] = Found(item_id, ext, path, False)
                    rank[item_id] = i
                break
    return found


def scan_label_tags(labels_dir: Path, patterns: Sequence[str]) -> Dict[str, Dict[str, Found]]:
    """Finds label files under ``labels_dir/<tag>/``.

    Args:
        labels_dir: the labels folder.
        patterns: file name patterns.

    Returns:
        ``{tag: {image_id: found}}``.
    """
    try:
        tags = sorted(e.name for e in os.scandir(labels_dir) if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {tag: scan_files(labels_dir / tag, patterns, series=False) for tag in tags if _valid(tag, "label tag")}


def reconcile(
    index: DatastoreIndex,
    images: Dict[str, Found],
    labels: Dict[str, Dict[str, Found]],
    image_path: Callable[[str, str], Path],
    label_path: Callable[[str, str, str], Path],
) -> int:
    """Brings the index in line with what is on disk, in one transaction.

    Rows whose file is gone are deleted (an image's labels with it); files without a row get one;
    rows whose file changed size or time get the new values and lose their digest (recomputed lazily).

    Args:
        index: the index.
        images: images found on disk, by id.
        labels: labels found on disk, ``{tag: {image_id: found}}``.
        image_path: gives an image's path from its id and extension.
        label_path: gives a label's path from its tag, image id and extension.

    Returns:
        The number of rows inserted, updated or deleted.
    """
    changes = 0
    now = time.time()
    with index.write() as c:
        known = set()
        for row in index.all_images(c):
            image_id = row["id"]
            st = stat_path(image_path(image_id, row["ext"]))
            ext, is_dir = row["ext"], bool(row["is_dir"])
            if st is None and image_id in images:  # same id, other extension
                ext, is_dir = images[image_id].ext, images[image_id].is_dir
                st = stat_path(images[image_id].path)
            if st is None:
                logger.info("Image %s is gone from disk; removing it from the index", image_id)
                c.execute("DELETE FROM images WHERE id = ?", (image_id,))
                changes += 1
                continue
            known.add(image_id)
            is_dir = is_dir if ext != row["ext"] else image_path(image_id, ext).is_dir()
            if (ext, int(is_dir), st[0], st[1]) != (row["ext"], row["is_dir"], row["size"], row["mtime_ns"]):
                c.execute(
                    "UPDATE images SET ext = ?, is_dir = ?, size = ?, mtime_ns = ?, sha256 = NULL WHERE id = ?",
                    (ext, int(is_dir), st[0], st[1], image_id),
                )
                changes += 1
        for image_id, f in images.items():
            st = None if image_id in known else stat_path(f.path)
            if st is not None:
                logger.info("New image on disk: %s", f.path)
                info = {"ts": int(now), "name": f.path.name}
                index.upsert_image(c, image_id, f.ext, f.is_dir, info, st[0], st[1], None, now)
                known.add(image_id)
                changes += 1

        seen = set()
        for row in index.all_labels(c):
            key = (row["image_id"], row["tag"])
            st = stat_path(label_path(row["tag"], row["image_id"], row["ext"]))
            if st is None:
                logger.info("Label %s/%s is gone from disk; removing it from the index", *key)
                c.execute("DELETE FROM labels WHERE image_id = ? AND tag = ?", key)
                changes += 1
                continue
            seen.add(key)
            if (st[0], st[1]) != (row["size"], row["mtime_ns"]):
                c.execute(
                    "UPDATE labels SET size = ?, mtime_ns = ?, sha256 = NULL WHERE image_id = ? AND tag = ?",
                    (st[0], st[1], *key),
                )
                changes += 1
        for tag, found in labels.items():
            for image_id, f in found.items():
                if (image_id, tag) in seen:
                    continue
                if image_id not in known:
                    logger.debug("Ignoring label %s: no image %r", f.path, image_id)
                    continue
                st = stat_path(f.path)
                if st is not None:
                    info = {"ts": int(now), "name": f.path.name}
                    index.upsert_label(c, image_id, tag, f.ext, False, info, st[0], st[1], None, now)
                    changes += 1
    return changes


def import_v2(index: DatastoreIndex, config_path: Path) -> int:
    """Imports MONAI Label's ``datastore_v2.json`` into an empty index, once.

    Sizes, times and digests are left for :func:`reconcile` to fill in (it also drops entries whose
    files are gone). A file that cannot be parsed is logged and skipped: the folder scan still finds
    the data, only the info dicts are lost.

    Args:
        index: the index.
        config_path: the JSON file.

    Returns:
        The number of images imported.
    """
    if not config_path.is_file() or index.get_meta(V2_IMPORTED) or index.count_images():
        return 0
    try:
        data: Dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
        objects: Dict[str, Any] = dict(data.get("objects") or {})
    except (OSError, ValueError, TypeError, AttributeError) as e:
        logger.warning("Cannot import %s: %s", config_path, e)
        return 0
    now = time.time()
    imported = 0
    with index.write() as c:
        if index.count_images(c):
            return 0
        for key in ("name", "description"):
            if isinstance(data.get(key), str):
                index.set_meta(c, key, data[key])
        for image_id, obj in objects.items():
            image = _dict((obj or {}).get("image"))
            if not _valid(image_id, "image id"):
                logger.warning("Skipping image %r of %s: invalid id", image_id, config_path)
                continue
            info = _dict(image.get("info"))
            added = _number(info.get("ts"), now)
            index.upsert_image(c, image_id, str(image.get("ext", "")), False, info, -1, -1, None, added)
            imported += 1
            for tag, label in _dict(obj.get("labels")).items():
                label = _dict(label)
                if _valid(tag, "label tag"):
                    linfo = _dict(label.get("info"))
                    index.upsert_label(
                        c,
                        image_id,
                        tag,
                        str(label.get("ext", "")),
                        False,
                        linfo,
                        -1,
                        -1,
                        None,
                        _number(linfo.get("ts"), now),
                    )
        index.set_meta(c, V2_IMPORTED, str(int(now)))
    logger.info("Imported %d images from %s", imported, config_path)
    return imported


def _dict(value: Any) -> Dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
