"""Checks of request parameters shared by the ready-made strategies and scoring methods."""

from __future__ import annotations

from typing import Any, Dict, Optional

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = ["check_int", "check_bool", "check_str"]


def _invalid(msg: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.INVALID_INPUT, msg)


def check_int(request: Dict[str, Any], key: str, minimum: int = 0, maximum: Optional[int] = None) -> None:
    """Raises INVALID_INPUT unless ``request[key]`` (when present) is an integer in ``[minimum, maximum]``."""
    if key not in request:
        return
    value = request[key]
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise _invalid(f"'{key}' must be an integer {bound}; got {value!r}")


def check_bool(request: Dict[str, Any], key: str) -> None:
    """Raises INVALID_INPUT unless ``request[key]`` (when present) is a boolean."""
    if key in request and not isinstance(request[key], bool):
        raise _invalid(f"'{key}' must be true or false; got {request[key]!r}")


def check_str(request: Dict[str, Any], key: str) -> None:
    """Raises INVALID_INPUT unless ``request[key]`` (when present) is a string."""
    if key in request and not isinstance(request[key], str):
        raise _invalid(f"'{key}' must be a string; got {request[key]!r}")
