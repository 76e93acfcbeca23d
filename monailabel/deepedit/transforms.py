"""DeepEdit transforms (2D and 3D): clicks from a request or a label, as guidance channels of the image."""

from __future__ import annotations

import json
from typing import Any, Dict, Hashable, List, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from scipy.ndimage import distance_transform_cdt, gaussian_filter
from scipy.ndimage import label as connected_components

__all__ = ["AddClickGuidanced", "AddGuidanceSignald", "AddInitialSeedPointd", "ResizeGuidanced"]


class AddClickGuidanced(MapTransform):
    """Collects the request's click lists (``foreground``, ``background``) into ``guidance = [fg, bg]``.

    Args:
        keys: the click keys, positive first.
        allow_missing_keys: ignore missing keys.
        guidance: where the guidance goes.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, guidance: str = "guidance") -> None:
        super().__init__(keys, allow_missing_keys)
        self.guidance = guidance

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        d[self.guidance] = [np.asarray(d[k]).astype(int).tolist() if d.get(k) else [] for k in self.keys]
        return d


class AddInitialSeedPointd(Randomizable, MapTransform):
    """Simulates the first positive clicks of training: one per largest connected region of the label.

    A click falls more likely deep inside a region (probability grows with the distance to its border).
    The guidance is stored as JSON ``[[positive points], [[-1, ...] per point]]``.

    Args:
        keys: where the guidance goes.
        allow_missing_keys: ignore missing keys.
        label: the label key (channel first).
        connected_regions: how many regions get a click.
    """

    def __init__(
        self, keys: KeysCollection, allow_missing_keys: bool = False, label: str = "label", connected_regions: int = 1
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label = label
        self.connected_regions = connected_regions

    def _seeds(self, label: np.ndarray) -> List[List[List[int]]]:
        if self.connected_regions > 1:
            regions, _ = connected_components(label > 0)
            ids, counts = np.unique(regions[regions > 0], return_counts=True)
            masks = [regions == i for i in ids[np.argsort(-counts)][: self.connected_regions]]
        else:
            masks = [label > 0]
        positives = []
        for mask in masks:
            if not mask.any():
                continue
            distance = distance_transform_cdt(mask).ravel().astype(np.float64)
            idx = np.flatnonzero(mask.ravel())
            weights = np.exp(np.minimum(distance[idx], 50.0)) - 1.0
            weights = weights / weights.sum() if weights.sum() > 0 else None
            seed = int(self.R.choice(idx, p=weights))
            positives.append([int(c) for c in np.unravel_index(seed, mask.shape)])
        return [positives, [[-1] * label.ndim for _ in positives]]

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        label = np.asarray(d[self.label])
        for key in self.keys:
            d[key] = json.dumps(self._seeds(label))
        return d


class AddGuidanceSignald(MapTransform):
    """Appends two channels to the image: Gaussian-smoothed maps of the positive and of the negative clicks.

    Args:
        keys: the image keys (channel first).
        allow_missing_keys: ignore missing keys.
        guidance: the guidance key (``[positive, negative]`` points, or their JSON).
        sigma: the Gaussian's sigma in pixels.
        number_intensity_ch: the image channels kept before the guidance channels.
    """

    def __init__(
        self,
        keys: KeysCollection,
        allow_missing_keys: bool = False,
        guidance: str = "guidance",
        sigma: int = 2,
        number_intensity_ch: int = 3,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.guidance = guidance
        self.sigma = sigma
        self.number_intensity_ch = number_intensity_ch

    def signal(self, shape: Sequence[int], points: Sequence[Sequence[int]]) -> torch.Tensor:
        """One channel ``(1, *shape)``: 1 at each valid point, smoothed and scaled to [0, 1]."""
        signal = np.zeros(tuple(shape), dtype=np.float32)
        placed = False
        for p in points or []:
            p = [int(v) for v in p][-len(shape):]
            if len(p) < len(shape) or any(v < 0 for v in p) or any(v >= s for v, s in zip(p, shape, strict=False)):
                continue
            signal[tuple(p)] = 1.0
            placed = True
        if placed:
            signal = gaussian_filter(signal, sigma=self.sigma)
            span = float(signal.max() - signal.min())
            signal = (signal - signal.min()) / span if span > 0 else signal
        return torch.as_tensor(signal)[None]

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        guidance = d.get(self.guidance)
        guidance = json.loads(guidance) if isinstance(guidance, str) else guidance
        for key in self.key_iterator(d):
            img = d[key]
            img = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
            if guidance and (guidance[0] or guidance[1]):
                img = img[: self.number_intensity_ch]
                spatial = img.shape[1:]
                pos = self.signal(spatial, guidance[0]).to(img.device)
                neg = self.signal(spatial, guidance[1]).to(img.device)
                d[key] = torch.cat([img, pos.to(img.dtype), neg.to(img.dtype)])
            else:
                zeros = torch.zeros_like(img[:1])
                d[key] = torch.cat([img, zeros, zeros])
        return d


class ResizeGuidanced(MapTransform):
    """Scales clicks given on the original image to the (resized) reference image.

    Args:
        keys: the guidance keys.
        ref_image: the resized image (a MetaTensor whose meta has ``spatial_shape``).
        cropped_shape_key: meta key of a cropped shape that takes the original's place when present.
        allow_missing_keys: ignore missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        ref_image: str,
        cropped_shape_key: str = "foreground_cropped_shape",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_image = ref_image
        self.cropped_shape_key = cropped_shape_key

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        current = np.asarray(d[self.ref_image].shape[1:])
        meta = getattr(d[self.ref_image], "meta", None) or d.get(f"{self.ref_image}_meta_dict") or {}
        if self.cropped_shape_key and meta.get(self.cropped_shape_key) is not None:
            original = np.asarray(meta[self.cropped_shape_key][1:])
        else:
            original = np.asarray(meta.get("spatial_shape", current))
        factor = current / np.asarray(original[: len(current)], dtype=np.float64)
        for key in self.key_iterator(d):
            pos, neg = d[key][0], d[key][1]
            d[key] = [
                (np.asarray(pos) * factor).astype(int).tolist() if len(pos) else [],
                (np.asarray(neg) * factor).astype(int).tolist() if len(neg) else [],
            ]
        return d
