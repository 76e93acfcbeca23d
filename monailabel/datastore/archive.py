"""Zip archives of a datastore: MONAI Label's dataset download, and a series folder as one download."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List

from monailabel.datastore.files import iter_tree_files

__all__ = ["folder_zip", "write_dataset_archive"]


def _add(archive: zipfile.ZipFile, path: Path, prefix: str) -> None:
    if path.is_dir():
        for f in iter_tree_files(path):
            archive.write(f, arcname=f"{prefix}{path.name}/{f.relative_to(path).as_posix()}")
    else:
        archive.write(path, arcname=f"{prefix}{path.name}")


def write_dataset_archive(datalist: List[Dict[str, Any]], metadata: Dict[str, Any]) -> str:
    """Writes ``image/<file>``, ``label/<file>`` for each case, and ``metadata.json``, to a new zip.

    A DICOM series goes in as ``image/<id>/<file>``.

    Args:
        datalist: ``[{"image": path, "label": path}, ...]``.
        metadata: written as ``metadata.json``.

    Returns:
        The zip's path, in the system's temporary folder; the caller deletes it.
    """
    fd, name = tempfile.mkstemp(prefix="monailabel-dataset-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as archive:
            for item in datalist:
                _add(archive, Path(item["image"]), "image/")
                _add(archive, Path(item["label"]), "label/")
            archive.writestr("metadata.json", json.dumps(metadata, indent=2, default=str))
    except BaseException:
        os.unlink(name)
        raise
    return name


def folder_zip(folder: Path) -> io.BytesIO:
    """Returns an uncompressed zip of a folder's files (paths relative to it), in memory.

    Args:
        folder: the folder, such as a DICOM series.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for f in iter_tree_files(folder):
            archive.write(f, arcname=f.relative_to(folder).as_posix())
    buf.seek(0)
    return buf
