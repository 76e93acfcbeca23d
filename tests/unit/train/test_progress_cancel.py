"""Progress events reach the caller's callback; ``cancel_check`` stops a run with CANCELLED."""

from __future__ import annotations

import json
import os

import pytest
from monai.utils import set_determinism

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

from .helpers import MemoryDatastore, SegTask, small_unet, write_phantoms

pytestmark = pytest.mark.slow  # trains models for several epochs


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_phantoms(str(tmp_path_factory.mktemp("data")), 4)


def test_progress_events_per_iteration_and_epoch(tmp_path, records):
    set_determinism(seed=0)
    events = []
    task = SegTask(str(tmp_path), network=small_unet())
    request = {"max_epochs": 2, "val_split": 0.25, "dataset": "Dataset", "progress_callback": events.append}
    stats = task(request, MemoryDatastore(records))

    iterations = [e for e in events if e["type"] == "iteration"]
    epochs = [e for e in events if e["type"] == "epoch"]
    assert len(events) == len(iterations) + len(epochs)
    assert [(e["epoch"], e["iteration"], e["epoch_iteration"]) for e in iterations] == [
        (1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 4, 1), (2, 5, 2), (2, 6, 3)
    ]  # fmt: skip
    assert all(e["epoch_length"] == 3 and e["max_epochs"] == 2 for e in iterations)
    assert all(isinstance(e["loss"], float) and 0.0 <= e["loss"] <= 1.0 for e in iterations)

    assert [e["epoch"] for e in epochs] == [1, 2]
    assert events.index(epochs[0]) == 3  # after the epoch's iterations (and its validation)
    assert all(set(e["train_metrics"]) == {"train_dice"} for e in epochs)
    assert all(set(e["val_metrics"]) == {"val_mean_dice"} for e in epochs)
    assert epochs[-1]["best_metric"] == stats["best_metric"]
    assert epochs[-1]["best_metric_epoch"] == stats["best_metric_epoch"]
    assert epochs[-1]["val_metrics"]["val_mean_dice"] == stats["eval"]["metrics"]["val_mean_dice"]
    json.dumps(events)  # plain JSON: a job runner can forward them as they are


def test_failing_progress_callback_does_not_stop_training(tmp_path, records):
    calls = []

    def broken(event):
        calls.append(event)
        raise RuntimeError("listener bug")

    task = SegTask(str(tmp_path), network=small_unet())
    request = {"max_epochs": 1, "val_split": 0.0, "dataset": "Dataset", "progress_callback": [broken, calls.append]}
    stats = task(request, MemoryDatastore(records))
    assert stats["epoch"] == 1
    assert len(calls) == 2 * 5  # 4 iterations + 1 epoch event, each seen by both listeners


def test_cancel_check_stops_training_and_raises_cancelled(tmp_path, records):
    events = []
    task = SegTask(str(tmp_path), network=small_unet(), publish_path=str(tmp_path / "published.pt"))

    def cancel_after_two_iterations():
        return sum(e["type"] == "iteration" for e in events) >= 2

    request = {
        "max_epochs": 5,
        "val_split": 0.25,
        "progress_callback": events.append,
        "cancel_check": cancel_after_two_iterations,
    }
    with pytest.raises(MONAILabelException) as raised:
        task(request, MemoryDatastore(records))

    assert raised.value.error == MONAILabelError.CANCELLED
    assert "epoch 1, iteration 2" in raised.value.msg
    assert [e["type"] for e in events] == ["iteration", "iteration"]  # no epoch completed
    assert not os.path.exists(tmp_path / "published.pt")  # nothing validated, nothing published
    stats = task.stats()
    assert stats["cancelled"] is True and stats["epoch"] == 1 and stats["current_iteration"] == 2
    run_dir = tmp_path / "train_01"
    assert not [p for p in os.listdir(run_dir) if p.startswith("cache_")]  # cleaned up


def test_cancel_during_validation(tmp_path, records):
    events = []
    asked = []

    def cancel_at_first_validation_iteration():
        asked.append(1)  # asked after each iteration: 2 training ones, then the first validation one
        return len(asked) >= 3

    task = SegTask(str(tmp_path), network=small_unet())
    request = {
        "max_epochs": 3,
        "val_split": 0.5,
        "dataset": "Dataset",
        "progress_callback": events.append,
        "cancel_check": cancel_at_first_validation_iteration,
    }
    with pytest.raises(MONAILabelException) as raised:
        task(request, MemoryDatastore(records))

    assert raised.value.error == MONAILabelError.CANCELLED
    assert "epoch 1, iteration 2" in raised.value.msg
    assert len(asked) == 3
    assert [e["type"] for e in events] == ["iteration", "iteration"]
    assert not os.path.exists(tmp_path / "train_01" / "model.pt")  # the validation never finished
