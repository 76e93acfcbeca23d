"""Post-transforms of MONAI Label, with its names and constructor arguments.

``LargestCCd`` and ``FindContoursd`` use scikit-image / OpenCV in MONAI Label; here they use the numpy
helpers of :mod:`monailabel.transform._contours`, so neither library is needed.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
from monai.config import KeysCollection
from monai.transforms import (
    MapTransform,
    Orientation,
    Resize,
    Transform,
    generate_spatial_bounding_box,
    get_extreme_points,
)
from monai.utils import InterpolateMode, ensure_tuple_rep

from monailabel.transform._contours import get_color, label_components, point_in_polygon, polygon_area, trace_contours
from monailabel.transform.writer import to_numpy

logger = logging.getLogger(__name__)

__all__ = ["BoundingBoxd", "ExtremePointsd", "FindContoursd", "LargestCCd", "RenameKeyd", "Restored"]


class LargestCCd(MapTransform):
    """Keeps only the largest connected component (face connectivity) of each mask.

    Args:
        keys: keys of the masks.
        has_channel: whether the masks have a leading channel axis (each channel is handled alone).
    """

    def __init__(self, keys: KeysCollection, has_channel: bool = True) -> None:
        super().__init__(keys)
        self.has_channel = has_channel

    @staticmethod
    def get_largest_cc(label: Any) -> np.ndarray:
        """Returns the largest component of each item along the first axis.

        Args:
            label: array of masks, shape ``(C, *spatial)``.
        """
        label = to_numpy(label)
        largest_cc = np.zeros_like(label)
        for i, item in enumerate(label):
            lab, count = label_components(item, connectivity=1)
            if count:
                largest_cc[i, ...] = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        return largest_cc

    def __call__(self, data: Any) -> Dict[Any, Any]:
        d = dict(data)
        for key in self.keys:
            result = self.get_largest_cc(d[key] if self.has_channel else to_numpy(d[key])[np.newaxis])
            d[key] = result if self.has_channel else result[0]
        return d


class ExtremePointsd(MapTransform):
    """Stores the extreme points of a mask in the result dict.

    Args:
        keys: keys of the masks.
        result: key of the result dict.
        points: key under which the points are stored in the result dict.
    """

    def __init__(self, keys: KeysCollection, result: str = "result", points: str = "points") -> None:
        super().__init__(keys)
        self.result = result
        self.points = points

    def __call__(self, data: Any) -> Dict[Any, Any]:
        d = dict(data)
        for key in self.keys:
            try:
                points = get_extreme_points(to_numpy(d[key]))
            except ValueError:  # empty mask
                continue
            if d.get(self.result) is None:
                d[self.result] = {}
            d[self.result][self.points] = np.array(points).astype(int).tolist()
        return d


class BoundingBoxd(MapTransform):
    """Stores the bounding box of a mask (``[[start...], [end...]]``) in the result dict.

    Args:
        keys: keys of the masks.
        result: key of the result dict.
        bbox: key under which the box is stored in the result dict.
    """

    def __init__(self, keys: KeysCollection, result: str = "result", bbox: str = "bbox") -> None:
        super().__init__(keys)
        self.result = result
        self.bbox = bbox

    def __call__(self, data: Any) -> Dict[Any, Any]:
        d = dict(data)
        for key in self.keys:
            bbox = generate_spatial_bounding_box(d[key])
            if d.get(self.result) is None:
                d[self.result] = {}
            d[self.result][self.bbox] = np.array(bbox).astype(int).tolist()
        return d


class Restored(MapTransform):
    """Resizes a result back to the reference image's original spatial shape (undoing spacing).

    The original affine is stored in ``{key}_meta_dict["affine"]`` so the writer saves the result on
    the original grid.

    Args:
        keys: keys of the results.
        ref_image: key of the reference image (a MetaTensor, or with a ``{ref_image}_meta_dict``).
        has_channel: whether the results have a leading channel axis.
        invert_orient: also undo an orientation change, from ``original_affine``.
        mode: interpolation mode for the resize.
        align_corners: ``align_corners`` for the resize.
        meta_key_postfix: postfix of metadata keys.
        config_labels: ``{name: value}`` of the app's labels: the result's values 1, 2 ... (the
            model's channels in this order) become these values (``background`` skipped).
    """

    def __init__(
        self,
        keys: KeysCollection,
        ref_image: str,
        has_channel: bool = True,
        invert_orient: bool = False,
        mode: str = InterpolateMode.NEAREST,
        align_corners: Union[Sequence[Optional[bool]], Optional[bool]] = None,
        meta_key_postfix: str = "meta_dict",
        config_labels: Optional[Dict[str, int]] = None,
    ) -> None:
        super().__init__(keys)
        self.config_labels = config_labels
        self.ref_image = ref_image
        self.has_channel = has_channel
        self.invert_orient = invert_orient
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.align_corners = ensure_tuple_rep(align_corners, len(self.keys))
        self.meta_key_postfix = meta_key_postfix

    def __call__(self, data: Any) -> Dict[Any, Any]:
        d = dict(data)
        ref = d.get(self.ref_image)
        meta_dict = (
            ref.meta
            if ref is not None and hasattr(ref, "meta")
            else d.get(f"{self.ref_image}_{self.meta_key_postfix}", {})
        )
        meta_dict = meta_dict or {}

        for idx, key in enumerate(self.keys):
            result = d[key]
            current_size = result.shape[1:] if self.has_channel else result.shape
            spatial_shape = meta_dict.get("spatial_shape", current_size)
            spatial_shape = [int(s) for s in to_numpy(spatial_shape).tolist()]
            spatial_size = spatial_shape[-len(current_size) :]

            if np.any(np.not_equal(current_size, spatial_size)):
                resizer = Resize(spatial_size=spatial_size, mode=self.mode[idx])
                result = resizer(
                    result if self.has_channel else result[None],
                    mode=self.mode[idx],
                    align_corners=self.align_corners[idx],
                )
                result = result if self.has_channel else result[0]

            if self.invert_orient:
                orig_affine = meta_dict.get("original_affine", None)
                if orig_affine is not None:
                    import nibabel as nib

                    inverse_transform = Orientation(
                        axcodes="".join(nib.orientations.aff2axcodes(to_numpy(orig_affine)))
                    )
                    with inverse_transform.trace_transform(False):
                        result = inverse_transform(result if self.has_channel else result[None])
                    result = result if self.has_channel else result[0]
                else:
                    logger.info("Failed invert orientation - original_affine is not on the image header")

            if self.config_labels is not None:
                remapped = result * 0
                for j, (name, value) in enumerate(self.config_labels.items(), 1):
                    if name != "background":
                        remapped[result == j] = value
                result = remapped

            d[key] = result if len(result.shape) <= 3 else result[0] if result.shape[0] == 1 else result

            meta = d.get(f"{key}_{self.meta_key_postfix}")
            if meta is None:
                meta = {}
                d[f"{key}_{self.meta_key_postfix}"] = meta
            meta["affine"] = meta_dict.get("original_affine", meta_dict.get("affine"))
        return d


class FindContoursd(MapTransform):
    """Finds the polygons of each label of a 2D mask and stores them as an annotation in the result dict.

    Polygons are ``[[x, y], ...]`` shifted by ``data["location"]``; polygons smaller than
    ``min_poly_area`` (or larger than a non-zero ``max_poly_area``) are dropped.

    Args:
        keys: keys of the 2D masks (indexed ``[x, y]``).
        min_positive: skip a mask with fewer foreground pixels.
        min_poly_area: smallest polygon area kept (``data["min_poly_area"]`` overrides).
        max_poly_area: largest polygon area kept, 0 for no limit (``data["max_poly_area"]`` overrides).
        result: key of the result dict.
        result_output_key: key of the annotation in the result dict.
        key_label_colors: data key of ``{label: color}``.
        key_foreground_points: data key of points; when set, only polygons containing one are kept.
        labels: label names, a list (values 1..n) or ``{name: value}``.
        colormap: ``{label: color}``, overriding ``data[key_label_colors]``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        min_positive: int = 10,
        min_poly_area: float = 80,
        max_poly_area: float = 0,
        result: str = "result",
        result_output_key: str = "annotation",
        key_label_colors: str = "label_colors",
        key_foreground_points: Optional[str] = None,
        labels: Union[None, str, Sequence[str], Dict[str, int]] = None,
        colormap: Optional[Dict[Any, Any]] = None,
    ) -> None:
        super().__init__(keys)
        self.min_positive = min_positive
        self.min_poly_area = min_poly_area
        self.max_poly_area = max_poly_area
        self.result = result
        self.result_output_key = result_output_key
        self.key_label_colors = key_label_colors
        self.key_foreground_points = key_foreground_points
        self.colormap = colormap

        labels = labels if labels else {}
        labels = [labels] if isinstance(labels, str) else labels
        if not isinstance(labels, dict):
            labels = {v: k + 1 for k, v in enumerate(labels)}
        self.labels = {v: k for k, v in labels.items()}

    def __call__(self, data: Any) -> Dict[Any, Any]:
        d = dict(data)
        location = d.get("location", [0, 0])
        size = d.get("size", [0, 0])
        min_poly_area = d.get("min_poly_area", self.min_poly_area)
        max_poly_area = d.get("max_poly_area", self.max_poly_area)
        color_map = d.get(self.key_label_colors) if self.colormap is None else self.colormap
        foreground_points = d.get(self.key_foreground_points, []) if self.key_foreground_points else []

        elements = []
        label_names = set()
        for key in self.keys:
            p = to_numpy(d[key])
            p = p[0] if p.ndim == 3 and p.shape[0] == 1 else p
            if np.count_nonzero(p) < self.min_positive:
                continue
            for label_idx in [v for v in np.unique(p).tolist() if v > 0]:
                label_name = self.labels.get(label_idx, label_idx)
                label_names.add(label_name)
                polygons = []
                for contour in trace_contours(p == label_idx):
                    if len(contour) < 3:
                        continue
                    area = polygon_area(contour)
                    if area < min_poly_area or 0 < max_poly_area < area:
                        continue
                    contour = contour + np.array([location[0], location[1]])
                    if foreground_points and not any(point_in_polygon(pt, contour) for pt in foreground_points):
                        continue
                    polygons.append(contour.astype(int).tolist())
                if polygons:
                    elements.append({"label": label_name, "contours": polygons})

        if elements:
            if d.get(self.result) is None:
                d[self.result] = {}
            d[self.result][self.result_output_key] = {
                "location": location,
                "size": size,
                "elements": elements,
                "labels": {n: get_color(n, color_map) for n in label_names},
            }
        return d


class RenameKeyd(Transform):
    """Moves ``data[source_key]`` to ``data[target_key]``.

    Args:
        source_key: the key to rename.
        target_key: its new name.
    """

    def __init__(self, source_key: str, target_key: str) -> None:
        self.source_key = source_key
        self.target_key = target_key

    def __call__(self, data: Any) -> Dict[Any, Any]:
        d = dict(data)
        d[self.target_key] = d.pop(self.source_key)
        return d
