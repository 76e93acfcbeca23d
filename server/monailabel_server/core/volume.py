"""A session's decoded volume, held once in shared memory and handed to each call as a copy-on-write view.

An infer call may change its input in place (MONAI's ``NormalizeIntensityd(nonzero=True)`` does,
through torch; an app's transform may write through a numpy view), so each call used to get a copy
of the session's volume: 20-60 ms and the volume's size again in memory, per call. Here the voxels
live in an anonymous shared-memory file (``memfd``), and every call maps it ``MAP_PRIVATE``: the
kernel shares the pages until the call writes one, then gives that call its own copy of that page
only. No write, through torch, numpy or C, can reach the session's voxels or another call's view,
and a call that reads only costs a mapping and its page faults.

With a GPU, a session's volume may live on the device instead (:class:`DeviceVolume`, chosen by
:func:`choose_session_device` from ``--session-device`` and the device's free memory): the
pre-transforms and the forward then start from device memory, with no host-to-device copy per
call. Each call gets its own device copy (a device-to-device clone, at the device's memory
bandwidth), so no transform that writes into its input can reach the session's voxels.
"""

from __future__ import annotations

import copy
import mmap
import os
import tempfile
import threading
import weakref
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

__all__ = ["CowVolume", "DeviceVolume", "SESSION_DEVICES", "DEVICE_MARGIN_BYTES", "choose_session_device",
           "free_cuda_bytes"]

#: Values of ``--session-device``.
SESSION_DEVICES = ("auto", "cpu", "cuda")
#: GPU memory ``auto`` leaves free beyond a session's volume and one call's copy of it: room for the
#: pre-transforms' intermediates and the model's weights and activations.
DEVICE_MARGIN_BYTES = 2 << 30


def _meta_copy(meta: Dict[str, Any]) -> Dict[str, Any]:
    """A call's own metadata: tensors (the affine) cloned, containers copied, the rest shared."""
    out: Dict[str, Any] = {}
    for k, v in meta.items():
        if torch.is_tensor(v):
            out[k] = v.clone()
        elif isinstance(v, (dict, list, np.ndarray)):
            out[k] = copy.deepcopy(v)
        else:
            out[k] = v
    return out


def _anonymous_file() -> int:
    """A file descriptor of memory no path names: a memfd on Linux, an unlinked temporary file elsewhere."""
    if hasattr(os, "memfd_create"):
        return int(os.memfd_create("monailabel-session", os.MFD_CLOEXEC))
    with tempfile.TemporaryFile() as f:  # removed on close; the duplicate keeps its storage
        return os.dup(f.fileno())


#: Volumes from this size up get their next call's view mapped and faulted in ahead, on a thread:
#: reading a fresh mapping page by page costs about 34 ms per 256 MiB here, which the next call
#: would otherwise pay on its critical path. Below it the faults cost less than a thread.
PREFAULT_BYTES = 16 << 20
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux's value; Python names it from 3.13


