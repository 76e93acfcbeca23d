"""Interact's mask deltas: applied in order they rebuild exactly the server's mask, in the smallest box."""

from __future__ import annotations

import numpy as np
import pytest

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.wire import apply_mask_delta
from monailabel_server.core.interact import COMPRESS_NONE, COMPRESS_ZLIB, MaskState, changed_box

SHAPE = (23, 17, 11)


def _apply(mask, delta):
    return apply_mask_delta(mask, delta.shape, delta.start, delta.size, delta.dtype, delta.data, delta.compression)


def _blob(rng: np.random.Generator, value: int, dtype=np.uint8) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=dtype)
    lo = [int(rng.integers(0, s - 3)) for s in SHAPE]
    hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, SHAPE, strict=True)]
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = value
    return mask


@pytest.mark.parametrize("compression", [COMPRESS_ZLIB, COMPRESS_NONE])
def test_deltas_rebuild_every_mask_exactly(compression: str) -> None:
    rng = np.random.default_rng(0)
    state, mirror = MaskState(SHAPE, compression), None
    for step in range(12):
        new = _blob(rng, 1 + step % 3)
        if step % 4 == 3:
            new = state.mask.copy()  # an unchanged answer
        before = state.mask.copy()
        delta = state.update(new)
        mirror = _apply(mirror, delta)
        np.testing.assert_array_equal(mirror, new)
        if not delta.size:
            np.testing.assert_array_equal(before, new)
            assert delta.data == b""
            continue
        # the box is the smallest: each of its faces holds a changed voxel
        changed = before != new
        box = tuple(slice(a, a + n) for a, n in zip(delta.start, delta.size, strict=True))
        assert changed[box].sum() == changed.sum()
        for axis in range(3):
            moved = np.moveaxis(changed[box], axis, 0)
            assert moved[0].any() and moved[-1].any()
    full = state.full()
    assert full.full and full.size == SHAPE
    np.testing.assert_array_equal(_apply(None, full), state.mask)


def test_a_wider_mask_widens_the_stream() -> None:
    state = MaskState(SHAPE)
    mirror = _apply(None, state.update(_blob(np.random.default_rng(1), 7)))
    wide = np.zeros(SHAPE, np.uint16)
    wide[2:5, 3:9, 1:4] = 300
    delta = state.update(wide)
    assert delta.dtype == np.uint16
    mirror = _apply(mirror, delta)
    assert mirror.dtype == np.uint16
    np.testing.assert_array_equal(mirror, wide)


def test_a_channel_first_singleton_and_bool_masks_are_taken() -> None:
    state = MaskState(SHAPE)
    mask = np.zeros((1, *SHAPE), bool)
    mask[0, 1:3, 2:4, 5:7] = True
    mirror = _apply(None, state.update(mask))
    np.testing.assert_array_equal(mirror, mask[0].astype(np.uint8))


@pytest.mark.parametrize(
    "mask, reason",
    [(np.zeros((4, 4, 4), np.uint8), "MASK_NOT_ON_GRID"), (np.zeros((2, *SHAPE), np.uint8), "MASK_NOT_ON_GRID"),
     (np.zeros(SHAPE, np.float32), "MASK_NOT_LABELS")],
)
def test_masks_that_cannot_travel_as_deltas_are_refused(mask: np.ndarray, reason: str) -> None:
    with pytest.raises(MONAILabelException) as info:
        MaskState(SHAPE).update(mask)
    assert info.value.error == MONAILabelError.PRECONDITION_FAILED and info.value.reason == reason


def test_changed_box_of_single_voxels() -> None:
    a = np.zeros(SHAPE, np.uint8)
    assert changed_box(a, a.copy()) is None
    b = a.copy()
    b[5, 0, 10] = 1
    assert changed_box(a, b) == ((5, 0, 10), (1, 1, 1))
    b[0, 16, 3] = 2
    assert changed_box(a, b) == ((0, 0, 3), (6, 17, 8))


def test_changed_box_equals_the_bounds_of_every_difference() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        shape = tuple(int(v) for v in rng.integers(1, 7, size=int(rng.integers(1, 5))))
        old = rng.integers(0, 2, size=shape)
        new = old.copy()
        flip = rng.random(shape) < 0.1
        new[flip] = 1 - new[flip]
        where = np.argwhere(old != new)
        box = changed_box(old, new)
        if len(where) == 0:
            assert box is None
        else:
            lo, hi = where.min(0), where.max(0)
            assert box == (tuple(int(v) for v in lo), tuple(int(v) for v in hi - lo + 1))


@pytest.mark.parametrize("shape, order", [((4, 4, 4), "C"), ((3, 5, 7), "C"), ((4, 4, 4), "F"), ((8, 8, 8), "C")])
def test_the_word_wise_equality_shortcut_misses_no_difference(shape: tuple, order: str) -> None:
    old = np.zeros(shape, np.uint8, order=order)
    assert changed_box(old, old.copy(order=order)) is None
    for index in [(0, 0, 0), tuple(s - 1 for s in shape), (shape[0] // 2, shape[1] - 1, 0)]:
        new = old.copy(order=order)
        new[index] = 3  # a byte anywhere in a word, the last word included
        assert changed_box(old, new) == (index, (1, 1, 1))
