"""Suite-wide markers: ``gpu`` tests are skipped, with the reason shown in the summary, without CUDA."""

from __future__ import annotations

from typing import List

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch  # only when a gpu test was collected: importing torch takes a while

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: needs a CUDA device, and torch sees none here")
    for item in gpu_items:
        item.add_marker(skip)