class CowVolume:
    """A decoded volume (tensor or MetaTensor) kept in a memfd; :meth:`view` maps a private copy-on-write view.

    The element layout is kept (C or Fortran order), so a view's strides, and with them the order
    of any reduction a transform runs over it, are the decoded tensor's.

    Args:
        image: the decoded volume; it is copied once into shared memory (and may be dropped after).
    """

    def __init__(self, image: Any) -> None:
        tensor = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        array = tensor.detach().cpu().numpy()
        self.fortran = bool(array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous)
        ordered = array.T if self.fortran else np.ascontiguousarray(array)
        self.shape: Tuple[int, ...] = tuple(int(s) for s in array.shape)
        self.dtype = array.dtype
        self.nbytes = int(array.nbytes)
        self.meta: Optional[Dict[str, Any]] = _meta_copy(dict(image.meta)) if hasattr(image, "meta") else None
        self.applied: List[Any] = list(getattr(image, "applied_operations", []) or [])
        self._fd = _anonymous_file()
        weakref.finalize(self, os.close, self._fd)  # mappings keep their own reference to the memory
        os.ftruncate(self._fd, max(1, self.nbytes))
        if self.nbytes:
            with mmap.mmap(self._fd, self.nbytes, flags=mmap.MAP_SHARED) as shared:
                target = np.frombuffer(shared, dtype=self.dtype).reshape(ordered.shape)
                target[...] = ordered
                del target  # the mapping closes only once no array points into it
        # the next call's mapping, already faulted in (read-only: its pages are still the memfd's
        # and a write copies the page, as in any fresh private mapping); no other call ever sees it
        self._spare: Optional[mmap.mmap] = None
        self._spare_lock = threading.Lock()
        self._preparing = False

    def _map(self) -> mmap.mmap:
        return mmap.mmap(self._fd, self.nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    def _prepare(self) -> None:
        """Maps the next call's view and faults in its pages (read-only: no page is copied yet).

        ``madvise(MADV_POPULATE_READ)`` (Linux 5.14) does it in one system call without the GIL, so the
        running call's transforms are not held up; elsewhere one byte of each page is read.
        """
        try:
            mapping: Optional[mmap.mmap] = self._map()
            assert mapping is not None
            try:
                mapping.madvise(_MADV_POPULATE_READ)
            except (OSError, ValueError):
                np.frombuffer(mapping, dtype=np.uint8)[:: mmap.PAGESIZE].sum()
            with self._spare_lock:
                if self._spare is None:
                    self._spare, mapping = mapping, None
            if mapping is not None:
                mapping.close()
        finally:
            with self._spare_lock:
                self._preparing = False

    def _take_mapping(self) -> mmap.mmap:
        with self._spare_lock:
            mapping, self._spare = self._spare, None
            prepare = self.nbytes >= PREFAULT_BYTES and not self._preparing
            self._preparing = self._preparing or prepare
        if prepare:
            threading.Thread(target=self._prepare, name="volume-prefault", daemon=True).start()
        return mapping if mapping is not None else self._map()

    def view(self) -> Any:
        """A view for one call: the voxels copy-on-write, the metadata the call's own.

        Returns:
            A MetaTensor when the volume was one (its metadata and applied operations copied),
            else a tensor.
        """
        if self.nbytes:
            private = self._take_mapping()
            flat = np.frombuffer(private, dtype=self.dtype)
        else:
            flat = np.zeros(0, dtype=self.dtype)
        array = flat.reshape(self.shape[::-1]).T if self.fortran else flat.reshape(self.shape)
        tensor = torch.from_numpy(array)
        if self.meta is None:
            return tensor
        from monai.data.meta_tensor import MetaTensor

        return MetaTensor(tensor, meta=_meta_copy(self.meta), applied_operations=list(self.applied))


class DeviceVolume:
    """A decoded volume kept on a device (CUDA); :meth:`view` gives each call its own device copy.

    Args:
        image: the decoded volume (tensor or MetaTensor), copied once to ``device``.
        device: where it lives, e.g. ``cuda:0`` (``cpu`` works too, for tests).
    """

    def __init__(self, image: Any, device: Union[str, torch.device]) -> None:
        from monailabel.tasks.infer._device import host_to_device

        tensor = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        moved, _ = host_to_device(tensor.detach(), device)
        self.tensor: torch.Tensor = moved.clone() if moved.data_ptr() == tensor.data_ptr() else moved
        if self.tensor.device.type == "cuda":
            torch.cuda.synchronize(self.tensor.device)  # a failed copy fails the session's creation, no later call
        self.device = str(self.tensor.device)
        self.shape: Tuple[int, ...] = tuple(int(s) for s in self.tensor.shape)
        self.dtype = self.tensor.dtype
        self.nbytes = int(self.tensor.numel() * self.tensor.element_size())
        self.meta: Optional[Dict[str, Any]] = _meta_copy(dict(image.meta)) if hasattr(image, "meta") else None
        self.applied: List[Any] = list(getattr(image, "applied_operations", []) or [])

    def _wrap(self, tensor: torch.Tensor) -> Any:
        if self.meta is None:
            return tensor
        from monai.data.meta_tensor import MetaTensor

        return MetaTensor(tensor, meta=_meta_copy(self.meta), applied_operations=list(self.applied))

    def image(self) -> Any:
        """The volume itself, no copy (its metadata the caller's own): read it, never write it."""
        return self._wrap(self.tensor)

    def view(self, device: Optional[str] = None) -> Any:
        """A copy for one call: on the volume's device (a clone), or on ``device`` when that is another.

        Args:
            device: where the call wants it (``cpu`` for a call that runs on the CPU); None for the volume's.

        Returns:
            A MetaTensor when the volume was one (its metadata and applied operations copied), else a tensor.
        """
        if device is not None and torch.device(device) != self.tensor.device:
            return self._wrap(self.tensor.to(device))
        return self._wrap(self.tensor.clone())


def free_cuda_bytes() -> Optional[int]:
    """Free memory on the current CUDA device as the driver reports it (other processes count); None without CUDA."""
    if not torch.cuda.is_available():
        return None
    try:
        return int(torch.cuda.mem_get_info()[0])
    except RuntimeError:  # a device this process may not query
        return None


def choose_session_device(setting: str, nbytes: int, free_bytes: Optional[int]) -> str:
    """Where a session's decoded volume lives: ``cuda`` (the device) or ``cpu`` (a copy-on-write memfd).

    Args:
        setting: ``--session-device``: ``cpu`` always the memfd; ``auto`` the device when its free
            memory holds the volume, one call's copy of it and :data:`DEVICE_MARGIN_BYTES` more;
            ``cuda`` the device whenever the volume and one call's copy fit.
        nbytes: the volume's decoded size.
        free_bytes: free memory on the CUDA device (:func:`free_cuda_bytes`); None without CUDA.

    Returns:
        ``cuda`` or ``cpu``.
    """
    if setting == "cpu" or free_bytes is None:
        return "cpu"
    needed = 2 * nbytes + (DEVICE_MARGIN_BYTES if setting == "auto" else 0)
    return "cuda" if free_bytes >= needed else "cpu"
