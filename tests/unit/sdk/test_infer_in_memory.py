"""InferTask.infer_in_memory: the mask as an array with its affine, no file; cancel as an argument;
tasks that override ``writer`` or ``__call__`` keep MONAI Label's file contract."""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any, Dict

import nibabel as nib
import numpy as np
import pytest

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks import InferTask
from monailabel.interfaces.tasks.infer_v2 import InferOutcome
from monailabel.transform.writer import PreparedMask, encode_mask

from .conftest import AFFINE
from .test_basic_infer import _FORWARDS, MyInfer, SlidingInfer, _CountingNet, _expected_mask


def _temp_files() -> set:
    return set(os.listdir(tempfile.gettempdir()))


def test_mask_comes_back_in_memory_equal_to_the_file(write_volume, checkpoint, unet):
    path, volume = write_volume()
    task = MyInfer(str(checkpoint), unet)
    assert task.writes_in_memory()
    before = _temp_files()
    outcome = task.infer_in_memory({"image": str(path), "device": "cpu"})
    assert _temp_files() - before == set(), "the in-memory path writes no file"
    assert outcome.file is None and outcome.mask is not None
    assert outcome.mask.array.dtype == np.uint8 and outcome.mask.array.shape == volume.shape
    np.testing.assert_array_equal(outcome.mask.array, _expected_mask(unet, volume))
    np.testing.assert_allclose(outcome.mask.affine, AFFINE, atol=1e-5)
    assert set(outcome.result["latencies"]) >= {"pre", "infer", "write", "total"}

    # the encoded bytes are the file __call__ writes (same voxels, same geometry)
    file, _ = task({"image": str(path), "device": "cpu"})
    try:
        from_file = nib.load(file)
        holder = nib.FileHolder(fileobj=io.BytesIO(encode_mask(outcome.mask, ".nii")))
        in_memory = nib.Nifti1Image.from_file_map({"header": holder, "image": holder})
        np.testing.assert_array_equal(np.asarray(in_memory.dataobj), np.asarray(from_file.dataobj))
        np.testing.assert_allclose(in_memory.affine, from_file.affine)
    finally:
        os.unlink(file)


def test_cancel_is_an_argument(write_volume):
    path, _ = write_volume((16, 16, 16))
    task = SlidingInfer(None, _CountingNet(), roi_size=(8, 8, 8))
    _FORWARDS.clear()
    request: Dict[str, Any] = {"image": str(path), "device": "cpu", "sw_overlap": 0.0}
    with pytest.raises(MONAILabelException) as e:
        task.infer_in_memory(request, cancel=lambda: len(_FORWARDS) > 0)
    assert e.value.error == MONAILabelError.CANCELLED
    assert _FORWARDS == [False]
    assert "cancel_check" not in request, "the caller's dict is not used as a side channel"


class _WriterOverride(MyInfer):
    def writer(self, data, extension=None, dtype=None):
        return super().writer(data, extension=".nrrd", dtype=dtype)


class _CallOverride(InferTask):
    """A classic task whose ``__call__`` MONAI Label apps override: it sees the request dict only."""

    seen: Dict[str, Any] = {}

    def __init__(self):
        super().__init__(None, None, labels=["organ"])

    def pre_transforms(self, data=None):
        return []

    def post_transforms(self, data=None):
        return []

    def __call__(self, request, callbacks=None):
        type(self).seen = dict(request)
        return np.ones((4, 5, 6), dtype=np.float32), {"k": 1}


def test_overridden_writer_keeps_its_file(write_volume, checkpoint, unet):
    path, volume = write_volume()
    task = _WriterOverride(str(checkpoint), unet)
    assert not task.writes_in_memory()
    outcome = task.infer_in_memory({"image": str(path), "device": "cpu"})
    try:
        assert outcome.mask is None and outcome.file is not None and outcome.file.endswith(".nrrd")
    finally:
        os.unlink(outcome.file)


def test_overridden_call_gets_cancel_check_in_its_dict():
    task = _CallOverride()
    outcome = task.infer_in_memory({"image": "x"}, cancel=lambda: False)
    assert callable(_CallOverride.seen.get("cancel_check")) and _CallOverride.seen["cancel_check"]() is False
    assert outcome.file is None and outcome.result == {"k": 1}
    assert outcome.mask is not None and outcome.mask.array.dtype == np.uint8  # whole floats: smallest int


def test_outcome_of_classic_answers():
    assert InferOutcome.of_classic(("/tmp/x.nii.gz", {"a": 1})) == InferOutcome({"a": 1}, file="/tmp/x.nii.gz")
    assert InferOutcome.of_classic((None, {"b": 2})) == InferOutcome({"b": 2})
    assert InferOutcome.of_classic({"pred": 1}) == InferOutcome()  # a skip_writer data dict


def test_label_map_as_declared():
    assert MyInfer(None, None, labels=["a", "b"]).label_map() == {"a": 1, "b": 2}
    assert MyInfer(None, None, labels={"spleen": 3}).label_map() == {"spleen": 3}
    assert MyInfer(None, None, labels="one").label_map() == {"one": 1}
    assert MyInfer(None, None).label_map() == {}


def test_encode_mask_formats_round_trip():
    arr = np.zeros((5, 6, 7), dtype=np.uint8)
    arr[1:3, 2:4, 3:5] = 2
    mask = PreparedMask(arr, AFFINE, ".nii.gz")
    gz = encode_mask(mask)
    assert gz[:2] == b"\x1f\x8b" and encode_mask(mask) == gz, "deterministic bytes (no timestamp)"
    with tempfile.TemporaryDirectory() as tmp:
        for ext in (".nii.gz", ".nii", ".nrrd"):
            p = os.path.join(tmp, f"m{ext}")
            with open(p, "wb") as f:
                f.write(encode_mask(mask, ext))
            if ext == ".nrrd":
                import nrrd

                data, _ = nrrd.read(p)
            else:
                data = np.asarray(nib.load(p).dataobj)
            np.testing.assert_array_equal(data, arr)
    png = encode_mask(PreparedMask(arr[:, :, 3], None, ".png"))
    assert png.startswith(b"\x89PNG")
