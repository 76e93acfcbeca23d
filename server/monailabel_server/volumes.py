"""Medical volume files: headers for raw voxels, checks that a received file is whole and decodable."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional, Tuple, cast

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.transform.writer import fortran_bytes
from monailabel.utils.others import fastgzip
from monailabel_api.v1 import common_pb2
from monailabel_server.convert import DTYPE_BY_ENUM, ENUM_BY_DTYPE, affine_of_geometry, geometry_of_affine
from monailabel_server.file_digests import FILE_DIGESTS
from monailabel_server.validation import check_geometry, check_raw_shape

__all__ = [
    "VolumeInfo",
    "nifti_prefix_for_raw",
    "inspect_volume",
    "spatial_shape",
    "shape_of",
    "content_header_for_file",
    "raw_voxels",
]

_NIFTI_VOX_OFFSET = 352
# ranks a stored volume may have: 2D slices up to 5D NIfTI (vector fields); 1D and 6-7D are refused
_MIN_DIMS, _MAX_DIMS = 2, 5
_MAX_NRRD_HEADER = 64 << 10
_NRRD_ENCODINGS = ("raw", "gzip", "gz", "ascii", "text", "txt")
# the 2D formats accepted (Pillow's names) and the extension each is stored with
_IMAGE_2D_FORMATS = {"PNG": ".png", "TIFF": ".tif", "JPEG": ".jpg"}


@dataclass(frozen=True)
class VolumeInfo:
    """What a volume file holds.

    Attributes:
        shape: array shape.
        dtype: element type.
        affine: voxel-to-world matrix (RAS+), when the format has one.
        ext: the extension the file must be stored with, when its decoded format decides it (2D images).
    """

    shape: Tuple[int, ...]
    dtype: np.dtype
    affine: Optional[np.ndarray]
    ext: str = ""


def _invalid(msg: str) -> MONAILabelException:
    return MONAILabelException(MONAILabelError.INVALID_INPUT, msg)


def nifti_prefix_for_raw(content: common_pb2.ContentHeader, max_bytes: int = 1 << 62) -> bytes:
    """Returns the NIfTI-1 header that turns the raw voxels of a stream into a ``.nii`` file.

    Raw voxels come first axis fastest, which is NIfTI's own layout, so the file is the header
    followed by the stream's bytes: nothing is copied or reordered.

    Args:
        content: a header with ENCODING_RAW, data type, shape and geometry.
        max_bytes: the server's volume limit.

    Returns:
        The 352 header bytes.

    Raises:
        MONAILabelException: INVALID_INPUT when type, shape or geometry is missing or bad, or does not
            match the size; RESOURCE_EXHAUSTED for a shape over the limit.
    """
    dtype = DTYPE_BY_ENUM.get(content.data_type)
    if dtype is None:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, "raw voxels need content.data_type",
                                  field="content.data_type")
    shape = tuple(int(s) for s in content.shape)
    expected = check_raw_shape(shape, dtype.itemsize, max_bytes)
    if expected != content.total_size:
        raise _invalid(
            f"shape {list(shape)} of {dtype.name} is {expected} bytes, but total_size says {content.total_size}"
        )
    spatial = min(len(shape), 3)
    g = content.geometry
    check_geometry(list(g.spacing), list(g.origin), list(g.direction), spatial)
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
    block: bytes = header.binaryblock
    return block + b"\x00" * 4


def _inflated_length(stream: BinaryIO, limit: int) -> int:
    """Inflates a gzip stream block by block (never all in memory) and returns its length.

    Raises:
        MONAILabelException: INVALID_INPUT for corrupt or truncated data, or data that inflates to more
            than ``limit`` bytes (a gzip bomb is stopped as soon as it passes the limit).
    """
    total = 0
    try:
        with fastgzip.GzipFile(stream, mode="rb") as f:
            while block := f.read(8 << 20):
                total += len(block)
                if total > limit:
                    raise _invalid(f"compressed data inflates to more than this server's limit of {limit} bytes")
    except fastgzip.ERRORS as exc:
        raise _invalid(f"corrupt or truncated gzip data: {_reason(exc)}") from exc
    return total


def _reason(exc: BaseException) -> str:
    """An exception's text without any path (decoders name the file they read)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"(?:/[^\s/'\"]+)+", "<file>", text)[:200]


