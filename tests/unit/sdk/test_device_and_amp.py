"""The GPU path's pieces that run on the CPU: host-to-device copies, AMP (bfloat16 here), the batch key."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SimpleInferer
from monai.transforms import Activationsd, AsDiscreted, EnsureChannelFirstd, LoadImaged, ToNumpyd

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks import InferTask
from monailabel.tasks.infer._device import autocast_state, host_to_device, mixed_precision, to_float32


class Infer(InferTask):
    def pre_transforms(self, data=None):
        return [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image")]

    def inferer(self, data=None):
        return SimpleInferer()

    def post_transforms(self, data=None):
        return [Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5),
                ToNumpyd(keys="pred")]


def _record_autocast(network: torch.nn.Module) -> List[Any]:
    seen: List[Any] = []

    def hook(module: Any, args: Any, output: Any) -> None:
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), output.dtype))

    network.register_forward_hook(hook)
    return seen


def test_host_to_device_without_cuda_copies_nothing_and_pins_nothing() -> None:
    x = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    moved, pinned = host_to_device(x, "cpu")
    assert moved is x and not pinned and not moved.is_pinned()
    meta = MetaTensor(x.clone(), meta={"filename_or_obj": "a.nii"})
    moved, pinned = host_to_device(meta, torch.device("cpu"))
    assert not pinned and isinstance(moved, MetaTensor) and moved.meta["filename_or_obj"] == "a.nii"
    torch.testing.assert_close(moved.as_tensor(), x)


def test_mixed_precision_autocasts_on_the_cpu_to_bfloat16_only_when_enabled() -> None:
    with mixed_precision("cpu", False):
        assert not torch.is_autocast_enabled("cpu")
        assert autocast_state(torch.device("cpu")) == (False, "")
    with mixed_precision("cpu", True):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert autocast_state(torch.device("cpu")) == (True, "torch.bfloat16")  # batches only with its kind
    assert not torch.is_autocast_enabled("cpu")


def test_to_float32_casts_low_precision_tensors_in_containers() -> None:
    half, bf = torch.ones(2, dtype=torch.float16), torch.ones(2, dtype=torch.bfloat16)
    whole = torch.ones(2, dtype=torch.int64)
    out = to_float32({"a": half, "b": [bf, whole], "c": (bf,), "d": "x"})
    assert out["a"].dtype == torch.float32 and out["b"][0].dtype == torch.float32
    assert out["b"][1] is whole and out["c"][0].dtype == torch.float32 and out["d"] == "x"


@pytest.mark.parametrize("how", ["request", "config", "attribute"])
def test_amp_runs_the_forward_under_autocast_and_the_mask_keeps_its_type(write_volume, unet, how: str) -> None:
    path, _ = write_volume()
    plain = Infer(None, unet)
    expected = plain.infer_in_memory({"image": str(path), "device": "cpu"}).mask
    request: Dict[str, Any] = {"image": str(path), "device": "cpu"}
    if how == "request":
        task = Infer(None, unet)
        request["amp"] = True
    elif how == "config":
        task = Infer(None, unet, config={"amp": True})
    else:
        task = Infer(None, unet)
        task.amp = True
    seen = _record_autocast(task._get_network("cpu", None))
    outcome = task.infer_in_memory(request)
    assert seen and all(enabled and dtype == torch.bfloat16 for enabled, dtype, _ in seen)
    assert seen[-1][2] == torch.bfloat16  # the network's own output, before the cast back
    assert outcome.mask is not None and expected is not None
    assert outcome.mask.array.dtype == expected.array.dtype
    assert np.mean(outcome.mask.array == expected.array) >= 0.99


def test_amp_off_by_request_wins_over_the_task_and_a_non_bool_is_refused(write_volume, unet) -> None:
    path, _ = write_volume()
    task = Infer(None, unet, config={"amp": True})
    seen = _record_autocast(task._get_network("cpu", None))
    task.infer_in_memory({"image": str(path), "device": "cpu", "amp": False})
    assert seen and not any(enabled for enabled, _, _ in seen)
    with pytest.raises(MONAILabelException) as info:
        task.infer_in_memory({"image": str(path), "device": "cpu", "amp": "yes"})
    assert info.value.error == MONAILabelError.INVALID_INPUT and "amp" in info.value.msg
