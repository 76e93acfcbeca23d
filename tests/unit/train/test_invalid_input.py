"""Bad requests and missing data fail early with typed errors, before any training starts."""

from __future__ import annotations

import pytest

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

from .helpers import MemoryDatastore, SegTask, small_unet, write_phantoms


@pytest.fixture(scope="module")
def datastore(tmp_path_factory):
    return MemoryDatastore(write_phantoms(str(tmp_path_factory.mktemp("data")), 2, size=16))


def _error(task, request, datastore):
    with pytest.raises(MONAILabelException) as raised:
        task(request, datastore)
    return raised.value


def test_no_labeled_data_is_a_failed_precondition(tmp_path):
    task = SegTask(str(tmp_path), network=small_unet())
    error = _error(task, {"max_epochs": 1}, MemoryDatastore([]))
    assert error.error == MONAILabelError.PRECONDITION_FAILED
    assert "No labeled data" in error.msg and "final label" in error.msg
    assert not (tmp_path / "train_stats.json").exists()


@pytest.mark.parametrize("max_epochs", [-1, 0, "abc", 1.5, None, True, [2]])
def test_invalid_max_epochs(tmp_path, datastore, max_epochs):
    error = _error(SegTask(str(tmp_path), network=small_unet()), {"max_epochs": max_epochs}, datastore)
    assert error.error == MONAILabelError.INVALID_INPUT
    assert "'max_epochs' must be an integer >= 1" in error.msg


@pytest.mark.parametrize(
    "request_, key",
    [
        ({"val_split": 1.0}, "val_split"),
        ({"val_split": "half"}, "val_split"),
        ({"train_batch_size": 0}, "train_batch_size"),
        ({"dataset": "HugeDataset"}, "dataset"),
        ({"dataloader": "FastLoader"}, "dataloader"),
        ({"multi_gpu": "maybe"}, "multi_gpu"),
        ({"gpus": "0,x"}, "gpus"),
        ({"world_size": 0}, "world_size"),
        ({"name": "../escape"}, "name"),
        ({"device": "tpu:9"}, "device"),
        ({"train_ds": ["a.nii"]}, "train_ds"),
        ({"progress_callback": "not callable"}, "progress_callback"),
        ({"cancel_check": 1}, "cancel_check"),
    ],
)
def test_invalid_request_keys(tmp_path, datastore, request_, key):
    error = _error(SegTask(str(tmp_path), network=small_unet()), {"max_epochs": 1, **request_}, datastore)
    assert error.error == MONAILabelError.INVALID_INPUT
    assert f"'{key}'" in error.msg


def test_numeric_strings_are_accepted(tmp_path, datastore):
    task = SegTask(str(tmp_path), network=small_unet(channels=(2, 4, 8)))
    stats = task({"max_epochs": "1", "val_split": "0", "multi_gpu": "false", "dataset": "Dataset"}, datastore)
    assert stats["epoch"] == 1 and stats["total_epochs"] == 1


def test_task_without_network_says_how_to_give_one(tmp_path, datastore):
    error = _error(SegTask(str(tmp_path)), {"max_epochs": 1}, datastore)
    assert error.error == MONAILabelError.APP_ERROR
    assert "network=" in error.msg
