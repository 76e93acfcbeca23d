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

    def validate(self, request: Dict[str, Any]) -> None:
        """Checks a request's parameters before the strategy runs (no-op by default).

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
    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Union[None, str, Dict[str, Any]]:
        """Selects the next image.

        Args:
            request: the request dict (``strategy`` and strategy-specific parameters).
            datastore: the app's datastore.

        Returns:
            The image id, ``{"id": image_id, ...}``, or None when there is nothing to label.
        """
