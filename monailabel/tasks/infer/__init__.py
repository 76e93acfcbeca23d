"""Ready-made inference tasks; :class:`BasicInferTask` runs pre-transforms, a network and post-transforms."""

from monailabel.tasks.infer.basic_infer import BasicInferTask, CallBackTypes

__all__ = ["BasicInferTask", "CallBackTypes"]
