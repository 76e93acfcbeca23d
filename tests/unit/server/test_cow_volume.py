"""CowVolume: each view is the decoded volume, bit for bit, and a write into one reaches no other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, NormalizeIntensityd

from monailabel_server.core.volume import CowVolume


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
