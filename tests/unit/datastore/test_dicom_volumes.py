"""DICOM series as volumes and labels as DICOM SEG, without a PACS: geometry, checks, segment names."""

from __future__ import annotations

import io
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from monailabel.datasets.dicom_phantoms import phantom_series, write_series
from monailabel.datastore.dicom_seg import label_to_seg, nifti_to_dicom_seg_file, seg_to_label
from monailabel.datastore.dicom_series import read_folder, series_geometry, series_to_volume
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

OBLIQUE = (np.cos(0.3), np.sin(0.3), 0.0, 0.0, 0.0, -1.0)


def _ras_of_voxel(ds, i: int, j: int) -> np.ndarray:
    """Where DICOM puts column i, row j of an instance, in RAS."""
    o = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    lps = np.array([float(v) for v in ds.ImagePositionPatient]) + o[:3] * col_spacing * i + o[3:] * row_spacing * j
    return lps * [-1, -1, 1]


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1), OBLIQUE])
def test_volume_affine_puts_every_voxel_where_dicom_does(orientation) -> None:
    datasets, values, _ = phantom_series((12, 10, 6), 1, spacing=(0.8, 1.2, 2.5), orientation=orientation)
    shuffled = list(datasets)
    random.Random(0).shuffle(shuffled)
    volume = series_to_volume(shuffled)
    np.testing.assert_array_equal(volume.array, values)
    for k in (0, 3, 5):
        for i, j in ((0, 0), (11, 0), (3, 9)):
            np.testing.assert_allclose(volume.affine @ [i, j, k, 1], [*_ras_of_voxel(datasets[k], i, j), 1], atol=1e-3)


def test_mr_rescale_slope_gives_float_values() -> None:
    datasets, values, _ = phantom_series((8, 8, 4), 2, modality="MR")
    volume = series_to_volume(datasets)
    assert volume.array.dtype == np.float32 and float(datasets[0].RescaleSlope) == 0.5
    np.testing.assert_allclose(volume.array, values)


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda ds: ds[2].__setattr__("ImagePositionPatient", ds[1].ImagePositionPatient), "DICOM_DUPLICATE_SLICE"),
        (lambda ds: ds[4].__setattr__("Rows", 9), "DICOM_MIXED_SIZE"),
        (lambda ds: [d.__setattr__("ImagePositionPatient", [float(d.ImagePositionPatient[0]) + 3 * n,
                                                            *d.ImagePositionPatient[1:]]) for n, d in enumerate(ds)],
         "DICOM_TILTED"),
        (lambda ds: ds[0].__delattr__("ImageOrientationPatient"), "DICOM_GEOMETRY_MISSING"),
    ],
)
def test_series_that_is_no_volume_says_why(change, reason: str) -> None:
    datasets, _, _ = phantom_series((8, 8, 6), 3)
    change(datasets)
    with pytest.raises(MONAILabelException) as info:
        series_geometry(datasets)
    assert info.value.error == MONAILabelError.PRECONDITION_FAILED and info.value.reason == reason


def test_seg_round_trip_keeps_values_and_names_of_several_labels() -> None:
    datasets, _, _ = phantom_series((16, 12, 5), 4, orientation=OBLIQUE)
    label = np.zeros((16, 12, 5), np.uint8)
    label[2:6, 3:7, 1:3] = 1
    label[9:14, 2:5, 2:5] = 3
    names = {"liver": 1, "spleen": 3}
    seg = label_to_seg(label, list(reversed(datasets)), names, model="segmentation")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen"]
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
    out, segments = seg_to_label(seg, datasets, names)
    np.testing.assert_array_equal(out, label)
    assert segments == names
    # without the app's names a segment reads as its number
    out, segments = seg_to_label(seg, datasets, None)
    assert segments == {"liver": 1, "spleen": 2}
    np.testing.assert_array_equal(out, np.where(label == 3, 2, label))


