"""Ready-made active learning strategies: ``Random``, ``First`` and ``Epistemic``."""

from monailabel.tasks.activelearning.epistemic import Epistemic
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

__all__ = ["Epistemic", "First", "Random"]
