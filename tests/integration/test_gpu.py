"""On a CUDA device: inference through the server gives the same mask as on the CPU (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest

from monailabel_client import MonaiLabelClient


@pytest.mark.gpu
def test_cuda_inference_matches_the_cpu(client: MonaiLabelClient) -> None:
    image_id = "phantom_000"  # written by the server fixture
    on_cpu = client.infer("segmentation", image_id=image_id, device="cpu", timeout=300).array()
    on_gpu = client.infer("segmentation", image_id=image_id, device="cuda", timeout=300).array()
    assert on_gpu.shape == on_cpu.shape
    # the same weights and transforms: voxels may differ only where the two classes nearly tie
    assert np.mean(on_gpu == on_cpu) > 0.999
