"""MONAI Label's ``Sum`` scoring: how much each label covers, stored in the label's info."""

from __future__ import annotations

import logging
from typing import Any, Dict, Sequence

import numpy as np

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.scoring import ScoringMethod

logger = logging.getLogger(__name__)

__all__ = ["Sum"]


class Sum(ScoringMethod):
    """Stores, for each label of the given tags, ``sum`` (of its voxel values) and ``slices`` (first-axis
    slices with any foreground) in the label's info.

    Args:
        tags: the label tags to measure.

    Returns of a call: ``{tag: {label_id: {"sum", "slices"}}}``.
    """

    def __init__(self, tags: Sequence[str] = (DefaultLabelTag.FINAL.value, DefaultLabelTag.ORIGINAL.value)) -> None:
        super().__init__("Compute Numpy Sum for Final/Original Labels")
        self.tags = tags

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Dict[str, Dict[str, int]]]:
        from monai.transforms import LoadImage

        loader = LoadImage(image_only=True)
        result: Dict[str, Dict[str, Dict[str, int]]] = {}
        for image_id in datastore.list_images():
            for tag in self.tags:
                label_id = datastore.get_label_by_image_id(image_id, tag)
                if not label_id:
                    continue
                label = np.asarray(loader(datastore.get_label_uri(label_id, tag)))
                slices = int(np.count_nonzero((label > 0).reshape(label.shape[0], -1).any(axis=1)))
                info = {"sum": int(np.sum(label)), "slices": slices}
                logger.debug(f"{label_id} => {info}")
                datastore.update_label_info(label_id, tag, info)
                result.setdefault(tag, {})[label_id] = info
        return result
