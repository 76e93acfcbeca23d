"""Pre-transforms of MONAI Label: loaders that also accept decoded arrays, label normalisation."""

from __future__ import annotations

from typing import Any, Dict, Hashable, Mapping, Optional

from monai.config import KeysCollection
from monai.data import ImageReader, MetaTensor
from monai.transforms import LoadImaged, MapTransform
from monai.utils import PostFix

__all__ = ["LoadImageExd", "LoadImageTensord", "NormalizeLabeld"]


def _wrap_array(d: Dict[Hashable, Any], key: Hashable, meta_key: str) -> None:
    """Makes a channel-last array (e.g. an RGB frame a client sent) a MetaTensor with a minimal meta dict."""
    meta = d.get(meta_key)
    if meta is None:
        meta = d[meta_key] = {}
    array = d[key]
    meta["spatial_shape"] = tuple(array.shape[:-1])
    meta["original_channel_dim"] = -1
    meta["original_affine"] = None
    d[key] = MetaTensor(array, meta=meta)


class LoadImageTensord(MapTransform):
    """Loads file names with a given ``LoadImaged``; keys that already hold arrays are wrapped instead.

    Args:
        keys: the keys.
        allow_missing_keys: ignore missing keys.
        load_image_d: the ``LoadImaged`` used when every key holds a file name.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, load_image_d: Any = None) -> None:
        super().__init__(keys, allow_missing_keys)
        self.load_image_d = load_image_d

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        decoded = False
        for key in self.key_iterator(d):
            if not isinstance(d[key], str):
                _wrap_array(d, key, f"{key}_{PostFix.meta()}")
                decoded = True
        return d if decoded else self.load_image_d(d)


class LoadImageExd(LoadImaged):
    """``LoadImaged`` that passes arrays through (as MetaTensors) instead of loading them."""

    def __call__(self, data: Mapping[Hashable, Any], reader: Optional[ImageReader] = None) -> Dict[Hashable, Any]:
        d = dict(data)
        decoded = False
        for i, key in enumerate(self.keys):
            if key in d and not isinstance(d[key], str):
                _wrap_array(d, key, f"{key}_{self.meta_key_postfix[i]}")
                decoded = True
        return d if decoded else super().__call__(d, reader)


class NormalizeLabeld(MapTransform):
    """Sets every non-zero voxel of a label to ``value`` (one foreground class).

    Args:
        keys: the label keys.
        allow_missing_keys: ignore missing keys.
        value: the foreground value.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, value: int = 1) -> None:
        super().__init__(keys, allow_missing_keys)
        self.value = value

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            label[label > 0] = self.value
            d[key] = label
        return d
