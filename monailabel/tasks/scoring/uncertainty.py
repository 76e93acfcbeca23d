"""Uncertainty of Monte Carlo samples: entropy and variance maps, as MONAI Label's epistemic scoring computes."""

from __future__ import annotations

from typing import Any, List

import numpy as np

__all__ = ["as_probabilities", "entropy_map", "variance_map", "stack_samples"]

#: probabilities at or below zero are clipped to this before the logarithm
EPSILON = 5e-5


def as_probabilities(pred: Any, dimension: int) -> np.ndarray:
    """Returns one sample's prediction as ``(channels, *spatial)`` float32, background channel dropped.

    Args:
        pred: ``(channels, *spatial)`` or ``(*spatial)`` array or tensor (a MetaTensor too).
        dimension: the spatial dimension.
    """
    if hasattr(pred, "detach"):
        pred = pred.detach().cpu().numpy()
    a = np.asarray(pred, dtype=np.float32)
    while a.ndim > dimension + 1 and a.shape[0] == 1:  # a batch axis left on
        a = a[0]
    if a.ndim == dimension:
        a = a[None]
    return a[1:] if a.shape[0] > 1 else a


def stack_samples(samples: List[np.ndarray]) -> np.ndarray:
    """Stacks per-sample ``(channels, *spatial)`` arrays into ``(samples, channels, *spatial)``."""
    return np.stack(samples).astype(np.float32, copy=False)


def entropy_map(samples: np.ndarray) -> np.ndarray:
    """Voxel-wise entropy of the mean probability, summed over channels.

    Args:
        samples: ``(samples, channels, *spatial)`` probabilities.

    Returns:
        ``(*spatial)`` entropy.
    """
    mean = np.clip(samples, EPSILON, None).mean(axis=0)
    return (-mean * np.log(mean)).sum(axis=0)


def variance_map(samples: np.ndarray) -> np.ndarray:
    """Voxel-wise variance across samples, summed over channels (NaNs ignored).

    Args:
        samples: ``(samples, channels, *spatial)`` probabilities.

    Returns:
        ``(*spatial)`` variance.
    """
    return np.nansum(np.nanvar(np.clip(samples, 5e-4, None), axis=0), axis=0)
