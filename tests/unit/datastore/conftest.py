"""Fixtures of the local datastore tests: tiny NIfTI volumes and DICOM series written on the spot."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from monailabel.datastore import LocalDatastore


def make_nifti(path: Path, value: float = 0.0, shape: tuple = (4, 5, 3)) -> Path:
    """Writes a tiny NIfTI volume filled with ``value`` (a different value gives different bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full(shape, value, dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def make_dicom_series(folder: Path, slices: int = 4, rows: int = 5, cols: int = 6) -> Path:
    """Writes a CT series of ``slices`` slices; odd slices are named ``*.dcm``, even ones have no extension.

    Slice ``k`` holds ``arange(rows * cols) + 100 * k``, at z = 2 k mm, pixel spacing 0.5 mm.
    """
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", "P0", k + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 2.0
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) + 100 * k).tobytes()
        ds.save_as(folder / (f"IM{k:03d}" + (".dcm" if k % 2 else "")), enforce_file_format=True)
    return folder


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A folder outside the datastore for source files."""
    folder = tmp_path / "src"
    folder.mkdir()
    return folder


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    """The studies folder (not created)."""
    return tmp_path / "studies"


@pytest.fixture
def ds(studies: Path) -> Iterator[LocalDatastore]:
    """A fresh datastore, closed after the test."""
    store = LocalDatastore(str(studies))
    yield store
    store.close()
