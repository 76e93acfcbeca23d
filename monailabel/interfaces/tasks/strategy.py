"""The active learning strategy interface of MONAI Label: picks the next image to label."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, Dict, Union

from monailabel.interfaces.datastore import Datastore

__all__ = ["Strategy"]


class Strategy(metaclass=ABCMeta):
    """An active learning strategy.

    Args:
        description: what the strategy does.
    """

    def __init__(self, description: str) -> None:
        self.description = description

    def info(self) -> Dict[str, Any]:
        """Returns ``{"description": ...}``."""
        return {"description": self.description}

    @abstractmethod
    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Union[None, str, Dict[str, Any]]:
        """Selects the next image.

        Args:
            request: the request dict (``strategy`` and strategy-specific parameters).
            datastore: the app's datastore.

        Returns:
            The image id, ``{"id": image_id, ...}``, or None when there is nothing to label.
        """
