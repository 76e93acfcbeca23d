"""A strategy that picks the first unlabeled image by id: deterministic, for tests and demos."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)

__all__ = ["First"]


class First(Strategy):
    """Picks the unlabeled image with the smallest id."""

    def __init__(self) -> None:
        super().__init__("Get First Sample")

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Optional[Dict[str, Any]]:
        images = sorted(datastore.get_unlabeled_images())
        if not images:
            return None
        logger.info(f"First: Selected Image: {images[0]}")
        return {"id": images[0]}
