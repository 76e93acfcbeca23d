"""Phantoms as DICOM series: one instance per slice with real geometry, for PACS tests and demos.

The voxels of :func:`~monailabel.datasets.phantoms.make_phantom` are stored as unsigned values with a
rescale slope and intercept (CT: ``HU = stored - 1024``), the slices at ``ImagePositionPatient`` along
the normal of ``ImageOrientationPatient``. Reading the series back (``monailabel.datastore.dicom_series``)
gives the phantom's values and, in RAS, its geometry.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from monailabel.datasets.phantoms import make_phantom

__all__ = ["phantom_series", "write_series"]

_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def phantom_series(
    shape: Sequence[int] = (32, 32, 12),
    seed: int = 0,
    spacing: Sequence[float] = (1.5, 1.5, 2.0),
    modality: str = "CT",
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (-24.0, -24.0, -12.0),
    study_uid: Optional[str] = None,
    series_uid: Optional[str] = None,
    patient_id: str = "PHANTOM",
    description: str = "phantom",
) -> Tuple[List, np.ndarray, np.ndarray]:
    """Makes a phantom as a DICOM series.

    Args:
        shape: ``(columns, rows, slices)``.
        seed: phantom seed.
        spacing: ``(column spacing, row spacing, slice spacing)`` in mm.
        modality: ``CT`` (slope 1, intercept -1024) or ``MR`` (slope 0.5, intercept 0).
        orientation: ``ImageOrientationPatient`` (row cosine, column cosine).
        origin: ``ImagePositionPatient`` of the first slice.
        study_uid: the study (a new one when None).
        series_uid: the series (a new one when None).
        patient_id: patient id and name.
        description: series description.

    Returns:
        ``(datasets in slice order, phantom values (columns, rows, slices), label)``.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    image, label, _ = make_phantom(shape, seed, spacing)
    if modality == "CT":
        slope, intercept, sop_class = 1.0, -1024.0, _CT_STORAGE
        values = image.astype(np.float64)
    else:
        slope, intercept, sop_class = 0.5, 0.0, _MR_STORAGE
        values = np.clip(image.astype(np.float64), 0, None)
        values = np.round(values / slope) * slope
    stored = np.round((values - intercept) / slope).astype(np.uint16)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    orient = np.array(orientation, dtype=np.float64)
    normal = np.cross(orient[:3], orient[3:])
    now = datetime.datetime(2024, 1, 2, 3, 4, 5)
    datasets = []
    for k in range(stored.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.preamble = b"\x00" * 128  # written as a DICOM file ("DICM" header) wherever it goes
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        ds.PatientID = patient_id
        ds.PatientName = f"{patient_id}^TEST"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = description
        ds.Manufacturer = "MONAI Label phantoms"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PositionReferenceIndicator = ""
        ds.ImageOrientationPatient = [float(v) for v in orient]
        position = np.array(origin, dtype=np.float64) + normal * spacing[2] * k
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.SliceLocation = round(float(position @ normal), 4)
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing, column spacing
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = 120
        else:
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.EchoTime = 10
            ds.RepetitionTime = 500
            ds.EchoTrainLength = 1
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows x columns
        datasets.append(ds)
    return datasets, values.astype(np.float32), label


def write_series(datasets: Sequence, folder: Path) -> List[Path]:
    """Writes instances as ``folder/<n>.dcm`` files and returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
