"""Ready-made training: MONAI Label's ``BasicTrainTask``, its ``Context``, stats handler and metric helpers."""

from monailabel.tasks.train.basic_train import BasicTrainTask
from monailabel.tasks.train.context import Context
from monailabel.tasks.train.handler import PublishStatsAndModel, prepare_stats
from monailabel.tasks.train.utils import region_wise_metrics

__all__ = ["BasicTrainTask", "Context", "PublishStatsAndModel", "prepare_stats", "region_wise_metrics"]
