"""Sample data sets that install offline: synthetic phantoms and slides made on demand, and MNI152."""

from monailabel.datasets.mni152 import load_mni152, mni152_path, write_mni152
from monailabel.datasets.phantoms import make_phantom, write_phantoms
from monailabel.datasets.slides import make_slide, write_slides

__all__ = ["load_mni152", "make_phantom", "make_slide", "mni152_path", "write_mni152", "write_phantoms", "write_slides"]
