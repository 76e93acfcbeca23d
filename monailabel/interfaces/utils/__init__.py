"""Helpers for running transform chains the way MONAI Label's tasks do."""

from monailabel.interfaces.utils.transform import dump_data, run_transforms, shape_info

__all__ = ["dump_data", "run_transforms", "shape_info"]
