"""2D segmentation of large images (PNG/TIFF) in tiles, answering a mask or polygons."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from monai.inferers import Inferer, SlidingWindowInferer
from monai.networks.nets import UNet
from monai.transforms import EnsureChannelFirstd, EnsureTyped, LoadImaged, ScaleIntensityRanged, SqueezeDimd

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.argmax import ArgmaxLabelsd
from monailabel.transform.post import FindContoursd
from monailabel.transform.writer import PolygonWriter

POLYGON_OUTPUTS = ("json", "dsa", "asap")


def make_network(out_channels: int = 2) -> UNet:
    """Returns the template's 2D UNet: RGB in, background + one channel per label out."""
    return UNet(spatial_dims=2, in_channels=3, out_channels=out_channels, channels=(16, 32, 64, 128),
                strides=(2, 2, 2), num_res_units=1)


class SegmentationNucleiInfer(BasicInferTask):
    """Segments nuclei in an RGB image of any size, tile by tile (``tile_size`` windows, overlapping).

    Request keys: ``output`` = ``image`` (default: a PNG mask) or ``json`` (polygons in the result's
    ``annotations``; no mask), ``dsa`` / ``asap`` (a polygon file, as MONAI Label's pathology app);
    ``tile_size``, ``sw_overlap``, ``min_poly_area``.

    Args:
        path: checkpoints, lowest priority first.
        network: the network.
        labels: ``{name: value}``.
        tile_size: inference tile.
        description: what the model does.
        **kwargs: passed to :class:`BasicInferTask`.
    """

    def __init__(self, path: Any, network: Any, labels: Dict[str, int], tile_size: Sequence[int] = (256, 256),
                 description: str = "Segment nuclei in 2D images (tiled)", **kwargs: Any) -> None:
        super().__init__(path=path, network=network, type=InferType.SEGMENTATION, labels=labels, dimension=2,
                         description=description, roi_size=tuple(tile_size), **kwargs)
        self._config.update({"output": ["image", *POLYGON_OUTPUTS]})

    def info(self) -> Dict[str, Any]:
        info = super().info()
        path = self.get_path()
        info["weights"] = f"checkpoint {path}" if path else "random weights (seed 0): no checkpoint yet"
        return info

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        return [
            LoadImaged(keys="image", reader="PILReader"),
            EnsureChannelFirstd(keys="image"),
            ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
            EnsureTyped(keys="image"),
        ]

    def inferer(self, data: Optional[Dict[str, Any]] = None) -> Inferer:
        data = data or {}
        tile: Tuple[int, ...] = tuple(data.get("tile_size") or self.roi_size or (256, 256))
        device = data.get("device")
        return SlidingWindowInferer(roi_size=tile, sw_batch_size=data.get("sw_batch_size", 4),
                                    overlap=data.get("sw_overlap", 0.25), mode="gaussian", sw_device=device,
                                    device=device)

    def inverse_transforms(self, data: Any = None) -> Sequence[Callable]:
        return []

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        t: list = [EnsureTyped(keys="pred", device="cpu"), ArgmaxLabelsd(keys="pred"), SqueezeDimd(keys="pred", dim=0)]
        data = data or {}
        if data.get("output", "image") in POLYGON_OUTPUTS:
            t.append(FindContoursd(keys="pred", labels=self.labels, min_poly_area=data.get("min_poly_area", 20)))
        return t

    def writer(self, data: Dict[str, Any], extension: Optional[str] = None, dtype: Optional[Any] = None) -> Any:
        output = data.get("output", "image")
        if output not in POLYGON_OUTPUTS:
            return super().writer(data, extension=extension or data.get("result_extension") or ".png", dtype=dtype)
        if output == "json":  # the polygons travel in the result dict: {"annotation": {"elements": ...}}
            return None, dict(data.get(self.output_json_key) or {})
        return PolygonWriter(label=self.output_label_key, json=self.output_json_key)(data)
