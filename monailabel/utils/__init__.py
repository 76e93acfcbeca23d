"""Helpers that MONAI Label apps import from ``monailabel.utils``."""

__all__: list = []
