"""Stats/publish handler, region-wise metrics, the documented import path and checkpoint loading."""

from __future__ import annotations

import json
import os

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import MeanDice

import monailabel.tasks.train as train_pkg
import monailabel.utils.train as utils_train_pkg
from monailabel.tasks.train.handler import PublishStatsAndModel, atomic_copy, prepare_stats
from monailabel.tasks.train.utils import from_engine_idx, region_wise_metrics

from .helpers import MemoryDatastore, SegTask, small_unet, write_phantoms


def test_public_surface():
    assert train_pkg.__all__ == [
        "BasicTrainTask",
        "Context",
        "PublishStatsAndModel",
        "prepare_stats",
        "region_wise_metrics",
    ]
    assert utils_train_pkg.__all__ == ["BasicTrainTask", "Context"]
    from monailabel.utils.train.basic_train import BasicTrainTask, Context

    assert BasicTrainTask is train_pkg.BasicTrainTask and Context is train_pkg.Context


def test_region_wise_metrics_names_and_values():
    metrics = region_wise_metrics(["liver", "spleen"], "train_dice", "train")
    assert list(metrics) == ["train_dice", "train_liver_dice", "train_spleen_dice"]
    assert all(isinstance(m, MeanDice) for m in metrics.values())
    assert list(region_wise_metrics({"tumor": 2}, "val_mean_dice", "val")) == ["val_mean_dice", "val_tumor_dice"]
    assert list(region_wise_metrics(None, "val_mean_dice", "val")) == ["val_mean_dice"]

    # one-hot, 3 channels: liver (1) predicted perfectly, spleen (2) half right
    label = torch.zeros(3, 4, 4)
    label[1, :2], label[2, 2:], label[0] = 1, 1, 0
    pred = label.clone()
    pred[2, 3:] = 0
    engine = Engine(lambda e, b: b)
    for name, metric in metrics.items():
        metric.attach(engine, name)
    state = engine.run([[{"pred": pred, "label": label}]], max_epochs=1)
    assert state.metrics["train_liver_dice"] == pytest.approx(1.0)
    assert state.metrics["train_spleen_dice"] == pytest.approx(2 * 4 / (4 + 8))
    assert state.metrics["train_dice"] == pytest.approx((1.0 + 2 / 3) / 2)

    picked = from_engine_idx(["pred", "label"], 2)([{"pred": pred, "label": label}])
    assert picked[0][0].shape == (1, 4, 4) and torch.equal(picked[1][0][0], label[2])


def test_publisher_writes_stats_and_publishes_atomically_only_on_change(tmp_path):
    trainer = Engine(lambda e, b: None)
    trainer.run([0], max_epochs=1)
    trainer.state.metrics = {"train_dice": torch.tensor(0.5)}
    trainer.state.best_metric, trainer.state.best_metric_epoch = float("nan"), 1
    out = tmp_path / "run"
    out.mkdir()
    publish = tmp_path / "published" / "model.pt"
    publisher = PublishStatsAndModel(
        str(tmp_path / "s.json"), str(publish), "model.pt", 0, "r1", str(out), trainer, None
    )

    assert publisher.iteration_completed()["history"] == [{"epoch": 1, "train": {"train_dice": 0.5}}]
    assert not publish.exists()  # nothing to publish yet
    stats = json.loads((tmp_path / "s.json").read_text())  # strict JSON: NaN is written as null
    assert stats["best_metric"] is None and stats == json.loads((out / "stats_r1.json").read_text())

    (out / "model.pt").write_bytes(b"weights-1")
    publisher.iteration_completed()
    assert publish.read_bytes() == b"weights-1"
    inode = os.stat(publish).st_ino
    publisher.iteration_completed()  # unchanged: not copied again
    assert os.stat(publish).st_ino == inode
    (out / "model.pt").write_bytes(b"weights-2")
    publisher.iteration_completed()
    assert publish.read_bytes() == b"weights-2" and os.stat(publish).st_ino != inode  # replaced, not rewritten
    assert not [p for p in os.listdir(publish.parent) if p.endswith(".tmp")]

    assert prepare_stats(0, trainer, None)["train"]["metrics"] == {"train_dice": 0.5}
    with pytest.raises(FileNotFoundError):
        atomic_copy(str(tmp_path / "missing.pt"), str(tmp_path / "dst.pt"))
    assert not os.path.exists(tmp_path / "dst.pt") and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_load_path_initialises_the_network(tmp_path):
    records = write_phantoms(str(tmp_path / "data"), 2, size=16)
    pretrained = small_unet(seed=7)
    torch.save(pretrained.state_dict(), tmp_path / "pretrained.pt")

    # lr 0: the final checkpoint holds exactly what was loaded, not the seed-0 network given here
    task = SegTask(
        str(tmp_path / "model"), lr=0.0, network=small_unet(seed=0), load_path=str(tmp_path / "pretrained.pt")
    )
    task({"max_epochs": 1, "val_split": 0.0, "dataset": "Dataset"}, MemoryDatastore(records))
    final = torch.load(tmp_path / "model" / "train_01" / "checkpoint_final.pt", weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in pretrained.state_dict().items())

    # pretrained=False ignores load_path
    task(
        {"max_epochs": 1, "val_split": 0.0, "dataset": "Dataset", "pretrained": False, "name": "fresh"},
        MemoryDatastore(records),
    )
    fresh = torch.load(tmp_path / "model" / "fresh" / "checkpoint_final.pt", weights_only=True)
    assert all(torch.equal(fresh[k], v) for k, v in small_unet(seed=0).state_dict().items())
