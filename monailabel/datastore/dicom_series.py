"""DICOM image series as volumes: checks that a series is one, and its conversion to NIfTI.

A series is a volume when its instances are parallel slices of one grid: same rows, columns, pixel
spacing and orientation, evenly spaced along the slice normal, at least two of them, and no localizer
among them. The voxels are the stored values with the rescale slope and intercept applied; the affine
maps them to RAS (NIfTI's convention; DICOM's patient coordinates are LPS).

Array layout: ``volume[i, j, k]`` is column ``i``, row ``j`` of slice ``k``, with slices sorted along the
normal (row cosine x column cosine). :func:`sort_slices` gives that slice order, which the DICOM SEG
writer uses to put a label's slices back on their source instances.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = [
    "SeriesVolume",
    "sort_slices",
    "series_to_volume",
    "series_geometry",
    "save_nifti",
    "read_archive",
    "read_folder",
    "series_archive_to_nifti",
]

_ORIENTATION_TOL = 1e-3  # cosines
_SPACING_TOL = 0.02  # fraction of the slice spacing
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_MAX_ARCHIVE_MEMBERS = 4096


class SeriesVolume:
    """A series as a volume.

    Attributes:
        array: ``(columns, rows, slices)`` float32 voxels (rescaled), or int16 where they fit exactly.
        affine: 4x4 voxel-to-RAS affine.
        datasets: the instances in slice order.
    """

    def __init__(self, array: np.ndarray, affine: np.ndarray, datasets: List) -> None:
        self.array = array
        self.affine = affine
        self.datasets = datasets


def _not_volume(msg: str, reason: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.PRECONDITION_FAILED, f"the series is not a volume: {msg}", reason=reason)


def _floats(ds, keyword: str, n: int) -> np.ndarray:
    value = getattr(ds, keyword, None)
    if value is None or len(value) != n:
        raise _not_volume(f"an instance has no {keyword}", "DICOM_GEOMETRY_MISSING")
    return np.array([float(v) for v in value], dtype=np.float64)


def series_geometry(datasets: Sequence) -> Tuple[List, np.ndarray]:
    """Checks that instances form one volume and returns them in slice order with the LPS affine.

    Args:
        datasets: pydicom datasets of one series (pixel data not needed).

    Returns:
        ``(sorted datasets, 4x4 voxel-to-LPS affine)``.

    Raises:
        MONAILabelException: PRECONDITION_FAILED naming why the series is not a volume (a localizer,
            a single slice, mixed sizes or orientations, missing or uneven slices).
    """
    images = [ds for ds in datasets if "SOPInstanceUID" in ds]
    if len(images) < 2:
        msg = f"it has {len(images)} instance(s); a volume needs two or more slices"
        raise _not_volume(msg, "DICOM_TOO_FEW_SLICES")
    for ds in images:
        image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]
        if "LOCALIZER" in image_type:
            raise _not_volume("it holds a localizer (ImageType LOCALIZER)", "DICOM_LOCALIZER")
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise _not_volume("multi-frame instances are not read as slices", "DICOM_MULTIFRAME")
    first = images[0]
    orientation = _floats(first, "ImageOrientationPatient", 6)
    spacing = _floats(first, "PixelSpacing", 2)
    size = (int(first.Rows), int(first.Columns))
    for ds in images[1:]:
        if np.abs(_floats(ds, "ImageOrientationPatient", 6) - orientation).max() > _ORIENTATION_TOL:
            raise _not_volume("its slices have different orientations", "DICOM_MIXED_ORIENTATION")
        if (int(ds.Rows), int(ds.Columns)) != size or np.abs(_floats(ds, "PixelSpacing", 2) - spacing).max() > 1e-4:
            raise _not_volume("its slices have different sizes or pixel spacings", "DICOM_MIXED_SIZE")
    row_cos, col_cos = orientation[:3], orientation[3:]
    normal = np.cross(row_cos, col_cos)
    positions = np.array([_floats(ds, "ImagePositionPatient", 3) for ds in images])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    images = [images[i] for i in order]
    positions, along = positions[order], along[order]
    steps = np.diff(along)
    if steps.min() <= 1e-4:
        raise _not_volume("two slices share a position", "DICOM_DUPLICATE_SLICE")
    step = float(np.median(steps))
    if np.abs(steps - step).max() > _SPACING_TOL * step:
        raise _not_volume(
            f"slices are unevenly spaced ({steps.min():.3g} to {steps.max():.3g} mm): slices are missing",
            "DICOM_MISSING_SLICES",
        )
    # positions off the normal line mean a gantry tilt or a mix of stacks: not one grid
    drift = positions - positions[0] - np.outer(along - along[0], normal)
    if np.abs(drift).max() > max(0.01 * step, 1e-3) * len(images):
        raise _not_volume("slice positions do not lie along the slice normal", "DICOM_TILTED")
    affine = np.eye(4)
    affine[:3, 0] = row_cos * spacing[1]  # i: along a row (column index), spacing between columns
    affine[:3, 1] = col_cos * spacing[0]  # j: down a column (row index), spacing between rows
    affine[:3, 2] = normal * step
    affine[:3, 3] = positions[0]
    return images, affine


def sort_slices(datasets: Sequence) -> List:
    """Returns the instances of a volume series in slice order (as the volume's third axis)."""
    return series_geometry(datasets)[0]


def series_to_volume(datasets: Sequence) -> SeriesVolume:
    """Builds the volume of a series.

    Args:
        datasets: pydicom datasets of one series, with pixel data.

    Raises:
        MONAILabelException: PRECONDITION_FAILED when the instances are not one volume.
    """
    images, affine_lps = series_geometry(datasets)
    slices = []
    exact = True
    for ds in images:
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises several types for undecodable pixel data
            raise MONAILabelException(
                MONAILabelError.PRECONDITION_FAILED,
                f"cannot decode the pixel data of an instance: {exc}",
                reason="DICOM_PIXEL_DATA",
            ) from exc
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        exact = exact and slope == int(slope) and intercept == int(intercept)
        slices.append(pixels.astype(np.float64) * slope + intercept)
    stack = np.stack(slices, axis=-1)  # (rows, columns, slices)
    array = np.ascontiguousarray(np.transpose(stack, (1, 0, 2)))
    if exact and array.min() >= np.iinfo(np.int16).min and array.max() <= np.iinfo(np.int16).max:
        array = array.astype(np.int16)
    else:
        array = array.astype(np.float32)
    return SeriesVolume(array, _LPS_TO_RAS @ affine_lps, images)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Union[str, os.PathLike]) -> None:
    """Writes a volume as NIfTI (the format from the name: ``.nii`` or ``.nii.gz``)."""
    import nibabel as nib

    image = nib.Nifti1Image(array, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    nib.save(image, os.fspath(path))


def _parse(blob: bytes):
    import pydicom

    try:
        return pydicom.dcmread(io.BytesIO(blob))
    except Exception:
        return None


def read_archive(path: Union[str, os.PathLike], max_bytes: int = 2 << 30) -> List:
    """Reads the DICOM instances of a zip or tar archive (other members are skipped).

    Args:
        path: the archive.
        max_bytes: most uncompressed bytes read (a guard against archive bombs).

    Raises:
        MONAILabelException: INVALID_INPUT when it is no archive, holds no DICOM instance or too much.
    """
    path = Path(path)
    blobs: List[bytes] = []
    total = 0

    def take(size: int) -> None:
        nonlocal total
        total += size
        if total > max_bytes or len(blobs) >= _MAX_ARCHIVE_MEMBERS:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                "the archive is too large to read as one series",
                reason="ARCHIVE_TOO_LARGE",
            )

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.is_dir():
                    continue
                take(info.file_size)
                blobs.append(z.read(info))
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as t:
            for member in t:
                if not member.isfile():
                    continue
                take(member.size)
                f = t.extractfile(member)
                if f is not None:
                    blobs.append(f.read())
    else:
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT,
            "a DICOM series must come as a zip or tar of instances",
            reason="NOT_AN_ARCHIVE",
        )
    datasets = [ds for ds in (_parse(b) for b in blobs) if ds is not None and "SOPInstanceUID" in ds]
    if not datasets:
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT, "the archive holds no DICOM instance", reason="NO_DICOM_INSTANCES"
        )
    return datasets


