"""Shared pieces of the training tests: synthetic phantoms, an in-memory datastore, small tasks."""

from __future__ import annotations

import os
from typing import Any, Dict, List

import nibabel as nib
import numpy as np
import torch
from monai.inferers import SimpleInferer
from monai.losses import DiceLoss
from monai.networks.nets import UNet
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
)

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import BasicTrainTask, Context


def write_phantoms(folder: str, count: int, size: int = 32, seed: int = 0, noise: float = 30.0) -> List[Dict[str, str]]:
    """Writes ``count`` ellipsoids in noise (CT-like intensities) with binary labels as NIfTI; returns records."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1).astype(np.float32)
    records = []
    for i in range(count):
        center = rng.uniform(size * 0.35, size * 0.65, 3)
        radii = rng.uniform(size * 0.15, size * 0.3, 3)
        label = (((grid - center) / radii) ** 2).sum(-1) <= 1.0
        image = np.where(label, 100.0, 0.0) + rng.normal(0.0, noise, label.shape)
        image_path = os.path.join(folder, f"img_{i}.nii.gz")
        label_path = os.path.join(folder, f"lbl_{i}.nii.gz")
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), image_path)
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), label_path)
        records.append({"image": image_path, "label": label_path})
    return records


def _not_needed(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("not used by training")


# every abstract method of Datastore but ``datalist`` is irrelevant to training
MemoryDatastore: Any = type(
    "MemoryDatastore",
    (Datastore,),
    {
        **{name: _not_needed for name in Datastore.__abstractmethods__},
        "__init__": lambda self, records: setattr(self, "records", list(records)),
        "datalist": lambda self: list(self.records),
    },
)


def small_unet(channels: tuple = (4, 8, 16), seed: int = 0) -> torch.nn.Module:
    """A tiny 3D UNet, 1 channel in and out, with seeded weights."""
    torch.manual_seed(seed)
    return UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=channels, strides=(2, 2), num_res_units=1)


class SegTask(BasicTrainTask):
    """Binary segmentation of the phantoms: Dice loss, whole 32^3 volumes, a fast learning rate."""

    def __init__(self, model_dir: str, lr: float = 1e-2, **kwargs: Any) -> None:
        super().__init__(model_dir, amp=False, **kwargs)
        self.lr = lr

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        return torch.optim.Adam(context.network.parameters(), lr=self.lr)

    def loss_function(self, context: Context) -> Any:
        return DiceLoss(sigmoid=True)

    def train_pre_transforms(self, context: Context) -> Any:
        return [
            LoadImaged(keys=("image", "label")),
            EnsureChannelFirstd(keys=("image", "label")),
            NormalizeIntensityd(keys="image"),
        ]

    def train_post_transforms(self, context: Context) -> Any:
        return [Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)]

    def val_inferer(self, context: Context) -> Any:
        return SimpleInferer()
