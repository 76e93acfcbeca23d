"""The mask writer's fast paths: float masks as MONAI's post-transforms leave them, tiled transposes, ISA-L gzip."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Activationsd, AsDiscreted, Compose, SqueezeDimd

from monailabel.transform.argmax import ArgmaxLabelsd
from monailabel.transform.writer import PreparedMask, Writer, _fortran_order, encode_mask, smallest_integer_dtype
from monailabel.utils.others import fastgzip


def _logits(channels: int, shape=(37, 33, 20)) -> MetaTensor:
    torch.manual_seed(channels)
    return MetaTensor(torch.randn(channels, *shape), affine=torch.diag(torch.tensor([0.8, 0.9, 2.5, 1.0])))


@pytest.mark.parametrize("channels", [2, 3, 5])
def test_float_mask_of_standard_post_transforms_equals_the_integer_path(channels: int) -> None:
    """Activationsd + AsDiscreted (a float mask) and the template's argmax write the same file."""
    logits = _logits(channels)
    standard = Compose([Activationsd(keys="pred", softmax=True), AsDiscreted(keys="pred", argmax=True),
                        SqueezeDimd(keys="pred", dim=0)])({"pred": logits.clone()})
    template = Compose([ArgmaxLabelsd(keys="pred"), SqueezeDimd(keys="pred", dim=0)])({"pred": logits.clone()})
    assert standard["pred"].dtype == torch.float32 and template["pred"].dtype == torch.uint8
    a, _ = Writer(label="pred").prepare({**standard, "result_extension": ".nii"})
    b, _ = Writer(label="pred").prepare({**template, "result_extension": ".nii"})
    assert a is not None and b is not None
    assert a.array.dtype == np.uint8 and b.array.dtype == np.uint8
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)
    assert encode_mask(a, ".nii") == encode_mask(b, ".nii")
    assert encode_mask(a, ".nii.gz") == encode_mask(b, ".nii.gz")


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.0, 1.0, 2.0], np.uint8),
        ([-1.0, 300.0], np.int16),
        ([1.0, 300.0], np.uint16),
        ([1.0, 3e9], np.uint32),
        ([0.5, 1.0], None),
        ([np.nan, 1.0], None),
        ([1.0, np.inf], None),
        ([-np.inf, 1.0], None),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smallest_integer_dtype_of_floats(values, expected, dtype) -> None:
    arr = np.array(values * 50, dtype=dtype).reshape(len(values), 50)
    got = smallest_integer_dtype(arr)
    assert (got is None) if expected is None else (got == np.dtype(expected))


def test_a_fractional_float_mask_is_written_as_float() -> None:
    pred = MetaTensor(torch.full((1, 4, 4, 4), 0.5), affine=torch.eye(4))
    mask, _ = Writer(label="pred").prepare({"pred": pred, "result_extension": ".nii"})
    assert mask is not None and mask.array.dtype == np.float32
    img = nib.Nifti1Image.from_bytes(encode_mask(mask, ".nii"))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), np.full((4, 4, 4), 0.5, np.float32))


@pytest.mark.parametrize("shape", [(1, 1, 1), (31, 33, 65), (64, 3, 70), (5, 6, 7, 2)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_tiled_transpose_equals_numpy(shape, dtype) -> None:
    arr = np.random.default_rng(0).integers(0, 100, size=shape).astype(dtype)
    out = _fortran_order(arr)
    assert out.flags.f_contiguous
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_nifti_written_in_one_buffer_reads_back_with_nibabel(tmp_path, dtype) -> None:
    arr = np.random.default_rng(1).integers(0, 9, size=(9, 8, 7)).astype(dtype)
    affine = np.array([[0.5, 0, 0, 10], [0, 0.7, 0, -3], [0, 0, 2.0, 4], [0, 0, 0, 1]])
    for ext in (".nii", ".nii.gz"):
        path = tmp_path / f"m{ext}"
        path.write_bytes(encode_mask(PreparedMask(arr, affine, ext)))
        img = nib.load(str(path))
        assert img.get_data_dtype() == np.dtype(dtype)
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), arr)
        np.testing.assert_allclose(img.affine, affine)


def test_gzip_drop_in_output_is_standard_gzip() -> None:
    """What the fast gzip writes, the standard library and nibabel read (and the reverse)."""
    arr = (np.random.default_rng(2).random((40, 30, 20)) > 0.7).astype(np.uint8)
    data = encode_mask(PreparedMask(arr, np.eye(4), ".nii.gz"))
    img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), arr)
    payload = bytes(range(256)) * 1000
    assert gzip.decompress(fastgzip.compress(payload)) == payload
    assert fastgzip.decompress(gzip.compress(payload, 6)) == payload


def test_nibabel_reads_gz_through_the_drop_in(tmp_path) -> None:
    arr = np.random.default_rng(3).integers(-5, 5, size=(11, 12, 13)).astype(np.int16)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))  # nibabel's own (zlib) gzip
    fastgzip.install_nibabel_reader()
    fastgzip.install_nibabel_reader()  # idempotent
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(path)).dataobj), arr)
    nib.save(nib.Nifti1Image(arr * 2, np.eye(4)), str(path))  # writing still works after the hook
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(path)).dataobj), arr * 2)


def test_backend_is_isal() -> None:
    assert fastgzip.BACKEND == "isal"  # a dependency of the server and SDK (pyproject.toml)
