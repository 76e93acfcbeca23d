"""The server's GPUs as PyTorch sees them (MONAI Label's ``/logs/gpu``), from PyTorch alone (no nvidia-smi).

Without CUDA the answer is an empty list. With it, each device's name, compute capability, total and
free memory (``torch.cuda.mem_get_info``: what the driver reports, other processes included), the
memory this process allocated, and the utilisation (``torch.cuda.utilization``, which needs NVML via
``pynvml``; -1 when that is not installed or the driver does not say).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

__all__ = ["GpuView", "gpu_info"]


@dataclass
class GpuView:
    """One GPU."""

    index: int
    name: str
    total_memory_bytes: int
    free_memory_bytes: int
    allocated_memory_bytes: int
    utilization_percent: int
    compute_capability: str


def gpu_info() -> Tuple[bool, List[GpuView]]:
    """``(cuda_available, devices)``."""
    import torch

    if not torch.cuda.is_available():
        return False, []
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        try:
            free, total = torch.cuda.mem_get_info(index)
        except RuntimeError:  # a device this process may not open (exclusive mode, MIG without access)
            free, total = 0, int(props.total_memory)
        try:
            utilization = int(torch.cuda.utilization(index))
        except Exception:  # noqa: BLE001 - pynvml missing, or NVML cannot read this device
            utilization = -1
        devices.append(GpuView(index, str(props.name), int(total), int(free),
                               int(torch.cuda.memory_allocated(index)), utilization,
                               f"{props.major}.{props.minor}"))
    return True, devices
