"""``Sam2InferTask``: MONAI Label's SAM2 model, served here as an unavailable task that says why.

SAM2 needs the ``sam2`` package, its checkpoint and its Hydra config (``sam2.1_hiera_large.pt`` and
``sam2.1_hiera_l.yaml`` in the app's model folder), downloaded by MONAI Label from the internet. This
SDK downloads nothing and does not run SAM2: the task is listed with the reason, and calling it
fails with PRECONDITION_FAILED (gRPC FAILED_PRECONDITION).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Dict, Optional, Tuple, Union

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.utils.others.generic import device_list

__all__ = ["Sam2InferTask"]

CHECKPOINT = "sam2.1_hiera_large.pt"
CONFIG = "sam2.1_hiera_l.yaml"


class Sam2InferTask(InferTask):
    """SAM2 (Segment Anything Model 2), 2D or 3D (propagated through slices).

    Args:
        model_dir: the app's model folder (where the checkpoint and config would be).
        type: the task type (DEEPGROW for click-driven use).
        dimension: 2 or 3.
        labels: label names.
        additional_info: extra info returned with results (kept for compatibility).
        image_loader: loader transform (kept for compatibility).
        post_trans: post transforms (kept for compatibility).
        writer: result writer (kept for compatibility).
        config: more user-visible config.
    """

    def __init__(
        self,
        model_dir: str,
        type: Union[str, InferType] = InferType.ANNOTATION,
        dimension: int = 2,
        labels: Any = None,
        additional_info: Any = None,
        image_loader: Any = None,
        post_trans: Any = None,
        writer: Any = None,
        config: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(
            type=type,
            labels=labels,
            dimension=dimension,
            description="SAM2 (Segment Anything Model)",
            config={"device": device_list(), "reset_state": False, "largest_cc": False, "pylab": False},
        )
        if config:
            self._config.update(config)
        self.additional_info = additional_info
        self.image_loader = image_loader
        self.post_trans = post_trans
        self.writer = writer
        self.path = os.path.join(model_dir, CHECKPOINT)
        self.config_path = os.path.join(model_dir, CONFIG)

    def unavailable_reason(self) -> Optional[str]:
        """Always a reason: what is missing, or that this SDK does not run SAM2."""
        if importlib.util.find_spec("sam2") is None:
            return "SAM2 needs the 'sam2' package, which is not installed"
        missing = [os.path.basename(p) for p in (self.path, self.config_path) if not os.path.exists(p)]
        if missing:
            return f"SAM2 weights are missing: put {' and '.join(missing)} in the app's model folder"
        return "running SAM2 is not supported by this SDK"

    def is_valid(self) -> bool:
        """False: the task cannot run here (see :meth:`unavailable_reason`)."""
        return False

    def __call__(self, request: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
        raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED,
                                  f"model is unavailable: {self.unavailable_reason()}", reason="MODEL_UNAVAILABLE")
