"""Helpers shared by the datastore core's unit tests (no port)."""

from __future__ import annotations

from typing import Any, Callable

import nibabel as nib
import numpy as np
import pytest

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException


def raises(error: MONAILabelError, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> MONAILabelException:
    """Calls ``fn`` and returns the MONAILabelException it raises, which must be of kind ``error``."""
    with pytest.raises(MONAILabelException) as info:
        fn(*args, **kwargs)
    assert info.value.error == error, info.value.msg
    return info.value


def nifti(shape: tuple = (6, 5, 4), seed: int = 0) -> bytes:
    """A small random uint8 NIfTI volume, as file bytes."""
    data = np.random.default_rng(seed).integers(0, 9, size=shape).astype(np.uint8)
    return bytes(nib.Nifti1Image(data, np.eye(4)).to_bytes())
