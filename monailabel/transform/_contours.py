"""Connected components and contour tracing in plain numpy.

MONAI Label uses scikit-image and OpenCV for these; neither is a dependency here. scikit-image is used
when it is installed (it is faster on very large masks); otherwise these vectorised numpy versions
give the same results.
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["get_color", "label_components", "point_in_polygon", "polygon_area", "trace_contours"]

# Moore neighbourhood, in ring order (each entry is 8-adjacent to the next).
_RING = [(0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1)]
_RING_INDEX = {d: i for i, d in enumerate(_RING)}


def label_components(mask: np.ndarray, connectivity: int = 1) -> Tuple[np.ndarray, int]:
    """Labels the connected components of a boolean mask.

    Args:
        mask: N-dimensional mask (non-zero is foreground).
        connectivity: 1 for face neighbours only, ``mask.ndim`` for full (8 in 2D, 26 in 3D) connectivity.

    Returns:
        ``(labels, count)``: int array with 0 for background and 1..count for the components.
    """
    mask = np.asarray(mask) != 0
    try:  # pragma: no cover - only where scikit-image is installed
        from skimage.measure import label as sk_label

        lab, n = sk_label(mask, connectivity=connectivity, return_num=True)
        return lab.astype(np.int64), int(n)
    except ImportError:
        pass

    size = mask.size
    if size == 0 or not mask.any():
        return np.zeros(mask.shape, dtype=np.int64), 0
    offsets = [o for o in np.ndindex(*([3] * mask.ndim)) if 0 < sum(abs(v - 1) for v in o) <= connectivity]
    offsets = [tuple(v - 1 for v in o) for o in offsets]

    # Each foreground voxel starts with its own flat index; repeatedly take the minimum over neighbours,
    # with pointer jumping (a voxel adopts its label's label) so long components converge quickly.
    lab = np.where(mask.ravel(), np.arange(size), size).reshape(mask.shape)
    background = ~mask
    while True:
        prev = lab.copy()
        for off in offsets:
            dst = tuple(slice(max(0, -o), lab.shape[i] - max(0, o)) for i, o in enumerate(off))
            src = tuple(slice(max(0, o), lab.shape[i] - max(0, -o)) for i, o in enumerate(off))
            np.minimum(lab[dst], lab[src], out=lab[dst])
            lab[background] = size  # background must not carry labels across gaps
        flat = lab.ravel()
        fg = flat < size
        for _ in range(4):
            flat[fg] = flat[flat[fg]]
        if np.array_equal(prev, lab):
            break
    roots, inverse = np.unique(lab.ravel(), return_inverse=True)
    ids = inverse.reshape(mask.shape) + 1
    ids[background] = 0
    count = len(roots) - (1 if roots[-1] == size else 0)
    return ids.astype(np.int64), int(count)


def _trace_one(b: np.ndarray) -> List[Tuple[int, int]]:
    """Moore-neighbour tracing of the outer boundary of the single component in padded mask ``b``."""
    pixels = np.argwhere(b)
    s = (int(pixels[0][0]), int(pixels[0][1]))
    if len(pixels) == 1:
        return [s]
    contour = [s]
    c, back = s, 0  # the pixel scanned just before s (its west neighbour) is background
    first_state = None
    while True:
        for k in range(1, 9):
            d = (back + k) % 8
            n = (c[0] + _RING[d][0], c[1] + _RING[d][1])
            if b[n]:
                break
        p = (c[0] + _RING[(d - 1) % 8][0], c[1] + _RING[(d - 1) % 8][1])
        state = (n, _RING_INDEX[(p[0] - n[0], p[1] - n[1])])
        if first_state is None:
            first_state = state
        elif state == first_state:
            break
        c, back = state
        contour.append(c)
    if len(contour) > 1 and contour[-1] == contour[0]:
        contour.pop()
    return contour


def _simplify(points: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """Drops points in the middle of straight runs (OpenCV's CHAIN_APPROX_SIMPLE)."""
    if len(points) < 3:
        return points
    out = []
    for i, p in enumerate(points):
        a, b = points[i - 1], points[(i + 1) % len(points)]
        if (p[0] - a[0], p[1] - a[1]) != (b[0] - p[0], b[1] - p[1]):
            out.append(p)
    return out or points[:1]


def trace_contours(mask: np.ndarray) -> List[np.ndarray]:
    """Returns the outer contour of each 8-connected component of a 2D mask.

    Args:
        mask: 2D mask indexed ``[x, y]``.

    Returns:
        One ``(N, 2)`` int array of ``(x, y)`` vertices per component, simplified on straight runs.
    """
    lab, count = label_components(mask, connectivity=2)
    if count == 0:
        return []
    coords = np.argwhere(lab > 0)
    ids = lab[coords[:, 0], coords[:, 1]]
    order = np.argsort(ids, kind="stable")
    coords, ids = coords[order], ids[order]
    splits = np.flatnonzero(np.diff(ids)) + 1
    result = []
    for comp in np.split(coords, splits):
        lo = comp.min(axis=0)
        hi = comp.max(axis=0)
        b = np.zeros((hi[0] - lo[0] + 3, hi[1] - lo[1] + 3), dtype=bool)
        b[comp[:, 0] - lo[0] + 1, comp[:, 1] - lo[1] + 1] = True
        pts = _simplify(_trace_one(b))
        result.append(np.array(pts, dtype=np.int64) + lo - 1)
    return result


def polygon_area(points: np.ndarray) -> float:
    """Returns the area of a polygon by the shoelace formula (OpenCV's ``contourArea``).

    Args:
        points: ``(N, 2)`` vertices.
    """
    if len(points) < 3:
        return 0.0
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def point_in_polygon(point: Sequence[float], polygon: np.ndarray) -> bool:
    """Whether a point lies inside a polygon (even-odd ray casting).

    Args:
        point: ``(x, y)``.
        polygon: ``(N, 2)`` vertices.
    """
    x, y = float(point[0]), float(point[1])
    px, py = polygon[:, 0].astype(np.float64), polygon[:, 1].astype(np.float64)
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    crosses = (py > y) != (qy > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = px + (y - py) * (qx - px) / (qy - py)
    return bool(np.count_nonzero(crosses & (x < xs)) % 2)


def get_color(label: object, color_map: Optional[Dict[object, object]] = None) -> object:
    """Returns the color of a label: from ``color_map`` when it has one, else a stable color from its name.

    Args:
        label: the label name or value.
        color_map: ``{label: color}``.
    """
    if color_map and label in color_map:
        return color_map[label]
    digest = hashlib.md5(str(label).encode()).digest()
    return f"rgb({digest[0]}, {digest[1]}, {digest[2]})"
