"""MONAI Label's default strategy: a random unlabeled image, favouring those not served for a while."""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Dict, Optional

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)

__all__ = ["Random"]


class Random(Strategy):
    """Picks an unlabeled image at random, weighted by the time since this strategy last served it.

    ``MONAILabelApp.next_sample`` records ``{"strategy": {name: {"ts": ...}}}`` in the image info of
    each image it serves, so images just handed to one annotator are unlikely to go to the next.
    """

    def __init__(self) -> None:
        super().__init__("Random Strategy")

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Optional[str]:
        images = datastore.get_unlabeled_images()
        if not len(images):
            return None

        strategy = request.get("strategy", "random")
        current_ts = int(time.time())
        weights = []
        for image in images:
            info = (datastore.get_image_info(image) or {}).get("strategy", {}).get(strategy, {})
            # +1 so an image served this very second still has a (small) chance
            weights.append(max(current_ts - int(info.get("ts", 0)), 0) + 1)

        image = random.choices(images, weights=weights)[0]
        logger.info(f"Random: Selected Image: {image}")
        return image
