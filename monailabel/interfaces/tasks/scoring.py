"""The scoring method interface of MONAI Label: scores images to help a strategy choose."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore

__all__ = ["ScoringMethod"]


class ScoringMethod(metaclass=ABCMeta):
    """A scoring method.

    Args:
        description: what the method computes.
    """

    def __init__(self, description: str) -> None:
        self.description = description

    def info(self) -> Dict[str, Any]:
        """Returns ``{"description": ...}``."""
        return {"description": self.description}

    @abstractmethod
    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Any:
        """Scores images, typically storing scores with ``datastore.update_image_info``.

        Args:
            request: the request dict (``method`` and method-specific parameters).
            datastore: the app's datastore.

        Returns:
            The method's result (JSON-able).
        """
