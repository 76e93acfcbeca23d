"""Multi-process training: two CPU ranks on Gloo, DDP-synchronised, each on its share of the data."""

from __future__ import annotations

import json
import os

import pytest
import torch

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

from .helpers import MemoryDatastore, SegTask, small_unet, write_phantoms

pytestmark = pytest.mark.slow  # trains in several processes


@pytest.mark.timeout(120)
def test_two_gloo_ranks_share_the_data_and_rank_zero_publishes(tmp_path):
    records = write_phantoms(str(tmp_path / "data"), 6)
    published = str(tmp_path / "published.pt")
    task = SegTask(str(tmp_path / "model"), network=small_unet(), publish_path=published)
    events = []
    request = {
        "max_epochs": 2,
        "val_split": 1 / 3,
        "dataset": "Dataset",
        "multi_gpu": True,
        "world_size": 2,
        "progress_callback": events.append,
    }
    stats = task(request, MemoryDatastore(records))

    # both ranks trained: each on half of the 4 training records, 2 iterations per epoch
    assert stats["world_size"] == 2
    assert stats["ranks"] == [
        {"rank": 0, "iterations": 4, "samples": 4, "train_records": 2},
        {"rank": 1, "iterations": 4, "samples": 4, "train_records": 2},
    ]
    assert stats["total_iterations"] == 2 and stats["epoch"] == 2

    # only rank 0 wrote, and what it wrote is what __call__ returned
    with open(tmp_path / "model" / "train_stats.json") as f:
        assert json.load(f) == stats == task.stats()
    assert [h["epoch"] for h in stats["history"]] == [1, 2]
    state = torch.load(published, map_location="cpu", weights_only=True)
    assert set(state) == set(small_unet().state_dict())  # DDP's "module." prefix is not in the checkpoint
    assert os.path.isfile(tmp_path / "model" / "train_01" / "checkpoint_final.pt")

    # rank 0's progress reached this process's callback
    assert [e["iteration"] for e in events if e["type"] == "iteration"] == [1, 2, 3, 4]
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2]


@pytest.mark.timeout(120)
def test_cancel_stops_every_rank(tmp_path):
    records = write_phantoms(str(tmp_path / "data"), 4)
    task = SegTask(str(tmp_path / "model"), network=small_unet())
    events = []
    request = {
        "max_epochs": 500,  # far more than it gets to run
        "val_split": 0.0,
        "dataset": "Dataset",
        "world_size": 2,
        "progress_callback": events.append,
        "cancel_check": lambda: len(events) >= 1,
    }
    with pytest.raises(MONAILabelException) as raised:
        task(request, MemoryDatastore(records))
    assert raised.value.error == MONAILabelError.CANCELLED
    assert task.stats()["cancelled"] is True
    assert task.stats()["epoch"] < 500
    assert {r["iterations"] for r in task.stats()["ranks"]} == {task.stats()["current_iteration"]}
