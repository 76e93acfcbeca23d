"""Ready-made active learning strategies: ``Random`` and ``First``."""

from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

__all__ = ["First", "Random"]
