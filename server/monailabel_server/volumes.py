"""Medical volume files: headers for raw voxels, checks that a received file is whole and decodable."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import nibabel as nib
import numpy as np

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.v1 import common_pb2
from monailabel_server.convert import DTYPE_BY_ENUM, ENUM_BY_DTYPE, affine_of_geometry, geometry_of_affine

__all__ = ["VolumeInfo", "nifti_prefix_for_raw", "inspect_volume", "content_header_for_file", "raw_voxels"]

_NIFTI_VOX_OFFSET = 352


@dataclass(frozen=True)
class VolumeInfo:
    """What a volume file holds.

    Attributes:
        shape: array shape.
        dtype: element type.
        affine: voxel-to-world matrix (RAS+), when the format has one.
    """

    shape: Tuple[int, ...]
    dtype: np.dtype
    affine: Optional[np.ndarray]


def _invalid(msg: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.INVALID_INPUT, msg)


def nifti_prefix_for_raw(content: common_pb2.ContentHeader) -> bytes:
    """Returns the NIfTI-1 header that turns the raw voxels of a stream into a ``.nii`` file.

    Raw voxels come first axis fastest, which is NIfTI's own layout, so the file is the header
    followed by the stream's bytes: nothing is copied or reordered.

    Args:
        content: a header with ENCODING_RAW, data type, shape and geometry.

    Returns:
        The 352 header bytes.

    Raises:
        MONAILabelException: INVALID_INPUT when type or shape is missing, or does not match the size.
    """
    dtype = DTYPE_BY_ENUM.get(content.data_type)
    if dtype is None:
        raise _invalid("raw voxels need content.data_type")
    shape = tuple(int(s) for s in content.shape)
    if not 2 <= len(shape) <= 4 or any(s <= 0 for s in shape):
        raise _invalid(f"raw voxels need a shape of 2 to 4 positive sizes, got {list(shape)}")
    expected = int(np.prod(shape)) * dtype.itemsize
    if expected != content.total_size:
        raise _invalid(
            f"shape {list(shape)} of {dtype.name} is {expected} bytes, but total_size says {content.total_size}"
        )
    spatial = min(len(shape), 3)
    affine3 = affine_of_geometry(content.geometry, spatial)
    affine = np.eye(4)
    affine[:spatial, :spatial] = affine3[:spatial, :spatial]
    affine[:spatial, 3] = affine3[:spatial, spatial]
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header["vox_offset"] = _NIFTI_VOX_OFFSET
    return header.binaryblock + b"\x00" * 4


def _gzip_length(path: Path) -> int:
    """Decompresses a whole gzip file and returns its length; a truncated or corrupt file raises."""
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(8 << 20):
                total += len(block)
    except (OSError, EOFError, zlib.error) as exc:
        raise _invalid(f"corrupt or truncated gzip data: {exc}") from exc
    return total


def inspect_volume(path: Path, encoding: int) -> VolumeInfo:
    """Checks that a file is a whole, decodable volume of its encoding, reading headers and sizes only.

    Args:
        path: the file.
        encoding: its ``Encoding``.

    Returns:
        What it holds.

    Raises:
        MONAILabelException: INVALID_INPUT for a corrupt or truncated file.
    """
    if encoding in (common_pb2.ENCODING_NIFTI, common_pb2.ENCODING_NIFTI_GZ, common_pb2.ENCODING_RAW):
        try:
            img = nib.load(str(path))
        except Exception as exc:  # nibabel raises several types for bad headers
            raise _invalid(f"not a readable NIfTI file: {exc}") from exc
        header = img.header
        shape = tuple(int(s) for s in header.get_data_shape())
        dtype = header.get_data_dtype()
        needed = int(header.get("vox_offset", 0)) + int(np.prod(shape)) * dtype.itemsize
        have = _gzip_length(path) if encoding == common_pb2.ENCODING_NIFTI_GZ else path.stat().st_size
        if have < needed:
            raise _invalid(f"truncated NIfTI volume: header needs {needed} bytes, file has {have}")
        return VolumeInfo(shape, dtype, np.asarray(img.affine))
    if encoding == common_pb2.ENCODING_NRRD:
        import nrrd

        try:
            data, header = nrrd.read(str(path))
        except Exception as exc:  # pynrrd raises its own and numpy errors
            raise _invalid(f"not a readable NRRD file: {exc}") from exc
        return VolumeInfo(tuple(data.shape), data.dtype, None)
    if encoding == common_pb2.ENCODING_IMAGE_2D:
        if path.stat().st_size == 0:
            raise _invalid("empty image file")
        return VolumeInfo((), np.dtype(np.uint8), None)
    raise MONAILabelException(
        MONAILabelError.UNIMPLEMENTED, f"encoding {common_pb2.Encoding.Name(encoding)} is not accepted here"
    )


def content_header_for_file(path: Path, encoding: int, sha256: str = "") -> common_pb2.ContentHeader:
    """Describes a stored file for a download: size, checksum and, for NIfTI, type, shape and geometry.

    Args:
        path: the file.
        encoding: its encoding.
        sha256: its checksum, when known.

    Returns:
        The header.
    """
    header = common_pb2.ContentHeader(
        encoding=encoding, total_size=path.stat().st_size, sha256=sha256, file_extension=_extension(path)
    )
    if encoding in (common_pb2.ENCODING_NIFTI, common_pb2.ENCODING_NIFTI_GZ):
        try:
            img = nib.load(str(path))
            header.shape.extend(int(s) for s in img.header.get_data_shape())
            header.data_type = ENUM_BY_DTYPE.get(img.header.get_data_dtype().newbyteorder("="), 0)
            header.geometry.CopyFrom(geometry_of_affine(img.affine))
        except Exception:  # a description only; the bytes are still sent
            pass
    return header


def raw_voxels(path: Path) -> Tuple[common_pb2.ContentHeader, bytes]:
    """Reads a mask file as raw voxels (first axis fastest) with its geometry.

    Args:
        path: a NIfTI file.

    Returns:
        The header (ENCODING_RAW) and the bytes.
    """
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    dtype = data.dtype.newbyteorder("=")
    payload = np.asarray(data, dtype=dtype).tobytes(order="F")
    header = common_pb2.ContentHeader(
        encoding=common_pb2.ENCODING_RAW,
        total_size=len(payload),
        data_type=ENUM_BY_DTYPE.get(dtype, 0),
        shape=[int(s) for s in data.shape],
        geometry=geometry_of_affine(img.affine),
    )
    return header, payload


def _extension(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()
