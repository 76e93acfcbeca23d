"""MONAI Label SDK, served over gRPC: apps, tasks, datastores, and the ``monailabel`` command line."""

__version__ = "0.1.0"

__all__ = ["__version__"]
