"""Conversions between protobuf messages and the SDK's plain Python values, in one module.

Array and geometry conversions shared with the client live in ``monailabel_api.wire``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

import numpy as np
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api import wire
from monailabel_api.v1 import common_pb2, job_pb2
from monailabel_api.wire import DTYPE_BY_ENUM, ENUM_BY_DTYPE, encoding_of_name, geometry_of_affine

__all__ = [
    "DTYPE_BY_ENUM",
    "ENUM_BY_DTYPE",
    "EXTENSION_BY_ENCODING",
    "encoding_of_name",
    "to_struct",
    "from_struct",
    "jsonable",
    "geometry_of_affine",
    "affine_of_geometry",
    "JOB_STATES",
    "timestamp_of",
]

EXTENSION_BY_ENCODING: Dict[int, str] = {
    common_pb2.ENCODING_NIFTI: ".nii",
    common_pb2.ENCODING_NIFTI_GZ: ".nii.gz",
    common_pb2.ENCODING_NRRD: ".nrrd",
    common_pb2.ENCODING_RAW: ".nii",  # raw voxels are stored as NIfTI with the header written first
}


def jsonable(value: Any) -> Any:
    """Turns a result dict of an app into plain JSON values (numpy and torch values included).

    Args:
        value: any value an infer task or datastore returned.

    Returns:
        The value built of dict, list, str, float, int, bool and None only.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if hasattr(value, "tolist"):  # torch tensors
        return jsonable(value.tolist())
    if hasattr(value, "value") and isinstance(value.value, (str, int)):  # enums
        return value.value
    return str(value)


def to_struct(value: Optional[Mapping[str, Any]]) -> struct_pb2.Struct:
    """Builds a ``google.protobuf.Struct`` from a dict.

    Args:
        value: a dict; None gives an empty Struct.

    Returns:
        The Struct.
    """
    s = struct_pb2.Struct()
    if value:
        s.update(jsonable(value))
    return s


def from_struct(value: struct_pb2.Struct, field: str = "") -> Dict[str, Any]:
    """Returns a Struct as a dict; whole numbers come back as int (Struct stores every number as double).

    Args:
        value: the Struct.
        field: its field in the request, for the message when it holds NaN or infinity.

    Returns:
        The dict.

    Raises:
        MONAILabelException: INVALID_INPUT for NaN or infinite numbers, which JSON (and so every
            stored info and app request) cannot hold.
    """
    try:
        values: Dict[str, Any] = _ints(json_format.MessageToDict(value))
    except ValueError as exc:
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT, f"{field or 'a Struct'} holds NaN or infinity: numbers must be finite",
            field=field or None) from exc
    return values


def _ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def affine_of_geometry(geometry: common_pb2.Geometry, ndim: int) -> np.ndarray:
    """Builds an affine from a request's geometry (see ``monailabel_api.wire.affine_of_geometry``).

    Raises:
        MONAILabelException: INVALID_INPUT when a field has the wrong length or a spacing is not positive.
    """
    try:
        return wire.affine_of_geometry(geometry, ndim)
    except ValueError as exc:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, str(exc)) from exc


JOB_STATES: Dict[str, job_pb2.JobState.ValueType] = {
    "QUEUED": job_pb2.JOB_STATE_QUEUED,
    "RUNNING": job_pb2.JOB_STATE_RUNNING,
    "SUCCEEDED": job_pb2.JOB_STATE_SUCCEEDED,
    "FAILED": job_pb2.JOB_STATE_FAILED,
    "CANCELLED": job_pb2.JOB_STATE_CANCELLED,
}


def timestamp_of(seconds: Optional[float]) -> Optional[timestamp_pb2.Timestamp]:
    """Returns a Timestamp of epoch seconds, or None when unset."""
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts
