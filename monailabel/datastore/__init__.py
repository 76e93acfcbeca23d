"""Datastores: where images and their labels live.

:class:`LocalDatastore` keeps MONAI Label's folder layout (images in the studies folder, labels in
``labels/<tag>/``) and indexes it in SQLite, with crash-safe writes.
"""

from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.records import ImageRecord, LabelRecord

__all__ = ["ImageRecord", "LabelRecord", "LocalDatastore"]
