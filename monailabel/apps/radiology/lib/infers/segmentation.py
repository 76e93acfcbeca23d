"""Automatic multi-label 3D segmentation: MONAI transforms around a UNet (or SegResNet)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

from monai.networks.nets import SegResNet, UNet
from monai.transforms import EnsureChannelFirstd, EnsureTyped, LoadImaged, NormalizeIntensityd, SqueezeDimd

from lib.infers.common import TemplateInfer
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.transform.argmax import ArgmaxLabelsd

NETWORKS = ("unet", "segresnet")


def make_network(
    network: str = "unet", in_channels: int = 1, out_channels: int = 2, dropout: float = 0.0
) -> Any:
    """Returns the template's network: background + one channel per label out.

    Args:
        network: ``unet`` (small 3D UNet) or ``segresnet``.
        in_channels: input channels (1 image channel, plus guidance channels for interactive models).
        out_channels: output channels.
        dropout: dropout rate (epistemic scoring runs the network with dropout on).
    """
    if network == "segresnet":
        return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, init_filters=8,
                         blocks_down=(1, 2, 2), blocks_up=(1, 1), dropout_prob=dropout or None)
    if network != "unet":
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}; got {network!r}")
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=(8, 16, 32, 64),
                strides=(2, 2, 2), num_res_units=1, dropout=dropout)


class SegmentationInfer(TemplateInfer):
    """Segments every label of the model; images larger than the ROI run through a sliding window.

    Args:
        path: checkpoints, lowest priority first (the last existing one is used).
        network: the network.
        labels: ``{name: value}``.
        roi_size: sliding-window ROI.
        description: what the model does.
        **kwargs: passed to :class:`BasicInferTask` (``preload``, ``config`` ...).
    """

    def __init__(self, path: Any, network: Any, labels: Dict[str, int], roi_size: Sequence[int],
                 description: str = "Segment the labelled structures in a 3D volume", **kwargs: Any) -> None:
        super().__init__(path=path, network=network, type=InferType.SEGMENTATION, labels=labels, dimension=3,
                         description=description, roi_size=tuple(roi_size), **kwargs)

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        return [
            LoadImaged(keys="image"),
            EnsureChannelFirstd(keys="image"),
            NormalizeIntensityd(keys="image"),
            EnsureTyped(keys="image"),
        ]

    def inverse_transforms(self, data: Any = None) -> Sequence[Callable]:
        return []  # nothing resamples: the mask is on the image's grid already

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        # argmax of the logits equals argmax of their softmax: skip the softmax.
        # Channel i is the i-th label in value order; map it to the label's value.
        values = sorted(self.labels.values()) if isinstance(self.labels, dict) else []
        t = [EnsureTyped(keys="pred", device="cpu"), ArgmaxLabelsd(keys="pred"), SqueezeDimd(keys="pred", dim=0)]
        if values and values != list(range(1, len(values) + 1)):
            from lib.transforms import MapChannelsToValuesd

            t.append(MapChannelsToValuesd(keys="pred", values=values))
        return t
