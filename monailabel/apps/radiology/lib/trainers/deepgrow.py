"""Deepgrow trainer: clicks simulated from the labels with MONAI's deepgrow transforms, as MONAI Label trains it.

Each sample gets an initial foreground click inside one structure (``AddInitialSeedPointd``); during
each iteration the network's current prediction is compared with the label and up to
``max_train_interactions`` corrective clicks are added where they disagree most
(``monai.apps.deepgrow.interaction.Interaction`` with ``FindDiscrepancyRegionsd`` and
``AddRandomGuidanced``), before the weights are updated on the last guidance.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from monai.apps.deepgrow.interaction import Interaction
from monai.apps.deepgrow.transforms import (
    AddGuidanceSignald,
    AddInitialSeedPointd,
    AddRandomGuidanced,
    FindDiscrepancyRegionsd,
    SpatialCropForegroundd,
)
from monai.inferers import SimpleInferer
from monai.losses import DiceLoss
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    ResizeWithPadOrCropd,
    SelectItemsd,
    ToNumpyd,
)

from lib.transforms import SelectOneLabeld
from monailabel.tasks.train.basic_train import BasicTrainTask, Context


class DeepgrowTrainer(BasicTrainTask):
    """Trains the deepgrow network (image + 2 guidance channels in, 1 logit out) with simulated clicks.

    Args:
        model_dir: folder for runs, checkpoints and stats.
        network: the network to train.
        roi_size: crop around the structure (the whole structure plus margin, padded to this size).
        max_train_interactions: simulated click rounds per iteration.
        lr: Adam's learning rate.
        **kwargs: passed to :class:`BasicTrainTask`.
    """

    def __init__(self, model_dir: str, network: torch.nn.Module, roi_size: Sequence[int] = (32, 32, 32),
                 max_train_interactions: int = 5, max_val_interactions: int = 5, lr: float = 2e-3,
                 **kwargs: Any) -> None:
        super().__init__(model_dir, network=network, amp=False, **kwargs)
        self.roi_size = tuple(roi_size)
        self.max_train_interactions = max_train_interactions
        self.max_val_interactions = max_val_interactions
        self.lr = lr

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        return torch.optim.Adam(context.network.parameters(), lr=self.lr)

    def loss_function(self, context: Context) -> Any:
        return DiceLoss(sigmoid=True, squared_pred=True)

    def train_pre_transforms(self, context: Context) -> Any:
        return [
            LoadImaged(keys=("image", "label")),
            EnsureChannelFirstd(keys=("image", "label")),
            SelectOneLabeld(keys="label"),
            SpatialCropForegroundd(keys=("image", "label"), source_key="label", spatial_size=self.roi_size),
            ResizeWithPadOrCropd(keys=("image", "label"), spatial_size=self.roi_size),
            NormalizeIntensityd(keys="image"),
            ToNumpyd(keys=("image", "label")),
            AddInitialSeedPointd(label="label", guidance="guidance"),
            AddGuidanceSignald(image="image", guidance="guidance"),
            EnsureTyped(keys=("image", "label")),
            SelectItemsd(keys=("image", "label", "guidance")),
        ]

    def train_post_transforms(self, context: Context) -> Any:
        return [Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)]

    def val_inferer(self, context: Context) -> Any:
        return SimpleInferer()

    def click_transforms(self, context: Context) -> Any:
        """The transforms that add one simulated click after each prediction."""
        return [
            Activationsd(keys="pred", sigmoid=True),
            ToNumpyd(keys=("image", "label", "pred")),
            FindDiscrepancyRegionsd(label="label", pred="pred", discrepancy="discrepancy"),
            AddRandomGuidanced(guidance="guidance", discrepancy="discrepancy", probability="probability"),
            AddGuidanceSignald(image="image", guidance="guidance"),
            EnsureTyped(keys=("image", "label")),
        ]

    def train_iteration_update(self, context: Context) -> Any:
        return Interaction(transforms=self.click_transforms(context), max_interactions=self.max_train_interactions,
                           train=True, key_probability="probability")

    def val_iteration_update(self, context: Context) -> Any:
        return Interaction(transforms=self.click_transforms(context), max_interactions=self.max_val_interactions,
                           train=False, key_probability="probability")
