"""Whether the SAM2 task module can be used."""

from __future__ import annotations

__all__ = ["is_sam2_module_available"]


def is_sam2_module_available() -> bool:
    """True: :class:`monailabel.sam2.infer.Sam2InferTask` can always be built.

    MONAI Label answers whether the ``sam2`` package imports, and apps leave SAM2 out otherwise. Here
    the tasks are always built and, when they cannot run (no ``sam2`` package, no weights), say so
    themselves: the app lists them as unavailable with the reason and calls fail with
    FAILED_PRECONDITION, instead of the models silently missing. ``--conf sam2 false`` leaves them out.
    """
    return True