def _check_affine(affine: np.ndarray, what: str) -> None:
    spatial = min(affine.shape[0] - 1, 3)
    if not np.all(np.isfinite(affine)):
        raise _invalid(f"{what} has a voxel-to-world matrix with NaN or infinite values")
    if abs(float(np.linalg.det(affine[:spatial, :spatial]))) < 1e-12:
        raise _invalid(f"{what} has a singular voxel-to-world matrix")


def _check_dims(shape: Tuple[int, ...], itemsize: int, max_bytes: int, what: str) -> int:
    if not _MIN_DIMS <= len(shape) <= _MAX_DIMS or any(s <= 0 for s in shape):
        raise _invalid(f"{what} must have {_MIN_DIMS} to {_MAX_DIMS} positive dimensions, has {list(shape)}")
    nbytes = itemsize * math.prod(shape)
    if nbytes > max_bytes:
        raise MONAILabelException(
            MONAILabelError.RESOURCE_EXHAUSTED,
            f"{what} of shape {list(shape)} is over this server's limit of {max_bytes} bytes",
        )
    return nbytes


def _check_raw_nifti_header(path: Path, encoding: int) -> None:
    """Checks the header bytes as written: nibabel repairs some fields on load (a zero voxel size becomes 1)."""
    import gzip
    import struct

    try:
        with (gzip.open(path, "rb") if encoding == common_pb2.ENCODING_NIFTI_GZ else open(path, "rb")) as f:
            raw = f.read(348)
    except (OSError, EOFError) as exc:
        raise _invalid(f"not a readable NIfTI file: {_reason(exc)}") from exc
    if len(raw) < 348:
        raise _invalid("not a NIfTI file: shorter than its header")
    for order in "<>":
        sizeof_hdr = struct.unpack_from(f"{order}i", raw, 0)[0]
        if sizeof_hdr == 540:
            return  # NIfTI-2: nibabel reads its 64-bit fields as written
        if sizeof_hdr == 348:
            dim = struct.unpack_from(f"{order}8h", raw, 40)
            pixdim = struct.unpack_from(f"{order}8f", raw, 76)
            spatial = pixdim[1 : 1 + min(max(dim[0], 0), 3)]
            if not all(math.isfinite(v) and v > 0 for v in spatial):
                raise _invalid("NIfTI pixdim has NaN, infinite, zero or negative voxel sizes")
            return
    raise _invalid("not a NIfTI file: its sizeof_hdr is neither 348 (NIfTI-1) nor 540 (NIfTI-2)")


def _inspect_nifti(path: Path, encoding: int, max_bytes: int) -> VolumeInfo:
    _check_raw_nifti_header(path, encoding)
    try:
        img: Any = nib.load(str(path))
        header = img.header
        dim0 = int(header["dim"][0])
        shape = tuple(int(s) for s in header["dim"][1 : 1 + dim0]) if 0 <= dim0 <= 7 else ()
        dtype = header.get_data_dtype()
        vox_offset = float(header.get("vox_offset", 0))
        pixdim = np.asarray(header["pixdim"][1 : 1 + min(max(dim0, 0), 3)], dtype=np.float64)
        forms = [np.asarray(header.get_best_affine(), dtype=np.float64)]
        if int(header["sform_code"]) > 0:
            forms.append(np.asarray(header.get_sform(), dtype=np.float64))
        if int(header["qform_code"]) > 0:
            forms.append(np.asarray(header.get_qform(), dtype=np.float64))
    except MONAILabelException:
        raise
    except Exception as exc:  # nibabel raises several types for bad headers
        raise _invalid(f"not a readable NIfTI file: {_reason(exc)}") from exc
    nbytes = _check_dims(shape, dtype.itemsize, max_bytes, "a NIfTI volume")
    # the loaded header has vox_offset reset; the data proxy holds the file's (0 in a .nii: after the header)
    vox_offset = float(getattr(img.dataobj, "offset", vox_offset))
    if not math.isfinite(vox_offset) or vox_offset < 0 or vox_offset > max_bytes:
        raise _invalid(f"NIfTI vox_offset {vox_offset:.0f} is not valid")
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim <= 0):
        raise _invalid("NIfTI pixdim has NaN, infinite, zero or negative voxel sizes")
    for affine in forms:
        _check_affine(affine, "the NIfTI volume")
    needed = int(vox_offset) + nbytes
    if encoding == common_pb2.ENCODING_NIFTI_GZ:
        with open(path, "rb") as raw:
            have = _inflated_length(raw, max(needed, max_bytes))
    else:
        have = path.stat().st_size
    if have < needed:
        raise _invalid(f"truncated NIfTI volume: header needs {needed} bytes, file has {have}")
    return VolumeInfo(shape, dtype, np.asarray(img.affine))


