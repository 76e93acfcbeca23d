"""DeepEdit trainer: MONAI's deepedit click simulation, as MONAI Label's radiology app trains ``deepedit``.

With probability ``deepgrow_probability_train`` an iteration simulates clicks: an initial click per
label on a random slice holding it (``AddInitialSeedPointMissingLabelsd``), then corrective clicks where
prediction and label disagree (``FindDiscrepancyRegionsDeepEditd``, ``AddRandomGuidanceDeepEditd``)
inside ``monai.apps.deepedit.interaction.Interaction``. Otherwise the guidance channels are zeroed and
the network learns to segment with no clicks: one model for automatic and interactive use.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from monai.apps.deepedit.interaction import Interaction
from monai.apps.deepedit.transforms import (
    AddGuidanceSignalDeepEditd,
    AddInitialSeedPointMissingLabelsd,
    AddRandomGuidanceDeepEditd,
    FindAllValidSlicesMissingLabelsd,
    FindDiscrepancyRegionsDeepEditd,
)
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
    ToNumpyd,
)

from lib.transforms import SequentialLabelsd
from monailabel.tasks.train.basic_train import BasicTrainTask, Context


class DeepEditTrainer(BasicTrainTask):
    """Trains the DeepEdit network on the final labels with simulated clicks.

    Args:
        model_dir: folder for runs, checkpoints and stats.
        network: the network (``1 + len(labels)`` inputs, ``len(labels)`` outputs).
        labels: ``{name: value}`` with ``background: 0``.
        roi_size: training crop size.
        deepgrow_probability_train: chance that a training iteration simulates clicks.
        deepgrow_probability_val: the same for validation.
        max_interactions: click rounds per simulated iteration.
        lr: Adam's learning rate.
        **kwargs: passed to :class:`BasicTrainTask`.
    """

    def __init__(self, model_dir: str, network: torch.nn.Module, labels: Dict[str, int],
                 roi_size: Sequence[int] = (32, 32, 32), deepgrow_probability_train: float = 0.5,
                 deepgrow_probability_val: float = 1.0, max_interactions: int = 1, lr: float = 2e-3,
                 **kwargs: Any) -> None:
        super().__init__(model_dir, network=network, amp=False, labels=labels, **kwargs)
        self.label_names = dict(labels)
        self.roi_size = tuple(roi_size)
        self.deepgrow_probability_train = deepgrow_probability_train
        self.deepgrow_probability_val = deepgrow_probability_val
        self.max_interactions = max_interactions
        self.lr = lr

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        return torch.optim.Adam(context.network.parameters(), lr=self.lr)

    def loss_function(self, context: Context) -> Any:
        return DiceCELoss(to_onehot_y=True, softmax=True)

    def _load(self, crop: bool) -> list:
        t: list = [
            LoadImaged(keys=("image", "label")),
            SequentialLabelsd(keys="label", label_names=self.label_names, set_names=True),
            EnsureChannelFirstd(keys=("image", "label")),
            NormalizeIntensityd(keys="image"),
        ]
        if crop:
            t.append(RandCropByPosNegLabeld(keys=("image", "label"), label_key="label", spatial_size=self.roi_size,
                                            pos=1, neg=0, num_samples=1, allow_smaller=True))
        return t + [
            ToNumpyd(keys=("image", "label")),
            FindAllValidSlicesMissingLabelsd(keys="label", sids="sids"),
            AddInitialSeedPointMissingLabelsd(keys="label", guidance="guidance", sids="sids"),
            AddGuidanceSignalDeepEditd(keys="image", guidance="guidance", number_intensity_ch=1),
            EnsureTyped(keys=("image", "label")),
        ]

    def train_pre_transforms(self, context: Context) -> Any:
        return self._load(crop=True)

    def val_pre_transforms(self, context: Context) -> Any:
        return self._load(crop=False)

    def train_post_transforms(self, context: Context) -> Any:
        n = len(self.label_names)
        return [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=(n, n)),
        ]

    def val_inferer(self, context: Context) -> Any:
        return SlidingWindowInferer(roi_size=self.roi_size, sw_batch_size=2, overlap=0.25)

    def click_transforms(self, context: Context) -> Any:
        """The transforms that add simulated clicks after each prediction."""
        return [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys="pred", argmax=True),
            ToNumpyd(keys=("image", "label", "pred")),
            FindDiscrepancyRegionsDeepEditd(keys="label", pred="pred", discrepancy="discrepancy"),
            AddRandomGuidanceDeepEditd(keys="NA", guidance="guidance", discrepancy="discrepancy",
                                       probability="probability"),
            AddGuidanceSignalDeepEditd(keys="image", guidance="guidance", number_intensity_ch=1),
            EnsureTyped(keys=("image", "label")),
        ]

    def train_iteration_update(self, context: Context) -> Any:
        return Interaction(deepgrow_probability=self.deepgrow_probability_train,
                           transforms=self.click_transforms(context), train=True, label_names=self.label_names,
                           max_interactions=self.max_interactions)

    def val_iteration_update(self, context: Context) -> Any:
        return Interaction(deepgrow_probability=self.deepgrow_probability_val,
                           transforms=self.click_transforms(context), train=False, label_names=self.label_names,
                           max_interactions=self.max_interactions)
