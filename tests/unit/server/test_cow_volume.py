"""CowVolume: each view is the decoded volume, bit for bit, and a write into one reaches no other."""

from __future__ import annotations

import ctypes
import time

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, NormalizeIntensityd

from monailabel_server.core.volume import PREFAULT_BYTES, CowVolume


@pytest.mark.parametrize("fortran", [False, True])
def test_views_keep_values_layout_and_metadata(fortran: bool) -> None:
    data = np.random.default_rng(0).random((6, 5, 4), dtype=np.float32)
    data = np.asfortranarray(data) if fortran else data
    image = MetaTensor(torch.from_numpy(data), affine=torch.diag(torch.tensor([1.0, 2.0, 3.0, 1.0])))
    volume = CowVolume(image)
    view = volume.view()
    assert isinstance(view, MetaTensor) and view.stride() == image.stride()
    assert torch.equal(view.as_tensor(), image.as_tensor()) and torch.equal(view.affine, image.affine)
    view.affine[0, 0] = 9.0  # the call's own metadata
    assert float(volume.view().affine[0, 0]) == 1.0


def test_writes_through_torch_or_numpy_stay_in_their_view() -> None:
    data = np.random.default_rng(1).random((8, 8, 4), dtype=np.float32) * 100
    volume = CowVolume(MetaTensor(torch.from_numpy(data.copy())))
    first = volume.view()
    NormalizeIntensityd(keys="image", nonzero=True)(EnsureChannelFirstd(keys="image", channel_dim="no_channel")(
        {"image": first}))  # writes into its input (torch)
    assert not np.array_equal(first.numpy(), data)
    second = volume.view()
    torch.Tensor.numpy(second.as_tensor())[...] += 1.0  # through numpy
    np.testing.assert_array_equal(volume.view().numpy(), data)
    np.testing.assert_array_equal(second.numpy(), data + 1.0)


def test_plain_tensor_and_empty_volume() -> None:
    volume = CowVolume(torch.arange(6, dtype=torch.int16).reshape(2, 3))
    view = volume.view()
    assert not isinstance(view, MetaTensor) and view.dtype == torch.int16 and view.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert CowVolume(torch.zeros(0, 3)).view().shape == (0, 3)


def _address(view: torch.Tensor) -> int:
    return int(view.data_ptr())


def test_a_large_volume_hands_the_next_call_a_mapping_faulted_in_ahead() -> None:
    shape = (64, 256, 272)  # float32: just over PREFAULT_BYTES
    assert np.prod(shape) * 4 >= PREFAULT_BYTES
    data = np.random.default_rng(2).random(shape, dtype=np.float32)
    volume = CowVolume(torch.from_numpy(data))
    first = volume.view()
    deadline = time.monotonic() + 30
    while volume._spare is None and time.monotonic() < deadline:
        time.sleep(0.01)
    spare = volume._spare
    assert spare is not None, "no mapping was prepared for the next call"
    prepared = ctypes.addressof(ctypes.c_char.from_buffer(spare))
    first.numpy()[...] = -1.0  # the first call writes all over its view
    second = volume.view()
    assert _address(second) == prepared  # the next call got the prepared mapping
    np.testing.assert_array_equal(second.numpy(), data)  # and it holds the volume, not the first call's writes
    second.numpy()[0, 0, :3] = 7.0
    np.testing.assert_array_equal(volume.view().numpy(), data)


def test_a_small_volume_prepares_nothing() -> None:
    volume = CowVolume(torch.zeros(8, 8, 8))
    volume.view()
    assert volume._spare is None and not volume._preparing