def _nrrd_header_text(path: Path) -> Tuple[str, int]:
    """Returns an NRRD file's header lines and the offset of its data (bounded read)."""
    with open(path, "rb") as f:
        head = f.read(_MAX_NRRD_HEADER)
    if not head.startswith(b"NRRD"):
        raise _invalid("not a readable NRRD file: it does not start with the NRRD magic")
    end = head.find(b"\n\n")
    if end < 0:
        raise _invalid(f"not a readable NRRD file: no end of header in its first {_MAX_NRRD_HEADER} bytes")
    return head[:end].decode("latin-1"), end + 2


def _inspect_nrrd(path: Path, max_bytes: int) -> VolumeInfo:
    import nrrd

    text, data_start = _nrrd_header_text(path)
    fields = {}
    for line in text.splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    if "data file" in fields or "datafile" in fields:
        raise _invalid("NRRD files with detached data ('data file') are not accepted; send the data inline")
    for key in ("space directions", "space origin", "spacings", "thicknesses"):
        value = fields.get(key, "").lower()
        if "nan" in value or "inf" in value:
            raise _invalid(f"NRRD '{key}' has NaN or infinite values")
    encoding = fields.get("encoding", "raw").lower()
    if encoding not in _NRRD_ENCODINGS:
        raise _invalid(f"NRRD encoding {encoding[:20]!r} is not accepted; use raw, gzip or ascii")
    try:
        with open(path, "rb") as f:
            header = nrrd.read_header(f)
        dtype = np.dtype(nrrd.reader._determine_datatype(header))
        shape = tuple(int(s) for s in header["sizes"])
    except MONAILabelException:
        raise
    except Exception as exc:  # pynrrd raises its own and numpy errors
        raise _invalid(f"not a readable NRRD file: {_reason(exc)}") from exc
    nbytes = _check_dims(shape, dtype.itemsize, max_bytes, "an NRRD volume")
    directions = header.get("space directions")
    if directions is not None:
        rows = np.asarray(directions, dtype=np.float64)
        rows = rows[~np.all(np.isnan(rows), axis=1)] if rows.ndim == 2 else rows  # "none" rows: non-spatial axes
        if rows.ndim != 2 or not np.all(np.isfinite(rows)) or (
            rows.shape[0] == rows.shape[1] and abs(float(np.linalg.det(rows))) < 1e-12
        ):
            raise _invalid("NRRD 'space directions' are not finite, independent vectors")
    if encoding in ("gzip", "gz"):
        with open(path, "rb") as f:
            f.seek(data_start)
            _inflated_length(f, max(nbytes, max_bytes))
    try:
        data, _ = nrrd.read(str(path))
    except Exception as exc:  # pynrrd raises its own and numpy errors
        raise _invalid(f"not a readable NRRD file: {_reason(exc)}") from exc
    if tuple(data.shape) != shape:
        raise _invalid(f"NRRD data of shape {list(data.shape)} does not match its header's sizes {list(shape)}")
    return VolumeInfo(shape, data.dtype, None)


def _inspect_image_2d(path: Path, max_bytes: int) -> VolumeInfo:
    from PIL import Image

    try:
        with Image.open(path, formats=list(_IMAGE_2D_FORMATS)) as img:
            fmt = img.format or ""
            width, height = img.size
            bands = len(img.getbands())
            if width <= 0 or height <= 0 or width * height * bands > max_bytes:
                raise MONAILabelException(
                    MONAILabelError.RESOURCE_EXHAUSTED,
                    f"2D image of {width}x{height}x{bands} is over this server's limit of {max_bytes} bytes",
                )
            img.load()  # decodes every pixel: a truncated or corrupt file fails here
    except MONAILabelException:
        raise
    except Image.DecompressionBombError as exc:
        raise MONAILabelException(MONAILabelError.RESOURCE_EXHAUSTED, f"2D image too large: {_reason(exc)}") from exc
    except Exception as exc:  # Pillow raises several types for unreadable files
        raise _invalid(f"not a readable PNG, TIFF or JPEG image: {_reason(exc)}") from exc
    if fmt not in _IMAGE_2D_FORMATS:
        raise _invalid(f"2D images must be PNG, TIFF or JPEG, not {fmt[:20]}")
    return VolumeInfo((width, height), np.dtype(np.uint8), None, _IMAGE_2D_FORMATS[fmt])


