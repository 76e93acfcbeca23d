"""Request options: every dataset and loader kind trains; early stopping ends a run that stops improving."""

from __future__ import annotations

import os

import pytest

from .helpers import MemoryDatastore, SegTask, small_unet, write_phantoms

pytestmark = pytest.mark.slow  # trains a model per dataset and loader kind


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_phantoms(str(tmp_path_factory.mktemp("data")), 4, size=16)


@pytest.mark.parametrize(
    "dataset, dataloader",
    [
        ("Dataset", "DataLoader"),
        ("CacheDataset", "ThreadDataLoader"),
        ("PersistentDataset", "DataLoader"),
        ("SmartCacheDataset", "ThreadDataLoader"),
    ],
)
def test_dataset_and_dataloader_kinds(tmp_path, records, dataset, dataloader):
    task = SegTask(str(tmp_path), network=small_unet(channels=(2, 4, 8)))
    request = {"max_epochs": 2, "val_split": 0.5, "dataset": dataset, "dataloader": dataloader, "train_batch_size": 2}
    stats = task(request, MemoryDatastore(records))
    assert stats["epoch"] == 2 and stats["total_iterations"] == 1  # 2 records, batches of 2
    assert [h["epoch"] for h in stats["history"]] == [1, 2]
    assert not [p for p in os.listdir(tmp_path / "train_01") if p.startswith("cache_")]  # cache removed


def test_explicit_train_and_val_lists(tmp_path, records):
    task = SegTask(str(tmp_path), network=small_unet(channels=(2, 4, 8)))
    request = {"max_epochs": 1, "train_ds": records[:3], "val_ds": records[3:], "dataset": "Dataset"}
    stats = task(request, MemoryDatastore([]))  # the datastore is not asked
    assert stats["total_iterations"] == 3 and "val_mean_dice" in stats["eval"]["metrics"]


def test_early_stop_patience(tmp_path, records):
    # lr 0: the validation metric never improves after the first epoch
    task = SegTask(str(tmp_path), lr=0.0, network=small_unet(channels=(2, 4, 8)))
    request = {"max_epochs": 10, "val_split": 0.5, "dataset": "Dataset", "early_stop_patience": 2}
    stats = task(request, MemoryDatastore(records))
    assert stats["epoch"] == 3 and stats["best_metric_epoch"] == 1
    assert "current_time" in stats  # stopped before max_epochs
