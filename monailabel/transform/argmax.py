"""A channel argmax that is fast on CPUs and returns compact label maps."""

from __future__ import annotations

from typing import Any, Dict, Hashable, Mapping, Union

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["ArgmaxLabelsd"]


def _smallest_int(channels: int) -> torch.dtype:
    return torch.uint8 if channels <= 256 else torch.int16 if channels <= 32768 else torch.int32


class ArgmaxLabelsd(MapTransform):
    """Turns per-channel scores (C, ...) into a label map (1, ...) of the smallest integer type.

    The same result as ``AsDiscreted(argmax=True)``, but computed one channel at a time: torch's
    argmax over a leading channel axis strides through memory, and takes about 30 times longer on a
    CPU for a 256x256x128 volume with two channels. Ties go to the lower channel, as with argmax.

    Args:
        keys: keys of the score tensors.
        allow_missing_keys: skip keys that are absent.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.argmax(d[key])
        return d

    @staticmethod
    def argmax(scores: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """Returns the label map of one (C, ...) score tensor, keeping MetaTensor metadata."""
        x = torch.as_tensor(scores)
        channels = x.shape[0]
        labels = torch.zeros((1, *x.shape[1:]), dtype=_smallest_int(channels), device=x.device)
        if channels == 1:  # argmax over one channel is 0 everywhere, as torch.argmax says
            return _keep_meta(scores, labels)
        # strict comparisons: ties stay with the lower channel, as with argmax
        label_map = (x[1] > x[0]).to(labels.dtype)  # the two-channel case is this one pass
        best = torch.maximum(x[0], x[1]) if channels > 2 else x[0]
        for c in range(2, channels):
            value = torch.tensor(c, dtype=labels.dtype, device=x.device)
            label_map = torch.where(x[c] > best, value, label_map)
            if c < channels - 1:
                best = torch.maximum(best, x[c])
        labels = label_map.unsqueeze(0)
        return _keep_meta(scores, labels)


def _keep_meta(source: Any, labels: torch.Tensor) -> torch.Tensor:
    from monai.data import MetaTensor

    if isinstance(source, MetaTensor):
        return MetaTensor(labels, affine=source.affine, meta=dict(source.meta))
    return labels


