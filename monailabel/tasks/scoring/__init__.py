"""Ready-made scoring methods, at MONAI Label's import paths.

``monailabel.tasks.scoring.epistemic_v2.EpistemicScoring`` (Monte Carlo dropout through an infer task),
``monailabel.tasks.scoring.epistemic.EpistemicScoring`` (the older one, with its own network and
transforms), ``monailabel.tasks.scoring.dice.Dice`` and ``monailabel.tasks.scoring.sum.Sum``. Import them
from their modules: this package imports nothing heavy by itself.
"""

__all__: list = []
