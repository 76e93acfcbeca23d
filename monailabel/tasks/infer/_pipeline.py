"""Helpers of ``BasicInferTask``'s pre-transforms: loaders that skip decoded images, MONAI 0.8 meta dicts."""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Sequence, Union

__all__ = ["add_meta_dicts", "as_list", "is_loader", "loader_for_keys"]


def as_list(transforms: Union[None, Callable, Sequence[Callable]]) -> List[Callable]:
    """Returns transforms as a list, unpacking a ``Compose``.

    Args:
        transforms: None, one transform, a list, or a Compose.
    """
    if not transforms:
        return []
    if isinstance(getattr(transforms, "transforms", None), (list, tuple)):
        return list(transforms.transforms)  # type: ignore[union-attr]
    if callable(transforms):
        return [transforms]
    return list(transforms)


def is_loader(t: Any) -> bool:
    """Whether ``t`` is a dict transform that loads images from files (``LoadImaged`` and its kin)."""
    return type(t).__name__.startswith("LoadImage") and hasattr(t, "keys")


def loader_for_keys(t: Any, keys: Sequence[str]) -> Any:
    """Returns a copy of dict loader ``t`` that loads only ``keys``, its per-key settings re-aligned.

    Args:
        t: the loader.
        keys: the keys still holding file names.
    """
    all_keys = list(t.keys)
    t2 = copy.copy(t)
    t2.keys = tuple(keys)
    for attr in ("meta_keys", "meta_key_postfix"):
        values = getattr(t, attr, None)
        if isinstance(values, (list, tuple)) and len(values) == len(all_keys):
            setattr(t2, attr, tuple(values[all_keys.index(k)] for k in keys))
    return t2


def add_meta_dicts(data: Dict[str, Any], keys: Sequence[str]) -> None:
    """Adds ``{key}_meta_dict`` from a MetaTensor's meta where absent, as MONAI 0.8's loaders produced.

    Args:
        data: the data dict, changed in place.
        keys: the keys to look at.
    """
    for k in keys:
        v = data.get(k)
        if hasattr(v, "meta") and isinstance(v.meta, dict) and f"{k}_meta_dict" not in data:
            data[f"{k}_meta_dict"] = dict(v.meta)
