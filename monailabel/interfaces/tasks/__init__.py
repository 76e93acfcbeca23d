"""Task interfaces of MONAI Label: inference, training, active learning strategies and scoring.

``InferTask`` here is the full pre-transforms / inferer / post-transforms task (``BasicInferTask``),
as MONAI Label's documented apps expect. It is imported lazily: it pulls in torch and MONAI, which
importing ``monailabel.interfaces.tasks.strategy`` (say) should not.
"""

from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

__all__ = ["InferTask", "InferType", "ScoringMethod", "Strategy", "TrainTask"]


def __getattr__(name: str) -> Any:
    if name == "InferTask":
        from monailabel.tasks.infer.basic_infer import BasicInferTask

        return BasicInferTask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
