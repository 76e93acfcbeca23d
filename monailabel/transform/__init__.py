"""Transforms and writers of MONAI Label (``monailabel.transform.post``, ``monailabel.transform.writer``).

The submodules import MONAI; this package itself stays light.
"""

__all__ = ["post", "writer"]
