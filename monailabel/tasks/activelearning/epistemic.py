"""MONAI Label's ``Epistemic`` strategy: the most uncertain unlabeled image, per a scoring method's score."""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Tuple

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)

__all__ = ["Epistemic"]


class Epistemic(Strategy):
    """Picks among the ``k`` unlabeled images of highest score the one this strategy served longest ago.

    The score is the image info key ``key`` (``epistemic_entropy``, which
    :class:`~monailabel.tasks.scoring.epistemic_v2.EpistemicScoring` stores); images without it score 0.
    Time since an image was last served counts up to ``reset`` seconds, after which a served image is as
    fresh as one never served; among equally fresh images the higher score wins. With ``k`` 0 every
    unlabeled image is a candidate.

    Args:
        k: how many top-scored images to choose among (0: all).
        reset: seconds after which a served image counts as never served (a day by default).
        key: the image info key of the score.
        desc: the description.
    """

    SECS_IN_DAY = 24 * 60 * 60

    def __init__(
        self,
        k: int = 0,
        reset: int = SECS_IN_DAY,
        key: str = "epistemic_entropy",
        desc: str = "Get First Sample Based on Epistemic score",
    ) -> None:
        self.k = k
        self.reset = reset
        self.key = key
        super().__init__(desc)

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Optional[Dict[str, Any]]:
        images = datastore.get_unlabeled_images()
        if not images:
            return None
        strategy = request.get("strategy", "epistemic")
        now = int(time.time())
        scored: List[Tuple[str, float, int]] = []
        for image in images:
            info = datastore.get_image_info(image) or {}
            score = info.get(self.key, 0)
            score = float(score) if isinstance(score, (int, float)) else 0.0
            served = int((info.get("strategy") or {}).get(strategy, {}).get("ts", 0))
            scored.append((image, score, min(now - served, self.reset)))

        scored.sort(key=lambda item: item[1], reverse=True)
        top = scored[: self.k] if 0 < self.k < len(scored) else scored
        # least recently served first; equally fresh images by score (the sort above is stable)
        best = max(range(len(top)), key=lambda i: (top[i][2], top[i][1], -i))
        image, score, _ = top[best]
        logger.info(f"{strategy}: Selected Image: {image}; {self.key}: {score}")
        return {"id": image, self.key: score}
