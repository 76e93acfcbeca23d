"""Writer: dtype selection, NIfTI / NRRD / PNG output, geometry from the reference image."""

from __future__ import annotations

import gzip
import os
import struct

import nibabel as nib
import nrrd
import numpy as np
import pytest
from monai.data import MetaTensor
from monai.transforms import LoadImage

from monailabel.transform.writer import ClassificationWriter, Writer, smallest_integer_dtype

from .conftest import AFFINE


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([0.0, 1.0, 255.0], dtype=np.float32), np.uint8),
        (np.array([0, 300], dtype=np.int64), np.uint16),
        (np.array([0, 70000], dtype=np.float64), np.uint32),
        (np.array([-1, 5], dtype=np.int32), np.int8),
        (np.array([True, False]), np.uint8),
        (np.array([0.0, 0.5], dtype=np.float32), None),
        (np.array([0.0, np.nan], dtype=np.float32), None),
    ],
)
def test_smallest_integer_dtype(values, expected):
    result = smallest_integer_dtype(values)
    assert (result is None) if expected is None else (result == np.dtype(expected))


def _written(path: str) -> nib.Nifti1Image:
    img = nib.load(path)
    img = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)  # read before the file goes
    os.unlink(path)
    return img


def test_float_mask_written_as_uint8_nii_gz_with_metatensor_affine():
    mask = np.zeros((1, 6, 7, 8), dtype=np.float32)
    mask[0, 1:3, 2:4, 3:5] = 2
    data = {"pred": MetaTensor(mask, affine=AFFINE), "result": {"k": 1}}
    path, result = Writer(label="pred", json="result")(data)
    assert path.endswith(".nii.gz") and result == {"k": 1}
    with gzip.open(path) as f:
        assert struct.unpack("<i", f.read(4))[0] == 348  # a NIfTI-1 header, gzip-compressed
    img = _written(path)
    assert img.get_data_dtype() == np.uint8 and img.shape == (6, 7, 8)
    np.testing.assert_allclose(img.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(img.dataobj), mask[0])


def test_requested_dtype_and_nii_extension():
    data = {"pred": np.ones((4, 4, 4), dtype=np.uint8), "result_extension": ".nii", "result_dtype": "float32"}
    path, _ = Writer()(data)
    assert path.endswith(".nii") and not path.endswith(".nii.gz")
    assert _written(path).get_data_dtype() == np.float32


def test_probabilities_stay_float():
    data = {"pred": np.full((3, 3, 3), 0.25, dtype=np.float64)}
    path, _ = Writer()(data)
    assert _written(path).get_data_dtype() == np.float32


def test_nrrd_round_trips_voxels_and_geometry():
    mask = np.zeros((5, 6, 7), dtype=np.int64)
    mask[1:4, 2:5, 3:6] = 1
    mask[0, 0, 0] = 3
    data = {"pred": mask, "image": MetaTensor(np.zeros((1, 5, 6, 7), np.float32), affine=AFFINE)}
    path, _ = Writer()(dict(data, result_extension=".nrrd", result_compress=True))
    try:
        voxels, header = nrrd.read(path)
        assert voxels.dtype == np.uint8 and header["encoding"] == "gzip"
        assert header["space"] == "left-posterior-superior"
        loaded = LoadImage(image_only=True, reader="NrrdReader")(path)
        np.testing.assert_array_equal(np.asarray(loaded), mask)
        np.testing.assert_allclose(np.asarray(loaded.affine), AFFINE, atol=1e-6)
    finally:
        os.unlink(path)


def test_image_meta_dict_fallback_only_on_the_same_grid():
    meta = {"affine": AFFINE, "spatial_shape": np.array([4, 4, 4])}
    path, _ = Writer()({"pred": np.ones((4, 4, 4)), "image_meta_dict": meta})
    np.testing.assert_allclose(_written(path).affine, AFFINE)
    path, _ = Writer()({"pred": np.ones((2, 2, 2)), "image_meta_dict": meta})
    np.testing.assert_allclose(_written(path).affine, np.eye(4))


def test_png_for_2d_and_no_file_when_asked():
    mask = np.zeros((5, 3), dtype=np.float32)  # (x, y) as MONAI indexes 2D images
    mask[1, 2] = 1
    path, _ = Writer()({"pred": mask[None], "result_extension": ".png"})
    with open(path, "rb") as f:
        head = f.read(33)
    os.unlink(path)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, color = struct.unpack(">IIBB", head[16:26])
    assert (width, height, depth, color) == (5, 3, 8, 0)

    assert Writer(json="result")({"pred": mask, "result": {"a": 1}, "result_write_to_file": False}) == (None, {"a": 1})


def test_classification_writer_names_classes():
    assert ClassificationWriter(label_names={0: "cat", 1: "dog"})({"pred": np.array([1, 0])}) == (
        None,
        {"prediction": ["dog", "cat"]},
    )
