"""Sample data sets that install offline: synthetic phantoms made on demand."""

from monailabel.datasets.phantoms import make_phantom, write_phantoms

__all__ = ["make_phantom", "write_phantoms"]
