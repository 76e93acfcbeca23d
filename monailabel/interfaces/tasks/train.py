"""The training task interface of MONAI Label."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore

__all__ = ["TrainTask"]


class TrainTask(metaclass=ABCMeta):
    """A training task.

    Args:
        description: what the task trains.
    """

    def __init__(self, description: str) -> None:
        self.description = description
        self._config: Dict[str, Any] = {}

    def info(self) -> Dict[str, Any]:
        """Returns ``{"description": ..., "config": ...}``."""
        return {"description": self.description, "config": self.config()}

    def config(self) -> Dict[str, Any]:
        """Returns the task's user-visible config (parameters a request may override)."""
        return self._config

    def stats(self) -> Dict[str, Any]:
        """Returns statistics of the last training run (empty when none)."""
        return {}

    @abstractmethod
    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Any:
        """Trains.

        Args:
            request: the request dict (``model`` and training parameters).
            datastore: the app's datastore, source of the labeled data.

        Returns:
            Training statistics (JSON-able).
        """
