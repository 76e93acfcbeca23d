"""MONAI Label's ``Dice`` scoring: agreement between the submitted (final) and predicted (original) labels."""

from __future__ import annotations

import logging
from typing import Any, Dict

import numpy as np

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.tasks._checks import check_str

logger = logging.getLogger(__name__)

__all__ = ["Dice"]


class Dice(ScoringMethod):
    """Computes, for each image with both labels, the Dice of their foregrounds; stored as image info ``dice``.

    Request keys (each optional): ``y`` (the reference tag, ``final``) and ``y_pred`` (``original``).
    Two empty labels agree fully (Dice 1).
    """

    def __init__(self) -> None:
        super().__init__("Compute Dice for predicated label vs submitted")

    def validate(self, request: Dict[str, Any]) -> None:
        """Checks that ``y`` and ``y_pred`` are tag names."""
        check_str(request, "y")
        check_str(request, "y_pred")

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, float]:
        from monai.transforms import LoadImage

        self.validate(request)
        loader = LoadImage(image_only=True)
        tag_y = str(request.get("y", DefaultLabelTag.FINAL.value))
        tag_y_pred = str(request.get("y_pred", DefaultLabelTag.ORIGINAL.value))

        result: Dict[str, float] = {}
        for image_id in datastore.list_images():
            y_id = datastore.get_label_by_image_id(image_id, tag_y) if tag_y else None
            y_pred_id = datastore.get_label_by_image_id(image_id, tag_y_pred) if tag_y_pred else None
            if not y_id or not y_pred_id:
                continue
            y = np.asarray(loader(datastore.get_label_uri(y_id, tag_y))).ravel() > 0
            y_pred = np.asarray(loader(datastore.get_label_uri(y_pred_id, tag_y_pred))).ravel() > 0
            union = int(y.sum()) + int(y_pred.sum())
            dice = 2.0 * float(np.logical_and(y, y_pred).sum()) / union if union else 1.0
            logger.info(f"Dice Score for {image_id} is {dice}")
            datastore.update_image_info(image_id, {"dice": dice})
            result[image_id] = dice
        return result
