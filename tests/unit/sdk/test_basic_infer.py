"""BasicInferTask: MONAI Label's documented example, sliding window, reload, decoded input, cancellation."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.transforms import Activationsd, AsDiscreted, EnsureChannelFirstd, LoadImage, LoadImaged, ToNumpyd

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks import InferTask, InferType

from .conftest import AFFINE


class MyInfer(InferTask):
    """MONAI Label's documented example, plus EnsureChannelFirstd (the UNet needs a channel axis)."""

    def pre_transforms(self, data=None):
        return [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), ToNumpyd(keys="image")]

    def inferer(self, data=None):
        return SimpleInferer()

    def post_transforms(self, data=None):
        return [
            Activationsd(keys="pred", sigmoid=True),
            AsDiscreted(keys="pred", threshold=0.5),
            ToNumpyd(keys="pred"),
        ]


class SlidingInfer(MyInfer):
    def inferer(self, data=None):
        return InferTask.inferer(self, data)  # the base class's choice between simple and sliding window


def _expected_mask(unet, volume: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = unet.eval()(torch.from_numpy(volume)[None, None])
    return (torch.sigmoid(logits)[0, 0] >= 0.5).numpy().astype(np.uint8)


def _set_output_bias(unet, value: float) -> dict:
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    last_bias = [k for k in state if k.endswith("bias")][-1]
    state[last_bias].fill_(value)
    return {"model": state}


def test_documented_example_writes_uint8_mask_on_image_grid(write_volume, checkpoint, unet):
    path, volume = write_volume()
    task = MyInfer(str(checkpoint), unet)
    assert task.type == InferType.SEGMENTATION and task.dimension == 3 and task.is_valid()

    result_file, result_json = task({"image": str(path), "device": "cpu"})
    try:
        assert os.path.exists(result_file) and result_file.endswith(".nii.gz")
        img = nib.load(result_file)
        assert img.get_data_dtype() == np.uint8
        assert img.shape == volume.shape
        np.testing.assert_allclose(img.affine, AFFINE, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(img.dataobj), _expected_mask(unet, volume))
        latencies = result_json["latencies"]
        assert set(latencies) >= {"pre", "infer", "invert", "post", "write", "total", "transform"}
        assert "LoadImaged" in latencies["transform"]["pre"]
    finally:
        os.unlink(result_file)


def test_sliding_window_only_when_image_exceeds_roi(write_volume, checkpoint, unet):
    task = SlidingInfer(str(checkpoint), unet, roi_size=(8, 8, 8))
    assert isinstance(task.inferer({"image": np.zeros((1, 16, 16, 16))}), SlidingWindowInferer)
    assert isinstance(task.inferer({"image": np.zeros((1, 8, 8, 8))}), SimpleInferer)
    assert isinstance(task.inferer({"image": np.zeros((1, 16, 16, 16)), "roi_size": (16, 16, 16)}), SimpleInferer)

    path, _ = write_volume((16, 16, 16))
    result_file, _ = task({"image": str(path), "device": "cpu"})
    try:
        assert nib.load(result_file).shape == (16, 16, 16)
    finally:
        os.unlink(result_file)


def test_checkpoint_is_reloaded_when_its_file_changes(write_volume, checkpoint, unet):
    path, _ = write_volume()
    torch.save(_set_output_bias(unet, -100.0), checkpoint)
    task = MyInfer(str(checkpoint), unet)

    def run() -> np.ndarray:
        f, _ = task({"image": str(path), "device": "cpu"})
        try:
            return np.asarray(nib.load(f).dataobj)
        finally:
            os.unlink(f)

    assert run().max() == 0
    first = task._networks["cpu"][0]
    assert run().max() == 0 and task._networks["cpu"][0] is first  # cached while unchanged

    torch.save(_set_output_bias(unet, 100.0), checkpoint)
    st = os.stat(checkpoint)
    os.utime(checkpoint, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert run().min() == 1
    assert task._networks["cpu"][0] is not first


def test_decoded_metatensor_skips_loader_and_matches_path(write_volume, checkpoint, unet):
    path, _ = write_volume()
    task = MyInfer(str(checkpoint), unet)
    from_path, _ = task({"image": str(path), "device": "cpu"})
    decoded = LoadImage(image_only=True)(str(path))
    from_tensor, result_json = task({"image": decoded, "device": "cpu"})
    try:
        assert "LoadImaged" not in result_json["latencies"]["transform"]["pre"]
        a, b = nib.load(from_path), nib.load(from_tensor)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_allclose(b.affine, AFFINE, atol=1e-5)
    finally:
        os.unlink(from_path)
        os.unlink(from_tensor)
    assert decoded.shape == (16, 16, 16)  # the caller's volume is left as it was


_FORWARDS: list = []


class _CountingNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1)

    def forward(self, x):
        _FORWARDS.append(torch.is_grad_enabled())
        return self.conv(x)


def test_cancel_check_stops_between_sliding_windows(write_volume):
    path, _ = write_volume((16, 16, 16))
    task = SlidingInfer(None, _CountingNet(), roi_size=(8, 8, 8))
    _FORWARDS.clear()
    with pytest.raises(MONAILabelException) as e:
        task({"image": str(path), "device": "cpu", "sw_overlap": 0.0, "cancel_check": lambda: len(_FORWARDS) > 0})
    assert e.value.error == MONAILabelError.CANCELLED
    assert _FORWARDS == [False]  # one window ran, without autograd; the next one was never started
    assert e.value.__context__ is None and e.value.__cause__ is None  # no frames (and tensors) kept


def test_cancel_check_before_any_work(write_volume, checkpoint, unet):
    path, _ = write_volume()
    with pytest.raises(MONAILabelException) as e:
        MyInfer(str(checkpoint), unet)({"image": str(path), "cancel_check": lambda: True})
    assert e.value.error == MONAILabelError.CANCELLED


def test_failing_transform_is_named(checkpoint, unet, tmp_path):
    with pytest.raises(MONAILabelException) as e:
        MyInfer(str(checkpoint), unet)({"image": str(tmp_path / "missing.nii.gz"), "device": "cpu"})
    assert e.value.error == MONAILabelError.TRANSFORM_ERROR
    assert "LoadImaged" in e.value.msg


def test_missing_model_file_is_an_inference_error(write_volume, tmp_path):
    path, _ = write_volume()
    task = MyInfer(str(tmp_path / "nope.pt"), None)
    assert not task.is_valid() and task.get_path() is None
    with pytest.raises(MONAILabelException) as e:
        task({"image": str(path), "device": "cpu"})
    assert e.value.error == MONAILabelError.INFERENCE_ERROR


def test_torchscript_and_path_candidates(write_volume, tmp_path, unet):
    path, volume = write_volume()
    scripted = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(unet.eval()), str(scripted))
    task = MyInfer([str(tmp_path / "old.ts"), str(scripted)], None)
    assert task.get_path() == str(scripted)
    f, _ = task({"image": str(path), "device": "cuda"})  # no CUDA here: falls back to the CPU
    try:
        np.testing.assert_array_equal(np.asarray(nib.load(f).dataobj), _expected_mask(unet, volume))
    finally:
        os.unlink(f)
