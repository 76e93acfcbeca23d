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

    def validate(self, request: Dict[str, Any]) -> None:
        """Checks a request's parameters before the scoring method runs (no-op by default).

        An addition to MONAI Label's interface.

        The server calls it first, so that a bad parameter is answered with INVALID_ARGUMENT naming it,
        instead of failing later.

        Args:
            request: the request dict.

        Raises:
            MONAILabelException: INVALID_INPUT naming the bad parameter.
        """
        return None

    @abstractmethod
    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Any:
        """Scores images, typically storing scores with ``datastore.update_image_info``.

        Args:
            request: the request dict (``method`` and method-specific parameters).
            datastore: the app's datastore.

        Returns:
            The method's result (JSON-able).
        """
