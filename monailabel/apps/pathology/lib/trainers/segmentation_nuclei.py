"""Trains the 2D nuclei network on random patches of the final labels; validates on whole images in tiles."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    ScaleIntensityRanged,
)

from monailabel.tasks.train.basic_train import BasicTrainTask, Context


class SegmentationNucleiTrainer(BasicTrainTask):
    """Dice-CE on ``patch_size`` patches (half centred on nuclei), flips and 90-degree rotations.

    Args:
        model_dir: folder for runs, checkpoints and stats.
        network: the network to train.
        labels: ``{name: value}``.
        patch_size: training patch.
        tile_size: validation tile.
        num_samples: patches per image and iteration.
        lr: Adam's learning rate.
        **kwargs: passed to :class:`BasicTrainTask`.
    """

    def __init__(self, model_dir: str, network: torch.nn.Module, labels: Dict[str, int],
                 patch_size: Sequence[int] = (64, 64), tile_size: Sequence[int] = (256, 256), num_samples: int = 4,
                 lr: float = 2e-3, **kwargs: Any) -> None:
        super().__init__(model_dir, network=network, amp=False, labels=labels, **kwargs)
        self.n_classes = len(labels) + 1
        self.patch_size = tuple(patch_size)
        self.tile_size = tuple(tile_size)
        self.num_samples = num_samples
        self.lr = lr

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        return torch.optim.Adam(context.network.parameters(), lr=self.lr)

    def loss_function(self, context: Context) -> Any:
        return DiceCELoss(to_onehot_y=True, softmax=True)

    def _load(self) -> list:
        return [
            LoadImaged(keys=("image", "label"), reader="PILReader"),
            EnsureChannelFirstd(keys=("image", "label")),
            ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
            EnsureTyped(keys=("image", "label")),
        ]

    def train_pre_transforms(self, context: Context) -> Any:
        return self._load() + [
            RandCropByPosNegLabeld(keys=("image", "label"), label_key="label", spatial_size=self.patch_size,
                                   pos=1, neg=1, num_samples=self.num_samples, allow_smaller=True),
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),
            RandRotate90d(keys=("image", "label"), prob=0.5),
        ]

    def train_post_transforms(self, context: Context) -> Any:
        return [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=self.n_classes),
        ]

    def val_pre_transforms(self, context: Context) -> Any:
        return self._load()

    def val_inferer(self, context: Context) -> Any:
        return SlidingWindowInferer(roi_size=self.tile_size, sw_batch_size=4, overlap=0.25)
