"""Typed, immutable views of the datastore's index rows, for the server and for tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

__all__ = ["ImageRecord", "LabelRecord"]


@dataclass(frozen=True)
class LabelRecord:
    """One label of an image.

    Attributes:
        id: the label id, which is the image id (MONAI Label's ``label_id``).
        tag: the label tag (``final``, ``original``, or any other).
        ext: the file extension, such as ``.nii.gz``.
        info: the label's info dict (a copy).
        size: size in bytes.
        sha256: hex SHA-256 of the file.
        path: absolute path of the file.
        added_ts: when it was added or first seen, in seconds since the epoch.
    """

    id: str
    tag: str
    ext: str
    info: Dict[str, Any]
    size: int
    sha256: str
    path: str
    added_ts: float

    @property
    def image_id(self) -> str:
        """The id of the image the label belongs to (same as :attr:`id`)."""
        return self.id


@dataclass(frozen=True)
class ImageRecord:
    """One image with its labels.

    Attributes:
        id: the image id.
        ext: the file extension, such as ``.nii.gz``; ``""`` for a DICOM series folder.
        info: the image's info dict (a copy).
        size: size in bytes (for a series folder, the sum of its files).
        sha256: hex SHA-256 of the file (for a series folder, see ``files.sha256_path``); ``""`` only
            when :meth:`LocalDatastore.list_image_records` was asked not to compute missing digests.
        path: absolute path of the file or series folder.
        added_ts: when it was added or first seen, in seconds since the epoch.
        is_dicom_series: whether ``path`` is a folder of DICOM files.
        labels: the image's labels by tag.
    """

    id: str
    ext: str
    info: Dict[str, Any]
    size: int
    sha256: str
    path: str
    added_ts: float
    is_dicom_series: bool = False
    labels: Dict[str, LabelRecord] = field(default_factory=dict)