def inspect_volume(path: Path, encoding: int, max_bytes: int = 1 << 62) -> VolumeInfo:
    """Checks that a file is a whole, decodable volume of its encoding, before anything is committed.

    NIfTI headers are checked (rank, sizes, offsets, voxel sizes, affines) and compressed data is
    inflated as a stream to check it is whole; NRRD headers are checked and the data decoded; 2D
    images are decoded pixel by pixel. Sizes are checked against ``max_bytes`` before any decoding.

    Args:
        path: the file.
        encoding: its ``Encoding``.
        max_bytes: the server's volume limit (also for decompressed data).

    Returns:
        What it holds.

    Raises:
        MONAILabelException: INVALID_INPUT for a corrupt, truncated or inconsistent file,
            RESOURCE_EXHAUSTED for a volume over the limit, UNIMPLEMENTED for other encodings.
    """
    if encoding in (common_pb2.ENCODING_NIFTI, common_pb2.ENCODING_NIFTI_GZ, common_pb2.ENCODING_RAW):
        return _inspect_nifti(path, encoding, max_bytes)
    if encoding == common_pb2.ENCODING_NRRD:
        return _inspect_nrrd(path, max_bytes)
    if encoding == common_pb2.ENCODING_IMAGE_2D:
        return _inspect_image_2d(path, max_bytes)
    known = encoding in common_pb2.Encoding.values()
    name = common_pb2.Encoding.Name(encoding) if known else str(encoding)  # type: ignore[arg-type]
    raise MONAILabelException(MONAILabelError.UNIMPLEMENTED, f"encoding {name} is not accepted here")


def spatial_shape(path: Path) -> Optional[Tuple[int, ...]]:
    """Returns the spatial shape (at most 3 axes) of a stored volume or 2D image; None when unknown.

    Args:
        path: a stored NIfTI, NRRD or 2D image file (a DICOM series folder gives None).
    """
    if path.is_dir():
        return None
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            image: Any = nib.load(str(path))
            return tuple(int(s) for s in image.header.get_data_shape())[:3]
        if name.endswith(".nrrd"):
            import nrrd

            with open(path, "rb") as f:
                return tuple(int(s) for s in nrrd.read_header(f)["sizes"])[:3]
        if name.endswith(tuple(_IMAGE_2D_FORMATS.values()) + (".tiff", ".jpeg")):
            from PIL import Image

            with Image.open(path) as img:
                return tuple(img.size)
    except Exception:  # a file the datastore holds but this server cannot read: nothing to compare
        return None
    return None


def shape_of(volume: VolumeInfo) -> Tuple[int, ...]:
    """The spatial shape (at most 3 axes) of a received volume, comparable with :func:`spatial_shape`."""
    return tuple(volume.shape[:3])


def content_header_for_file(path: Path, encoding: int, sha256: str = "") -> common_pb2.ContentHeader:
    """Describes a stored file for a download: size, checksums and, for NIfTI, type, shape and geometry.

    Args:
        path: the file.
        encoding: its encoding.
        sha256: its SHA-256, when known (its XXH3-128 is always announced: remembered from its upload,
            or computed now at memory speed).

    Returns:
        The header.
    """
    header = common_pb2.ContentHeader(
        encoding=common_pb2.Encoding.ValueType(encoding), total_size=path.stat().st_size, sha256=sha256,
        file_extension=_extension(path), xxh3_128=FILE_DIGESTS.xxh3_128(path),
    )
    if encoding in (common_pb2.ENCODING_NIFTI, common_pb2.ENCODING_NIFTI_GZ):
        try:
            img = cast(SpatialImage, nib.load(str(path)))  # a NIfTI image
            header.shape.extend(int(s) for s in img.header.get_data_shape())
            header.data_type = common_pb2.DataType.ValueType(
                ENUM_BY_DTYPE.get(img.header.get_data_dtype().newbyteorder("="), 0)
            )
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
    img = cast(SpatialImage, nib.load(str(path)))  # a NIfTI image
    data = np.asanyarray(img.dataobj)
    dtype = data.dtype.newbyteorder("=")
    payload = fortran_bytes(np.asarray(data, dtype=dtype))
    header = common_pb2.ContentHeader(
        encoding=common_pb2.ENCODING_RAW,
        total_size=len(payload),
        data_type=common_pb2.DataType.ValueType(ENUM_BY_DTYPE.get(dtype, 0)),
        shape=[int(s) for s in data.shape],
        geometry=geometry_of_affine(img.affine),
    )
    return header, payload


def _extension(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()
