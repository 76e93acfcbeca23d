"""The network's side of an inference: the input onto its device, the forward in mixed precision.

* **Pinned host-to-device copies.** A CPU input bound for CUDA is staged in page-locked memory and
  copied with ``non_blocking=True``: the DMA engine reads it directly, without the driver's own
  bounce buffer. The staging comes from ``Tensor.pin_memory()``, whose block is PyTorch's caching host
  allocator's: it is reused across calls and, because the copy records an event on it, never handed
  to another call before the copy has finished (a hand-kept buffer per shape would need that
  bookkeeping, and a lock per shape, to be safe under concurrent calls). Kernels on the same stream
  are ordered after the copy; the host reads results only through blocking copies (``.cpu()``), so
  nothing reads a tensor before the device has written it.
* **AMP.** A task's forward runs under ``torch.autocast`` when asked: float16 on CUDA, bfloat16 on
  the CPU (which is how the path is exercised on machines without a GPU). Floating outputs come
  back as float32 before any post-transform sees them, so thresholds, argmax and the mask's dtype
  behave as they do without AMP.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Tuple

import torch

__all__ = ["host_to_device", "autocast_dtype", "mixed_precision", "to_float32", "autocast_state"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def host_to_device(tensor: torch.Tensor, device: Any) -> Tuple[torch.Tensor, bool]:
    """Moves ``tensor`` to ``device``: a CPU tensor bound for CUDA through pinned memory, asynchronously.

    Args:
        tensor: the tensor (a MetaTensor keeps its metadata).
        device: the target device.

    Returns:
        ``(moved, pinned)``: the tensor on ``device`` (``tensor`` itself when it is there already),
        and whether the copy went through page-locked memory.
    """
    target = torch.device(device)
    if target.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(target), False
    staged = tensor if tensor.is_pinned() else tensor.pin_memory()
    return staged.to(target, non_blocking=True), True


def autocast_dtype(device: Any) -> torch.dtype:
    """The autocast type on ``device``: float16 on CUDA, bfloat16 elsewhere (the CPU)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


@contextlib.contextmanager
def mixed_precision(device: Any, enabled: bool) -> Iterator[None]:
    """Runs the block under ``torch.autocast`` for ``device`` when ``enabled`` (CUDA and CPU only).

    Args:
        device: where the forward runs.
        enabled: whether to autocast at all.
    """
    kind = torch.device(device).type
    if not enabled or kind not in ("cuda", "cpu"):
        yield
        return
    with torch.autocast(device_type=kind, dtype=autocast_dtype(device)):
        yield


def autocast_state(device: torch.device) -> Tuple[bool, str]:
    """Whether this thread autocasts on ``device``'s kind, and to what (part of a batch's key)."""
    kind = device.type
    if kind not in ("cuda", "cpu") or not torch.is_autocast_enabled(kind):
        return False, ""
    return True, str(torch.get_autocast_dtype(kind))


def to_float32(outputs: Any) -> Any:
    """Casts float16 / bfloat16 tensors in ``outputs`` (a tensor, or a dict, list or tuple of them) to float32."""
    if torch.is_tensor(outputs):
        return outputs.float() if outputs.dtype in _LOW_PRECISION else outputs
    if isinstance(outputs, dict):
        return {k: to_float32(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [to_float32(v) for v in outputs]
    if isinstance(outputs, tuple):
        return tuple(to_float32(v) for v in outputs)
    return outputs
