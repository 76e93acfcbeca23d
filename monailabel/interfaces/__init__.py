"""The interfaces an app implements and uses: ``MONAILabelApp``, ``Datastore`` and the exceptions.

Light to import: nothing here pulls in torch or MONAI.
"""

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = ["Datastore", "DefaultLabelTag", "MONAILabelApp", "MONAILabelError", "MONAILabelException"]
