"""Fixtures of the SDK tests: a tiny 3D UNet, its checkpoint, and synthetic NIfTI volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Tuple

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

AFFINE = np.array(
    [[1.5, 0.0, 0.0, -10.0], [0.0, 2.0, 0.0, 5.0], [0.0, 0.0, 2.5, 20.0], [0.0, 0.0, 0.0, 1.0]], dtype=np.float64
)


def make_unet(seed: int = 0) -> UNet:
    """The UNet of the documented example's scale: 1 channel in, 1 out, two levels."""
    torch.manual_seed(seed)
    return UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(4, 8), strides=(2,))


@pytest.fixture
def unet() -> UNet:
    return make_unet(0)


@pytest.fixture
def checkpoint(tmp_path: Path, unet: UNet) -> Path:
    path = tmp_path / "model.pt"
    torch.save({"model": unet.state_dict()}, path)
    return path


@pytest.fixture
def write_volume(tmp_path: Path) -> Callable[..., Tuple[Path, np.ndarray]]:
    """Writes a phantom (a bright ellipsoid in noise) as NIfTI with a non-trivial affine."""

    def _write(shape: Tuple[int, int, int] = (16, 16, 16), name: str = "img.nii.gz", seed: int = 0):
        rng = np.random.default_rng(seed)
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
        volume = (np.sum(grid**2, axis=0) < 0.4).astype(np.float32) * 2.0 + rng.normal(0, 0.1, shape)
        path = tmp_path / name
        nib.save(nib.Nifti1Image(volume.astype(np.float32), AFFINE), str(path))
        return path, volume.astype(np.float32)

    return _write
