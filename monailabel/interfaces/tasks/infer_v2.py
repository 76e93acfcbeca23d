"""The abstract inference task of MONAI Label: what every model an app serves implements."""

from __future__ import annotations

import logging
import os
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    from monailabel.transform.writer import PreparedMask

logger = logging.getLogger(__name__)

__all__ = ["InferOutcome", "InferTask", "InferType", "CancelCheck"]

#: Returns True once the caller is gone and the work should stop.
CancelCheck = Callable[[], bool]


@dataclass
class InferOutcome:
    """What an infer task produced, in memory where it could be.

    Exactly one of ``mask`` and ``file`` is set when the task produced a label; neither when it
    produced only a result dict (classification, detection, polygons returned as JSON).

    Attributes:
        result: the JSON-able result dict (``latencies``, ``label_names`` and the app's own keys).
        mask: the mask in memory, ready to encode (:func:`monailabel.transform.writer.encode_mask`).
        file: a result file the task wrote instead (tasks that override ``__call__`` or ``writer``);
            the caller owns it and removes it.
    """

    result: Dict[str, Any] = field(default_factory=dict)
    mask: Optional[PreparedMask] = None
    file: Optional[str] = None

    @classmethod
    def of_classic(cls, answer: Any) -> InferOutcome:
        """Wraps what MONAI Label's ``InferTask.__call__`` returns: ``(file or array or None, result_json)``.

        Args:
            answer: the pair (a data dict, from ``skip_writer`` tasks, gives an empty outcome).
        """
        if not isinstance(answer, tuple) or len(answer) != 2:
            return cls()
        label, result = answer
        result = dict(result) if isinstance(result, dict) else {}
        if isinstance(label, (str, os.PathLike)):
            return cls(result, file=os.fspath(label))
        if label is not None and hasattr(label, "shape"):
            from monailabel.transform.writer import PreparedMask, smallest_integer_dtype, to_numpy

            array = to_numpy(label)
            dtype = smallest_integer_dtype(array)
            return cls(result, mask=PreparedMask(array.astype(dtype) if dtype else array, None, ".nii.gz"))
        return cls(result)


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

    Attributes:
        type: kind of model.
        labels: label names as declared (a list, or ``{name: value}``); see :meth:`label_map`.
        dimension: spatial dimension of the input: clicks have this many coordinates.
        description: what the model does.
        batchable: False keeps the server from running this task's forward pass in one batch with
            other requests' (dynamic batching; see ``--batch-wait-ms``).
    """

    batchable: bool = True

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

    def label_map(self) -> Dict[str, int]:
        """Returns the labels as ``{name: voxel value}``: a list gives values 1, 2, ... in order."""
        labels = self.labels
        if isinstance(labels, dict):
            return {str(k): int(v) for k, v in labels.items()}
        if isinstance(labels, (list, tuple)):
            return {str(name): i + 1 for i, name in enumerate(labels)}
        if isinstance(labels, str):
            return {labels: 1}
        return {}

    def infer_in_memory(self, request: Dict[str, Any], *, cancel: Optional[CancelCheck] = None) -> InferOutcome:
        """Runs the task and returns the mask in memory where the task allows it.

        This is what the server calls. The default runs MONAI Label's ``__call__`` (so a task that
        overrides it keeps working) and hands its result file on; ``BasicInferTask`` returns the
        mask as an array with its affine, written to no file.

        Args:
            request: the request dict (``image`` and model parameters).
            cancel: returns True once the caller is gone; the task stops early with CANCELLED.
                Classic tasks see it as ``request["cancel_check"]``, as MONAI Label passed it.

        Returns:
            The outcome.
        """
        if cancel is not None:
            request = dict(request, cancel_check=cancel)
        return InferOutcome.of_classic(self(request))

    def unavailable_reason(self) -> Optional[str]:
        """Why the task cannot run here (a missing package, server, bundle or downloaded weights), or None.

        The app lists such tasks as unavailable with this reason (``MONAILabelApp.unavailable_models``)
        and refuses to run them with PRECONDITION_FAILED (gRPC FAILED_PRECONDITION).
        """
        return None

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
