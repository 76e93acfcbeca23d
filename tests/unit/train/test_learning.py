"""Training actually learns: validation Dice on 3D phantoms rises well above the first epoch's."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.utils import set_determinism

from .helpers import MemoryDatastore, SegTask, small_unet, write_phantoms

pytestmark = pytest.mark.slow  # trains a model for ten epochs


def _dice(pred: np.ndarray, label: np.ndarray) -> float:
    return float(2.0 * (pred & label).sum() / (pred.sum() + label.sum()))


def test_validation_dice_improves_and_published_model_segments(tmp_path):
    set_determinism(seed=0)
    records = write_phantoms(str(tmp_path / "data"), 6, seed=1)
    published = str(tmp_path / "published" / "model.pt")
    task = SegTask(str(tmp_path / "model"), network=small_unet(channels=(8, 16, 32)), publish_path=published)

    stats = task({"max_epochs": 10, "val_split": 1 / 3, "dataset": "CacheDataset"}, MemoryDatastore(records))

    dice = [h["eval"]["val_mean_dice"] for h in stats["history"]]
    assert len(dice) == 10
    assert dice[-1] > dice[0] + 0.3, dice  # about 0.12 -> 0.63
    assert stats["best_metric"] == max(dice) and stats["best_metric"] > 0.5, dice
    assert stats["best_metric_epoch"] == 1 + dice.index(max(dice))

    # the published model is the best one, and it segments a validation phantom on its own
    network = small_unet(channels=(8, 16, 32), seed=123)
    network.load_state_dict(torch.load(published, map_location="cpu", weights_only=True))
    network.eval()
    val = records[-1]  # partition_dataset without shuffling puts the last records in validation
    image = nib.load(val["image"]).get_fdata().astype(np.float32)
    label = nib.load(val["label"]).get_fdata() > 0
    image = (image - image.mean()) / image.std()
    with torch.no_grad():
        pred = torch.sigmoid(network(torch.from_numpy(image)[None, None]))[0, 0].numpy() > 0.5
    assert _dice(pred, label) > 0.5
