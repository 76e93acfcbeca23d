"""MONAI Label's documented ``MyTrainTask`` (Modules Overview), unmodified, trains and publishes a model."""

from __future__ import annotations

import json
import os

import pytest
import torch
from monai.apps.deepgrow.transforms import SpatialCropForegroundd
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceLoss
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    ScaleIntensityRanged,
    ToTensord,
)
from monai.utils import set_determinism

from monailabel.utils.train.basic_train import BasicTrainTask, Context

from .helpers import MemoryDatastore, small_unet, write_phantoms


# ---- the class exactly as MONAI Label's documentation gives it -----------------------------------
class MyTrainTask(BasicTrainTask):
    def loss_function(self, context: Context):
        return DiceLoss(sigmoid=True, squared_pred=True)

    def train_pre_transforms(self, context: Context):
        return Compose(
            [
                LoadImaged(keys=("image", "label")),
                EnsureChannelFirstd(keys=("image", "label")),
                SpatialCropForegroundd(keys=("image", "label"), source_key="label", spatial_size=(128, 128, 128)),
                NormalizeIntensityd(keys="image"),
            ]
        )

    def train_post_transforms(self, context: Context):
        return Compose(
            [
                Activationsd(keys="pred", sigmoid=True),
                AsDiscreted(keys="pred", threshold=0.5),
            ]
        )

    def val_pre_transforms(self, context: Context):
        return Compose(
            [
                LoadImaged(keys=("image", "label")),
                EnsureChannelFirstd(keys=("image", "label")),
                ScaleIntensityRanged(keys="image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
                CropForegroundd(keys=("image", "label"), source_key="image"),
                ToTensord(keys=("image", "label")),
            ]
        )

    def val_inferer(self):
        return SlidingWindowInferer(roi_size=(128, 128, 128))


# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow  # trains the documented task
def test_documented_train_task_trains_checkpoints_publishes_and_writes_stats(tmp_path):
    set_determinism(seed=0)
    records = write_phantoms(str(tmp_path / "data"), 4)
    model_dir = str(tmp_path / "model")
    final_model = str(tmp_path / "model" / "segmentation.pt")
    network = small_unet()

    # as MyApp.init_trainers() builds it in the documentation
    task = MyTrainTask(model_dir, network, load_path=None, publish_path=final_model)
    stats = task({"max_epochs": 2, "val_split": 0.25}, MemoryDatastore(records))

    run_dir = os.path.join(model_dir, "train_01")
    assert os.path.isfile(os.path.join(run_dir, "model.pt"))  # best key metric checkpoint
    assert os.path.isfile(os.path.join(run_dir, "checkpoint_final.pt"))
    assert os.path.isfile(final_model)

    # one object saved: ignite stores its state dict as is (MONAI Label's infer reads both layouts)
    published = torch.load(final_model, map_location="cpu", weights_only=True)
    assert set(published) == set(network.state_dict())
    best = torch.load(os.path.join(run_dir, "model.pt"), map_location="cpu", weights_only=True)
    assert all(torch.equal(best[k], published[k]) for k in best)
    # the task trained a copy: the network object the app holds is untouched
    assert any(not torch.equal(v, network.state_dict()[k]) for k, v in best.items())

    with open(os.path.join(model_dir, "train_stats.json")) as f:
        written = json.load(f)
    assert written == stats == task.stats()
    assert written["epoch"] == 2 and written["total_epochs"] == 2
    assert [h["epoch"] for h in written["history"]] == [1, 2]
    assert all("val_mean_dice" in h["eval"] and "train_dice" in h["train"] for h in written["history"])
    assert isinstance(written["best_metric"], float) and 0.0 <= written["best_metric"] <= 1.0
    assert written["best_metric_epoch"] in (1, 2)
    assert written["eval"]["key_metric_name"] == "val_mean_dice"
    assert "total_time" in written and written["start_ts"] > 0
    assert task.info()["config"]["max_epochs"] == 50  # the default config is untouched by the request
