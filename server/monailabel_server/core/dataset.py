"""The datastore as a training dataset, free of protobuf (DatasetService converts).

The training datalist is MONAI Label's ``GET /datastore/?output=train``: every image with a final label,
as ids (never the server paths MONAI Label returns). The export is its ``/datastore/dataset``: a zip
of those images and final labels, written to a temporary file in the datastore's staging folder,
hashed, then streamed and removed; ``datalist.json`` inside names the pairs by their archive names.
Already compressed files (``.gz``, ``.zip``, PNG, JPEG) are stored, the rest deflated.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_server.store import ImageView, LabelView, Store

__all__ = ["DatasetCore", "Pair", "FINAL"]

FINAL = "final"
_PAGE = 1000
_STORED = (".gz", ".zip", ".png", ".jpg", ".jpeg", ".nrrd")


@dataclass
class Pair:
    """An image with its final label."""

    image: ImageView
    label: LabelView


class DatasetCore:
    """Lists and archives the image/label pairs of a datastore.

    Args:
        store: the datastore adapter.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def pairs(self, limit: int = 0) -> List[Pair]:
        """Every image with a final label, by id (the first ``limit`` when set)."""
        out: List[Pair] = []
        token = ""
        while True:
            views, token, _ = self.store.list("labeled", FINAL, _PAGE, token)
            for view in views:
                label = next((lv for lv in view.labels if lv.tag == FINAL), None)
                if label is not None:
                    out.append(Pair(view, label))
                    if limit and len(out) >= limit:
                        return out
            if not token:
                return out

    def export(self, limit: int = 0) -> Tuple[Path, str, int]:
        """Writes the archive; returns ``(temporary file, sha256, size)``. The caller removes the file.

        Raises:
            MONAILabelException: PRECONDITION_FAILED when no image has a final label.
        """
        pairs = self.pairs(limit)
        if not pairs:
            raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED,
                                      "no image has a final label: there is no dataset to export yet")
        path = self.store.staging_dir() / f"export-{uuid.uuid4().hex}.zip"
        try:
            datalist = []
            with zipfile.ZipFile(path, "w", allowZip64=True) as archive:
                for pair in pairs:
                    image_name = f"images/{pair.image.id}{_ext(pair.image.path, pair.image.ext)}"
                    label_name = f"labels/{FINAL}/{pair.image.id}{_ext(pair.label.path, pair.label.ext)}"
                    for source, name in ((pair.image.path, image_name), (pair.label.path, label_name)):
                        compression = zipfile.ZIP_STORED if name.lower().endswith(_STORED) else zipfile.ZIP_DEFLATED
                        archive.write(source, name, compress_type=compression)
                    datalist.append({"image": image_name, "label": label_name, "image_id": pair.image.id})
                archive.writestr("datalist.json", json.dumps(datalist, indent=1))
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return path, digest.hexdigest(), os.path.getsize(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise


def _ext(path: str, ext: str) -> str:
    """A file's extension as stored (``.nii.gz`` whole)."""
    if ext:
        return ext if ext.startswith(".") else f".{ext}"
    name = os.path.basename(path).lower()
    for double in (".nii.gz", ".seg.nrrd"):
        if name.endswith(double):
            return double
    return os.path.splitext(name)[1]
