"""DeepEdit-style combined mode: an automatic first pass, then clicks to correct it, in one model.

As MONAI Label's ``deepedit``: the network takes the image plus one guidance channel per label
(background included, ``monai.apps.deepedit.transforms.AddGuidanceSignalDeepEditd``). With no clicks
the guidance channels are empty and the model segments on its own (the ``deepedit_seg`` task does
exactly that, with ``DiscardAddGuidanced``); clicks keyed by label name (or ``foreground`` /
``background`` with an optional ``label``) steer it. The volume keeps its grid.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

from monai.apps.deepedit.transforms import (
    AddGuidanceFromPointsDeepEditd,
    AddGuidanceSignalDeepEditd,
    DiscardAddGuidanced,
)
from monai.transforms import EnsureChannelFirstd, EnsureTyped, LoadImaged, NormalizeIntensityd, SqueezeDimd

from lib.infers.common import TemplateInfer
from lib.transforms import LabelClicksd, MapChannelsToValuesd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.transform.argmax import ArgmaxLabelsd


class DeepEditInfer(TemplateInfer):
    """DeepEdit inference; ``type=InferType.SEGMENTATION`` gives the automatic (no clicks) variant.

    Args:
        path: checkpoints, lowest priority first.
        network: a network with ``1 + len(labels)`` inputs and ``len(labels)`` outputs.
        labels: ``{name: value}`` with ``background: 0``.
        roi_size: sliding-window ROI.
        type: ``InferType.DEEPEDIT`` (clicks) or ``InferType.SEGMENTATION`` (automatic).
        description: what the model does.
        **kwargs: passed to :class:`BasicInferTask`.
    """

    def __init__(self, path: Any, network: Any, labels: Dict[str, int], roi_size: Sequence[int],
                 type: InferType = InferType.DEEPEDIT,
                 description: str = "Automatic 3D segmentation, corrected with clicks", **kwargs: Any) -> None:
        super().__init__(path=path, network=network, type=type, labels=labels, dimension=3,
                         description=description, roi_size=tuple(roi_size), **kwargs)

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        t: list = [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), NormalizeIntensityd(keys="image")]
        if self.type == InferType.DEEPEDIT:
            t += [
                LabelClicksd(label_names=self.labels),
                AddGuidanceFromPointsDeepEditd(ref_image="image", guidance="guidance", label_names=self.labels),
                AddGuidanceSignalDeepEditd(keys="image", guidance="guidance", number_intensity_ch=1),
            ]
        else:
            t.append(DiscardAddGuidanced(keys="image", label_names=self.labels, number_intensity_ch=1))
        t.append(EnsureTyped(keys="image"))
        return t

    def inverse_transforms(self, data: Any = None) -> Sequence[Callable]:
        return []

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        # channel i is the i-th label in value order (background first); give each its label value
        values = [v for _, v in sorted(self.labels.items(), key=lambda kv: kv[1]) if v > 0]
        return [
            EnsureTyped(keys="pred", device="cpu"),
            ArgmaxLabelsd(keys="pred"),
            SqueezeDimd(keys="pred", dim=0),
            MapChannelsToValuesd(keys="pred", values=values),
        ]
