"""Ready-made tasks: inference (``monailabel.tasks.infer``), training, active learning and scoring."""

__all__: list = []
