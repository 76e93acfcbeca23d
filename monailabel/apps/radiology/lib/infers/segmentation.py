"""The template's segmentation infer task: MONAI transforms around a small 3D UNet."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from monai.networks.nets import UNet
from monai.transforms import (
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    SqueezeDimd,
)

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.argmax import ArgmaxLabelsd


def make_network() -> UNet:
    """Returns the template's UNet: one input channel, background and organ out."""
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=(8, 16, 32, 64),
        strides=(2, 2, 2),
        num_res_units=1,
    )


class SegmentationInfer(BasicInferTask):
    """Segments the organ; images larger than the ROI run through a sliding window."""

    def __init__(self, path: str, network: Any, labels: Any, roi_size: Sequence[int], description: str) -> None:
        super().__init__(
            path=path,
            network=network,
            type=InferType.SEGMENTATION,
            labels=labels,
            dimension=3,
            description=description,
            roi_size=tuple(roi_size),
        )

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
        return [
            EnsureTyped(keys="pred", device="cpu"),
            ArgmaxLabelsd(keys="pred"),
            SqueezeDimd(keys="pred", dim=0),
        ]
