"""Where MONAI Label's documentation imports training from: ``monailabel.utils.train.basic_train``."""

from monailabel.tasks.train.basic_train import BasicTrainTask, Context

__all__ = ["BasicTrainTask", "Context"]
