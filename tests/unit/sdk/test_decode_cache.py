"""Repeated inference on a file reuses its decoded image; a changed file or loader decodes again."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import torch
from monai.transforms import LoadImaged

from monailabel.tasks.infer.decode_cache import DecodeCache, decode_cache

from .conftest import AFFINE
from .test_basic_infer import MyInfer


def _mask(task: MyInfer, path) -> np.ndarray:
    label, _ = task({"image": str(path), "device": "cpu"})
    out = np.asarray(nib.load(label).dataobj)
    os.remove(label)
    return out


def test_second_inference_hits_and_a_changed_file_misses(write_volume, checkpoint, unet) -> None:
    decode_cache.clear()
    path, _ = write_volume((16, 16, 16))
    task = MyInfer(str(checkpoint), unet)
    hits, misses = decode_cache.hits, decode_cache.misses
    first = _mask(task, path)
    assert (decode_cache.hits, decode_cache.misses) == (hits, misses + 1)
    second = _mask(task, path)
    assert decode_cache.hits == hits + 1
    np.testing.assert_array_equal(first, second)
    # a new file at the same path (other size and mtime) must be decoded, not served from the cache
    nib.save(nib.Nifti1Image(np.zeros((12, 12, 12), np.float32), AFFINE), str(path))
    os.utime(path, ns=(1, 1))
    third = _mask(task, path)
    assert third.shape == (12, 12, 12)
    assert decode_cache.misses == misses + 2


def test_entries_are_clones_and_loaders_with_other_settings_miss(write_volume) -> None:
    cache = DecodeCache(64 << 20)
    path, volume = write_volume((8, 8, 8))
    loader = LoadImaged(keys="image")
    data = {"image": str(path)}
    key = cache.key(loader, ["image"], data)
    assert key is not None
    cache.put(key, loader(dict(data)))
    got = cache.get(key)
    assert got is not None
    got["image"] += 100  # a transform changing its input in place must not reach the cache
    again = cache.get(key)
    np.testing.assert_allclose(np.asarray(again["image"]), volume, rtol=1e-6)
    other = LoadImaged(keys="image", dtype=np.float64)
    assert cache.key(other, ["image"], data) != key
    assert cache.key(loader, ["image"], {"image": str(path.parent)}) is None  # folders are not cached


def test_budget_evicts_least_recently_used() -> None:
    cache = DecodeCache(3 * 4096)
    for i in range(4):
        cache.put(("k", i), {"image": torch.zeros(1024)})  # 4 KiB each
    assert cache.get(("k", 0)) is None
    assert all(cache.get(("k", i)) is not None for i in (1, 2, 3))
    cache.put(("big",), {"image": torch.zeros(4096)})  # over the whole budget: not stored
    assert cache.get(("big",)) is None
    assert DecodeCache(0).key(LoadImaged(keys="image"), ["image"], {"image": __file__}) is None
