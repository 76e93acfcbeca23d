"""Experiment tracking handlers (MLflow), added only when asked for and installed."""

from __future__ import annotations

import logging
from typing import Any, List

from monai.handlers import from_engine
from monai.utils import optional_import

from monailabel.tasks.train.context import Context

__all__ = ["resolve_tracking", "tracking_handlers"]

logger = logging.getLogger(__name__)


def resolve_tracking(context: Context, tracking: Any, uri: Any, experiment: Any) -> None:
    """Fills the context's tracking fields; tracking stays off unless ``mlflow`` is asked for and installed.

    Args:
        context: the run's context (``run_id`` and ``request`` set).
        tracking: ``"mlflow"`` or ``None``/``"none"``.
        uri: the tracking URI.
        experiment: the experiment name (default: the request's ``name``).
    """
    name = str(tracking).strip().lower() if tracking else ""
    context.tracking = name if name and name != "none" else None
    context.tracking_uri = str(uri) if uri else None
    context.tracking_experiment_name = str(experiment) if experiment else str(context.request.get("name", "train"))
    context.tracking_run_name = f"run_{context.run_id}"
    context.enable_tracking = False
    if context.tracking == "mlflow":
        if optional_import("mlflow")[1]:
            context.enable_tracking = True
        else:
            logger.warning("Tracking with mlflow was asked for but mlflow is not installed; tracking is off")
    elif context.tracking:
        logger.warning(f"Unknown tracking backend '{context.tracking}'; tracking is off")


def tracking_handlers(context: Context, stage: str) -> List[Any]:
    """Returns the tracking handlers for the trainer (``stage="train"``) or evaluator (``"eval"``).

    Args:
        context: the run's context.
        stage: ``train`` or ``eval``.
    """
    if not context.enable_tracking or context.local_rank != 0:
        return []
    from monai.handlers import MLFlowHandler

    common = {
        "tracking_uri": context.tracking_uri,
        "experiment_name": context.tracking_experiment_name,
        "run_name": context.tracking_run_name,
    }
    if stage == "train":
        return [
            MLFlowHandler(
                iteration_log=True,
                epoch_log=True,
                tag_name="train_loss",
                output_transform=from_engine(["loss"], first=True),
                close_on_complete=True,
                **common,
            )
        ]
    return [MLFlowHandler(iteration_log=False, **common)]