def read_folder(folder: Union[str, os.PathLike]) -> List:
    """Reads the DICOM instances among a folder's direct children (a local DICOM series folder)."""
    import pydicom

    datasets = []
    for child in sorted(Path(folder).iterdir()):
        if child.is_file() and not child.name.startswith("."):
            try:
                datasets.append(pydicom.dcmread(child, stop_before_pixels=True))
            except Exception:
                continue
    return [ds for ds in datasets if "SOPInstanceUID" in ds]


def series_archive_to_nifti(
    archive: Union[str, os.PathLike], output: Union[str, os.PathLike], series_uid: str = ""
) -> Tuple[str, dict]:
    """Converts a zip or tar of one DICOM series into a NIfTI volume.

    The output is written next to itself under a temporary name and renamed into place, so a failure
    leaves nothing behind.

    Args:
        archive: the archive.
        output: the NIfTI file to write (``.nii`` or ``.nii.gz``).
        series_uid: the series to take when the archive holds several; required then.

    Returns:
        ``(series instance uid, info)``, with info the series' description, modality and slice count.

    Raises:
        MONAILabelException: INVALID_INPUT for no archive, several series without ``series_uid``, or an
            unknown ``series_uid``; PRECONDITION_FAILED when the series is not a volume.
    """
    datasets = read_archive(archive)
    series = sorted({str(ds.SeriesInstanceUID) for ds in datasets if "SeriesInstanceUID" in ds})
    if series_uid:
        if series_uid not in series:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT, f"the archive holds no series {series_uid}", field="series_uid"
            )
    elif len(series) != 1:
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT,
            f"the archive holds {len(series)} series; name the one to read",
            reason="DICOM_SEVERAL_SERIES",
        )
    else:
        series_uid = series[0]
    volume = series_to_volume([ds for ds in datasets if str(ds.get("SeriesInstanceUID", "")) == series_uid])
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if output.name.endswith(".nii.gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=output.parent)
    os.close(fd)
    try:
        save_nifti(volume.array, volume.affine, tmp)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    first = volume.datasets[0]
    info = {
        "series_instance_uid": series_uid,
        "study_instance_uid": str(first.get("StudyInstanceUID", "")),
        "modality": str(first.get("Modality", "")),
        "series_description": str(first.get("SeriesDescription", "")),
        "slices": len(volume.datasets),
    }
    return series_uid, info
