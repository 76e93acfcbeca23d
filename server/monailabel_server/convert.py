"""Conversions between protobuf messages and the SDK's plain Python values, in one module."""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
from google.protobuf import json_format, struct_pb2

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.v1 import common_pb2, datastore_pb2

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
    "image_proto",
    "label_proto",
]

DTYPE_BY_ENUM: Dict[int, np.dtype] = {
    common_pb2.DATA_TYPE_UINT8: np.dtype(np.uint8),
    common_pb2.DATA_TYPE_INT8: np.dtype(np.int8),
    common_pb2.DATA_TYPE_UINT16: np.dtype(np.uint16),
    common_pb2.DATA_TYPE_INT16: np.dtype(np.int16),
    common_pb2.DATA_TYPE_UINT32: np.dtype(np.uint32),
    common_pb2.DATA_TYPE_INT32: np.dtype(np.int32),
    common_pb2.DATA_TYPE_INT64: np.dtype(np.int64),
    common_pb2.DATA_TYPE_FLOAT32: np.dtype(np.float32),
    common_pb2.DATA_TYPE_FLOAT64: np.dtype(np.float64),
}
ENUM_BY_DTYPE: Dict[np.dtype, int] = {v: k for k, v in DTYPE_BY_ENUM.items()}

EXTENSION_BY_ENCODING: Dict[int, str] = {
    common_pb2.ENCODING_NIFTI: ".nii",
    common_pb2.ENCODING_NIFTI_GZ: ".nii.gz",
    common_pb2.ENCODING_NRRD: ".nrrd",
    common_pb2.ENCODING_RAW: ".nii",  # raw voxels are stored as NIfTI with the header written first
}


def encoding_of_name(name: str) -> int:
    """Returns the encoding a file name's extension implies.

    Args:
        name: a file name or an extension such as ".nii.gz".

    Returns:
        An ``Encoding`` value; ENCODING_UNSPECIFIED when the extension is unknown.
    """
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return common_pb2.ENCODING_NIFTI_GZ
    if lower.endswith(".nii"):
        return common_pb2.ENCODING_NIFTI
    if lower.endswith(".nrrd"):
        return common_pb2.ENCODING_NRRD
    if lower.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")):
        return common_pb2.ENCODING_IMAGE_2D
    if lower.endswith(".zip"):
        return common_pb2.ENCODING_DICOM_ZIP
    return common_pb2.ENCODING_UNSPECIFIED


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


def from_struct(value: struct_pb2.Struct) -> Dict[str, Any]:
    """Returns a Struct as a dict; whole numbers come back as int (Struct stores every number as double).

    Args:
        value: the Struct.

    Returns:
        The dict.
    """
    return _ints(json_format.MessageToDict(value))


def _ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def geometry_of_affine(affine: np.ndarray) -> common_pb2.Geometry:
    """Splits an affine into spacing, origin and direction.

    Args:
        affine: an (N+1)x(N+1) voxel-to-world matrix.

    Returns:
        The geometry.
    """
    a = np.asarray(affine, dtype=np.float64)
    n = a.shape[0] - 1
    linear = a[:n, :n]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / np.where(spacing == 0, 1.0, spacing)
    return common_pb2.Geometry(
        spacing=spacing.tolist(), origin=a[:n, n].tolist(), direction=direction.reshape(-1).tolist()
    )


def affine_of_geometry(geometry: common_pb2.Geometry, ndim: int) -> np.ndarray:
    """Builds an affine from a geometry; unset parts default to identity, unit spacing, zero origin.

    Args:
        geometry: the geometry.
        ndim: number of spatial axes.

    Returns:
        An (ndim+1)x(ndim+1) affine.

    Raises:
        MONAILabelException: INVALID_INPUT when a field has the wrong length.
    """
    spacing = np.ones(ndim) if not geometry.spacing else np.asarray(geometry.spacing, dtype=np.float64)
    origin = np.zeros(ndim) if not geometry.origin else np.asarray(geometry.origin, dtype=np.float64)
    direction = np.eye(ndim) if not geometry.direction else np.asarray(geometry.direction, dtype=np.float64)
    if spacing.shape != (ndim,) or origin.shape != (ndim,) or direction.size != ndim * ndim:
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT,
            f"geometry must have {ndim} spacing and origin values and {ndim * ndim} direction values",
        )
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, "geometry spacing must be positive")
    affine = np.eye(ndim + 1)
    affine[:ndim, :ndim] = direction.reshape(ndim, ndim) * spacing
    affine[:ndim, ndim] = origin
    return affine


def label_proto(record: Any) -> datastore_pb2.Label:
    """Builds a Label message from a datastore label record.

    Args:
        record: a ``LabelRecord`` of the local datastore.

    Returns:
        The message.
    """
    return datastore_pb2.Label(
        image_id=record.image_id,
        tag=record.tag,
        info=to_struct(record.info),
        size=int(record.size or 0),
        sha256=record.sha256 or "",
        file_extension=record.ext or "",
    )


def image_proto(record: Any, labels: Sequence[Any] = ()) -> datastore_pb2.Image:
    """Builds an Image message from a datastore image record.

    Args:
        record: an ``ImageRecord`` of the local datastore.
        labels: its label records.

    Returns:
        The message.
    """
    return datastore_pb2.Image(
        image_id=record.id,
        info=to_struct(record.info),
        size=int(record.size or 0),
        sha256=record.sha256 or "",
        file_extension=record.ext or "",
        labels=[label_proto(r) for r in labels],
    )
