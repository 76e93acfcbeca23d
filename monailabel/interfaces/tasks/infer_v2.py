"""The abstract inference task of MONAI Label: what every model an app serves implements."""

from __future__ import annotations

import logging
from abc import ABCMeta, abstractmethod
from enum import Enum
from typing import Any, Dict, Optional, Sequence, Tuple, Union

logger = logging.getLogger(__name__)

__all__ = ["InferTask", "InferType"]


class InferType(str, Enum):
    """Type of an inference model.

    Attributes:
        SEGMENTATION: segmentation model.
        ANNOTATION: annotation model.
        CLASSIFICATION: classification model.
        DEEPGROW: Deepgrow interactive model.
        EPISTEMIC: epistemic uncertainty (scoring) model.
        SCRIBBLES: scribbles model.
        DEEPEDIT: DeepEdit interactive model.
        DETECTION: detection model.
        OTHERS: any other kind.
    """

    SEGMENTATION = "segmentation"
    ANNOTATION = "annotation"
    CLASSIFICATION = "classification"
    DEEPGROW = "deepgrow"
    EPISTEMIC = "epistemic"
    SCRIBBLES = "scribbles"
    DEEPEDIT = "deepedit"
    DETECTION = "detection"
    OTHERS = "others"


class InferTask(metaclass=ABCMeta):
    """An inference task: takes a request dict, returns a label and a result dict.

    Args:
        type: kind of model (segmentation, deepgrow ...).
        labels: label names (a name, a list of names, or ``{name: value}``).
        dimension: spatial dimension of the input (2 or 3).
        description: what the model does.
        config: user-visible config (key/value pairs a client may override per request).
    """

    def __init__(
        self,
        type: Union[str, InferType],
        labels: Union[str, None, Sequence[str], Dict[Any, Any]],
        dimension: int,
        description: str,
        config: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.type = type
        self.labels = [] if labels is None else [labels] if isinstance(labels, str) else labels
        self.dimension = dimension
        self.description = description

        self._config: Dict[str, Any] = {}
        if config:
            self._config.update(config)

    def info(self) -> Dict[str, Any]:
        """Returns what a client needs to know: type, labels, dimension, description, config."""
        return {
            "type": self.type,
            "labels": self.labels,
            "dimension": self.dimension,
            "description": self.description,
            "config": self.config(),
        }

    def config(self) -> Dict[str, Any]:
        """Returns the task's user-visible config."""
        return self._config

    def get_path(self) -> Optional[str]:
        """Returns the model file the task uses, if any."""
        return None

    @abstractmethod
    def is_valid(self) -> bool:
        """Whether the task can run (its model exists)."""

    @abstractmethod
    def __call__(self, request: Dict[str, Any]) -> Union[Dict[str, Any], Tuple[Any, Dict[str, Any]]]:
        """Runs the task.

        Args:
            request: the request dict (``image`` and model-specific parameters).

        Returns:
            ``(label, result_json)``: the label as a file path (or array), and a JSON-able dict.
        """
