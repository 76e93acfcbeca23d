"""A session's decoded volume, held once in shared memory and handed to each call as a copy-on-write view.

An infer call may change its input in place (MONAI's ``NormalizeIntensityd(nonzero=True)`` does,
through torch; an app's transform may write through a numpy view), so each call used to get a copy
of the session's volume: 20-60 ms and the volume's size again in memory, per call. Here the voxels
live in an anonymous shared-memory file (``memfd``), and every call maps it ``MAP_PRIVATE``: the
kernel shares the pages until the call writes one, then gives that call its own copy of that page
only. No write, through torch, numpy or C, can reach the session's voxels or another call's view,
and a call that reads only costs a mapping and its page faults.
"""

from __future__ import annotations

import copy
import mmap
import os
import tempfile
import weakref
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

__all__ = ["CowVolume"]


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

    def view(self) -> Any:
        """A view for one call: the voxels copy-on-write, the metadata the call's own.

        Returns:
            A MetaTensor when the volume was one (its metadata and applied operations copied),
            else a tensor.
        """
        if self.nbytes:
            private = mmap.mmap(self._fd, self.nbytes, flags=mmap.MAP_PRIVATE,
                                prot=mmap.PROT_READ | mmap.PROT_WRITE)
            flat = np.frombuffer(private, dtype=self.dtype)
        else:
            flat = np.zeros(0, dtype=self.dtype)
        array = flat.reshape(self.shape[::-1]).T if self.fortran else flat.reshape(self.shape)
        tensor = torch.from_numpy(array)
        if self.meta is None:
            return tensor
        from monai.data.meta_tensor import MetaTensor

        return MetaTensor(tensor, meta=_meta_copy(self.meta), applied_operations=list(self.applied))
