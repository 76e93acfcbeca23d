"""MONAI Label's ``TaskConfig``: a model's infer task, trainer, strategy and scoring, configured together."""

from __future__ import annotations

import logging
from abc import ABCMeta, abstractmethod
from typing import Any, Dict, Optional, Union

from monailabel.config import settings
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

logger = logging.getLogger(__name__)

__all__ = ["TaskConfig"]


class TaskConfig(metaclass=ABCMeta):
    """Configuration of one model of an app (the radiology/pathology apps' ``lib/configs``).

    Subclasses set ``network``, ``path``, ``labels`` ... in :meth:`init` and build their tasks in
    :meth:`infer` and :meth:`trainer`.
    """

    PRE_TRAINED_PATH = "https://github.com/Project-MONAI/MONAILabel/releases/download/pretrained"
    NGC_PATH = "https://api.ngc.nvidia.com/v2/models/nvidia/med"

    def __init__(self) -> None:
        self.name: Optional[str] = None
        self.model_dir: Optional[str] = None
        self.conf: Optional[Dict[str, str]] = None
        self.planner: Any = None
        self.kwargs: Optional[Dict[str, Any]] = None

        self.network: Any = None
        self.path: Any = None
        self.labels: Any = None
        self.label_colors: Any = None
        self.bundle_path: Optional[str] = None

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs: Any) -> None:
        """Stores the model's name, folder, app config and planner.

        Args:
            name: the model name.
            model_dir: folder of the app's models.
            conf: the app's ``--conf`` values.
            planner: the app's heuristic planner (may be None).
            kwargs: anything else the app passes.
        """
        self.name = name
        self.model_dir = model_dir
        self.conf = conf
        self.planner = planner
        self.kwargs = kwargs

    @abstractmethod
    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        """Returns the model's infer task, or several by name."""

    @abstractmethod
    def trainer(self) -> Optional[TrainTask]:
        """Returns the model's training task, or None."""

    def strategy(self) -> Union[None, Strategy, Dict[str, Strategy]]:
        """Returns the model's active learning strategies, if any."""
        return None

    def scoring_method(self) -> Union[None, ScoringMethod, Dict[str, ScoringMethod]]:
        """Returns the model's scoring methods, if any."""
        return None

    def auth_token(self) -> Optional[str]:
        """Returns the model zoo token (``conf["auth_token"]`` or ``MONAI_ZOO_AUTH_TOKEN``), or None."""
        token = self.conf.get("auth_token", settings.MONAI_ZOO_AUTH_TOKEN) if self.conf else None
        return token if token else None
