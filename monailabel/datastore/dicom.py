"""Recognising DICOM series folders, which the local datastore serves as images.

A series folder is a folder whose direct children include DICOM files: files named ``*.dcm``, or
files without an extension that pydicom can parse. MONAI's ``LoadImage`` reads such a folder as one
volume (with ``PydicomReader``, or ITK where installed).

MONAI Label's import path of the DICOMweb datastore is this module: ``DICOMWebDatastore`` (a PACS as a
datastore, :mod:`monailabel.datastore.dicomweb`) and ``series_archive_to_nifti`` (a zip or tar of a
series as a NIfTI volume, :mod:`monailabel.datastore.dicom_series`) are found here, imported on first use.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monailabel.datastore.dicom_series import series_archive_to_nifti
    from monailabel.datastore.dicomweb import DICOMWebDatastore

__all__ = ["is_dicom_file", "is_dicom_series", "DICOMWebDatastore", "series_archive_to_nifti"]


def __getattr__(name: str) -> Any:
    # dicomweb-client and highdicom load only for apps that use a PACS
    if name == "DICOMWebDatastore":
        from monailabel.datastore.dicomweb import DICOMWebDatastore

        return DICOMWebDatastore
    if name == "series_archive_to_nifti":
        from monailabel.datastore.dicom_series import series_archive_to_nifti

        return series_archive_to_nifti
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_PROBE_LIMIT = 3  # extension-less files parsed before giving up on a folder


def is_dicom_file(path: Path) -> bool:
    """Whether a file is DICOM: a ``.dcm`` name, or a file without extension that pydicom can parse.

    Args:
        path: the file.
    """
    if path.name.startswith(".") or not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    return _pydicom_parses(path)


def _pydicom_parses(path: Path) -> bool:
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is a dependency
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            return False
    return "SOPClassUID" in ds or "Modality" in ds


def is_dicom_series(folder: Path) -> bool:
    """Whether a folder holds a DICOM series (DICOM files among its direct children).

    Args:
        folder: the folder.
    """
    if folder.name.startswith(".") or not folder.is_dir():
        return False
    probed = 0
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return False
    for child in children:
        if child.name.startswith(".") or not child.is_file():
            continue
        if child.suffix.lower() == ".dcm":
            return True
        if child.suffix or probed >= _PROBE_LIMIT:
            continue
        probed += 1
        if is_dicom_file(child):
            return True
    return False
