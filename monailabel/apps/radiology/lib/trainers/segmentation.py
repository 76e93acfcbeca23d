"""The template's segmentation trainer: the infer task's network, trained on random crops of the final labels."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    RandCropByPosNegLabeld,
    RandFlipd,
)

from lib.transforms import SequentialLabelsd
from monailabel.tasks.train.basic_train import BasicTrainTask, Context


class SegmentationTrainer(BasicTrainTask):
    """Trains the segmentation network (background + one channel per label) with Dice-CE on random crops.

    Label values are mapped to channels in value order (``SequentialLabelsd``), as the infer task maps
    them back.

    Args:
        model_dir: folder for runs, checkpoints and ``train_stats.json``.
        network: the network to train (the infer task's architecture).
        roi_size: crop size for training and window size for validation.
        lr: Adam's learning rate.
        num_samples: crops per image and iteration.
        labels: ``{name: value}`` (default ``{"organ": 1}``).
        **kwargs: passed to :class:`BasicTrainTask` (``publish_path``, ``config``, ...).
    """

    def __init__(
        self,
        model_dir: str,
        network: torch.nn.Module,
        roi_size: Sequence[int] = (32, 32, 32),
        lr: float = 2e-3,
        num_samples: int = 2,
        labels: Optional[Dict[str, int]] = None,
        **kwargs: Any,
    ) -> None:
        labels = dict(labels or {"organ": 1})
        super().__init__(model_dir, network=network, amp=False, labels=labels, **kwargs)
        self.label_names = labels
        self.roi_size = tuple(roi_size)
        self.lr = lr
        self.num_samples = num_samples

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        return torch.optim.Adam(context.network.parameters(), lr=self.lr)

    def loss_function(self, context: Context) -> Any:
        return DiceCELoss(to_onehot_y=True, softmax=True)

    def train_pre_transforms(self, context: Context) -> Any:
        return [
            LoadImaged(keys=("image", "label")),
            SequentialLabelsd(keys="label", label_names=self.label_names),
            EnsureChannelFirstd(keys=("image", "label")),
            NormalizeIntensityd(keys="image"),
            EnsureTyped(keys=("image", "label")),
            RandCropByPosNegLabeld(
                keys=("image", "label"),
                label_key="label",
                spatial_size=self.roi_size,
                pos=1,
                neg=1,
                num_samples=self.num_samples,
                allow_smaller=True,
            ),
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),
        ]

    def train_post_transforms(self, context: Context) -> Any:
        return [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=len(self.label_names) + 1),
        ]

    def val_pre_transforms(self, context: Context) -> Any:
        return [
            LoadImaged(keys=("image", "label")),
            SequentialLabelsd(keys="label", label_names=self.label_names),
            EnsureChannelFirstd(keys=("image", "label")),
            NormalizeIntensityd(keys="image"),
            EnsureTyped(keys=("image", "label")),
        ]

    def val_inferer(self, context: Context) -> Any:
        return SlidingWindowInferer(roi_size=self.roi_size, sw_batch_size=4, overlap=0.25)
