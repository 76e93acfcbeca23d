"""DICOM series folders are images: found by scans, added as folders, read by MONAI's LoadImage."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from monai.transforms import LoadImage

from monailabel.datastore import LocalDatastore
from monailabel.datastore.dicom import is_dicom_series

from .conftest import make_dicom_series, make_nifti


def test_series_folder_found_by_scan_and_loaded_with_monai(ds: LocalDatastore, src: Path, studies: Path) -> None:
    series = make_dicom_series(studies / "ct_001", slices=4)
    (studies / "empty_folder").mkdir()
    (studies / "other").mkdir()
    (studies / "other" / "readme.txt").write_text("no dicom here")
    ds.refresh()

    assert ds.list_images() == ["ct_001"]
    uri = ds.get_image_uri("ct_001")
    assert uri == str(series)
    rec = ds.image_record("ct_001")
    assert rec.is_dicom_series and rec.ext == "" and rec.size == sum(f.stat().st_size for f in series.iterdir())
    assert len(rec.sha256) == 64

    img = LoadImage(reader="PydicomReader", image_only=True)(uri)
    assert tuple(img.shape) == (6, 5, 4)  # columns, rows, slices
    assert np.allclose(np.asarray(img[0, 0, :]), [0, 100, 200, 300])  # slices in position order
    assert np.allclose(np.abs(np.diag(np.asarray(img.affine))[:3]), [0.5, 0.5, 2.0])

    with zipfile.ZipFile(io.BytesIO(ds.get_image("ct_001").read())) as z:
        assert sorted(z.namelist()) == ["IM000", "IM001.dcm", "IM002", "IM003.dcm"]

    ds.save_label("ct_001", str(make_nifti(src / "seg.nii.gz", 1.0, shape=(6, 5, 4))), "final", {})
    assert ds.datalist() == [{"image": str(series), "label": str(studies / "labels" / "final" / "ct_001.nii.gz")}]


def test_add_series_folder(ds: LocalDatastore, src: Path, studies: Path) -> None:
    series = make_dicom_series(src / "series_A", slices=3)
    assert is_dicom_series(series) and not is_dicom_series(src)
    assert ds.add_image("", str(series), {"modality": "CT"}) == "series_A"
    dest = studies / "series_A"
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in series.iterdir())
    rec = ds.image_record("series_A")
    assert rec.is_dicom_series and rec.info["modality"] == "CT"
    img = LoadImage(image_only=True)(ds.get_image_uri("series_A"))
    assert tuple(img.shape) == (6, 5, 3)

    again = make_dicom_series(src / "series_B", slices=4)
    ds.add_image("series_A", str(again), {}, overwrite=True)  # a folder replaced by a folder
    assert len(list(dest.iterdir())) == 4
    assert ds.image_record("series_A").sha256 != rec.sha256
    ds.remove_image("series_A")
    assert not dest.exists() and ds.list_images() == []
    assert not [p for p in studies.iterdir() if ".trash-" in p.name or ".tmp-" in p.name]
