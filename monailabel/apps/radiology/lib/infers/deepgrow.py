"""Deepgrow-style interactive 3D segmentation: foreground/background clicks in, the clicked structure out.

As MONAI Label's ``deepgrow_3d``: the image and one Gaussian guidance channel per click kind
(``monai.apps.deepgrow.transforms.AddGuidanceSignald``) go into the network; a sigmoid and a 0.5
threshold give the mask. Here the volume keeps its grid (no crop, no resampling), so clicks are the
voxel indices the viewer shows, and large volumes run through a sliding window.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

from monai.apps.deepgrow.transforms import AddGuidanceSignald
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    SqueezeDimd,
)

from lib.infers.common import TemplateInfer
from lib.transforms import ClicksToGuidanced, ScaleMaskd
from monailabel.interfaces.tasks.infer_v2 import InferType


class DeepgrowInfer(TemplateInfer):
    """Segments the structure under the foreground clicks, avoiding the background clicks.

    Request keys: ``foreground`` and ``background`` (lists of ``[x, y, z]``), ``label`` (which label's
    value the mask gets; the first label by default).

    Args:
        path: checkpoints, lowest priority first.
        network: a network with 3 input channels (image, foreground, background) and 1 output.
        labels: ``{name: value}`` the clicks may target.
        roi_size: sliding-window ROI.
        description: what the model does.
        **kwargs: passed to :class:`BasicInferTask`.
    """

    def __init__(self, path: Any, network: Any, labels: Dict[str, int], roi_size: Sequence[int],
                 description: str = "Interactive 3D segmentation from foreground/background clicks",
                 **kwargs: Any) -> None:
        super().__init__(path=path, network=network, type=InferType.DEEPGROW, labels=labels, dimension=3,
                         description=description, roi_size=tuple(roi_size), **kwargs)

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        return [
            LoadImaged(keys="image"),
            EnsureChannelFirstd(keys="image"),
            NormalizeIntensityd(keys="image"),
            ClicksToGuidanced(ref_image="image", guidance="guidance"),
            AddGuidanceSignald(image="image", guidance="guidance"),
            EnsureTyped(keys="image"),
        ]

    def inverse_transforms(self, data: Any = None) -> Sequence[Callable]:
        return []

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        labels = self.labels if isinstance(self.labels, dict) else {}
        return [
            EnsureTyped(keys="pred", device="cpu"),
            Activationsd(keys="pred", sigmoid=True),
            AsDiscreted(keys="pred", threshold=0.5),
            SqueezeDimd(keys="pred", dim=0),
            ScaleMaskd(keys="pred", labels=labels, default=min(labels.values(), default=1)),
        ]