def test_seg_without_source_references_is_placed_by_plane_positions() -> None:
    datasets, _, label = phantom_series((16, 12, 5), 8)
    seg = label_to_seg(label, datasets, {"organ": 1})
    stripped = pydicom.dcmread(_bytes_of(seg))
    for frame in stripped.PerFrameFunctionalGroupsSequence:
        del frame.DerivationImageSequence  # another writer's layout: positions only
    out, names = seg_to_label(stripped, list(reversed(datasets)), {"organ": 1})
    np.testing.assert_array_equal(out, label)
    assert names == {"organ": 1}
    moved = pydicom.dcmread(_bytes_of(stripped))
    moved.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0].ImagePositionPatient[2] += 0.9
    with pytest.raises(MONAILabelException) as info:
        seg_to_label(moved, datasets, {"organ": 1})
    assert info.value.reason == "SEG_GRID_MISMATCH" and "frame 3" in info.value.msg


def _bytes_of(ds) -> io.BytesIO:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def test_seg_of_another_series_and_wrong_grid_are_refused() -> None:
    a, _, label = phantom_series((8, 8, 4), 5)
    b, _, _ = phantom_series((8, 8, 4), 6)
    seg = label_to_seg(label, a, {"organ": 1})
    with pytest.raises(MONAILabelException) as info:
        seg_to_label(seg, b, {"organ": 1})
    assert info.value.reason == "SEG_OTHER_SERIES"
    with pytest.raises(MONAILabelException) as info:
        label_to_seg(np.zeros((8, 8, 3), np.uint8), a, {"organ": 1})
    assert info.value.error == MONAILabelError.INVALID_INPUT and info.value.reason == "LABEL_GRID_MISMATCH"


def test_dicom_seg_file_of_a_local_series_folder(tmp_path: Path) -> None:
    datasets, _, label = phantom_series((10, 10, 4), 7)
    folder = tmp_path / "series"
    write_series(datasets, folder)
    source = read_folder(folder)
    volume = series_to_volume([pydicom.dcmread(p) for p in sorted(folder.iterdir())])
    nib.save(nib.Nifti1Image(label, volume.affine), str(tmp_path / "label.nii.gz"))
    path = nifti_to_dicom_seg_file(str(tmp_path / "label.nii.gz"), source, ["organ"], "segmentation")
    try:
        seg = pydicom.dcmread(path)
        assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "organ"
        np.testing.assert_array_equal(seg_to_label(seg, source, {"organ": 1})[0], label)
    finally:
        Path(path).unlink()


def test_app_writes_dicom_seg_output_for_a_local_series_folder(tmp_path: Path) -> None:
    from monailabel.interfaces.app import MONAILabelApp

    datasets, _, label = phantom_series((10, 10, 4), 9)
    studies = tmp_path / "studies"
    write_series(datasets, studies / "ct_series")
    app = MONAILabelApp(str(tmp_path), str(studies), {"auto_update_scoring": "false"}, labels={"organ": 1})
    try:
        assert app.datastore().list_images() == ["ct_series"]
        image = app.datastore().get_image_uri("ct_series")
        path = app.dicom_seg_output(label[None], image_id="ct_series", image=image, model="segmentation")
        try:
            seg = pydicom.dcmread(path)
            assert seg.SegmentSequence[0].SegmentLabel == "organ"
            assert seg.SegmentSequence[0].SegmentAlgorithmName == "segmentation"
            np.testing.assert_array_equal(seg_to_label(seg, datasets, {"organ": 1})[0], label)
        finally:
            Path(path).unlink()
        nifti = tmp_path / "image.nii.gz"
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(nifti))
        with pytest.raises(MONAILabelException) as info:
            app.dicom_seg_output(label, image=str(nifti))
        assert info.value.error == MONAILabelError.INVALID_INPUT and "DICOM" in info.value.msg
    finally:
        app.cleanup()
