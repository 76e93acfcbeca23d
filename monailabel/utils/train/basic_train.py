"""Alias of :mod:`monailabel.tasks.train.basic_train`, the path MONAI Label's documentation uses."""

from monailabel.tasks.train.basic_train import BasicTrainTask, Context

__all__ = ["BasicTrainTask", "Context"]
