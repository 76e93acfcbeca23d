"""Writers that turn an inference result into a label file and a result dict, as MONAI Label's do.

Differences from MONAI Label, on purpose: no ITK dependency (NIfTI via nibabel, NRRD via pynrrd, PNG
written directly); a mask with integer values and no requested dtype is written with the smallest
integer dtype that holds it (uint8 for labels 0..255), never as float32; ``.nii.gz`` is compressed at
gzip level 1, which is several times faster than the default and nearly as small for masks; and the
affine falls back to the input image's geometry, so the label lines up with the image even when the
post-transforms dropped the metadata (e.g. ``ToNumpyd``).
"""

from __future__ import annotations

import contextlib
import io
import json as jsonlib
import logging
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.utils.others import fastgzip
from monailabel.utils.others.generic import file_ext

logger = logging.getLogger(__name__)

__all__ = [
    "ClassificationWriter",
    "PolygonWriter",
    "PreparedMask",
    "Writer",
    "encode_mask",
    "smallest_integer_dtype",
    "to_numpy",
    "write_mask",
]

#: A destination: a file path, or a binary file object (an in-memory buffer).
Target = Union[str, IO[bytes]]


@contextlib.contextmanager
def _opened(target: Target) -> Iterator[IO[bytes]]:
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as f:
            yield f
    else:
        yield target

_VOLUME_EXTS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS (MONAI, NIfTI) <-> LPS (NRRD, DICOM, ITK)


def to_numpy(x: Any) -> np.ndarray:
    """Returns a tensor, MetaTensor or array-like as a numpy array (on the CPU, detached)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.numpy()
    return np.asarray(x)


def smallest_integer_dtype(arr: np.ndarray) -> Optional[np.dtype]:
    """Returns the smallest integer dtype that holds every value of ``arr``, or None if some are not integers.

    Unsigned types are preferred when no value is negative. Floats qualify when all values are whole.

    Args:
        arr: the array.
    """
    return _smallest_integer(arr)[0]


def _smallest_integer(arr: np.ndarray) -> Tuple[Optional[np.dtype], Optional[np.ndarray]]:
    """:func:`smallest_integer_dtype`, with the array already cast to it when the cast was done on the way.

    A float mask (MONAI's ``AsDiscreted`` leaves one) is checked in two multi-threaded torch passes,
    range (``aminmax``) and wholeness (cast, then compare), instead of numpy's five single-threaded
    ones (``isfinite``, ``mod``, ``==``, ``min``, ``max``); the cast is kept, so the caller does not
    cast again.
    """
    if arr.dtype == bool or arr.size == 0:
        return np.dtype(np.uint8), None
    if np.issubdtype(arr.dtype, np.floating):
        return _smallest_integer_of_float(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        return None, None
    lo, hi = _min_max(arr)
    return _fitting(lo, hi), None


def _min_max(arr: np.ndarray) -> Tuple[Any, Any]:
    try:
        import torch

        lo, hi = torch.aminmax(torch.from_numpy(np.ascontiguousarray(arr)))
        return lo.item(), hi.item()
    except (TypeError, RuntimeError):  # a dtype torch does not take (uint32, uint64)
        return arr.min(), arr.max()


def _fitting(lo: Any, hi: Any) -> Optional[np.dtype]:
    candidates = (np.uint8, np.uint16, np.uint32, np.uint64) if lo >= 0 else (np.int8, np.int16, np.int32, np.int64)
    for dt in candidates:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return None


_TORCH_INT = {np.dtype(np.uint8): "uint8", np.dtype(np.int8): "int8", np.dtype(np.int16): "int16",
              np.dtype(np.int32): "int32", np.dtype(np.int64): "int64"}


def _smallest_integer_of_float(arr: np.ndarray) -> Tuple[Optional[np.dtype], Optional[np.ndarray]]:
    if arr.dtype not in (np.float32, np.float64):
        if not np.all(np.isfinite(arr)) or not np.all(np.mod(arr, 1) == 0):
            return None, None
        return _fitting(arr.min(), arr.max()), None
    import torch

    t = torch.from_numpy(np.ascontiguousarray(arr))
    lo_t, hi_t = torch.aminmax(t)
    lo, hi = lo_t.item(), hi_t.item()
    if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN or an infinity anywhere shows in the extremes
        return None, None
    dtype = _fitting(lo, hi)
    name = _TORCH_INT.get(dtype) if dtype is not None else None
    if name is None:  # uint16/uint32/uint64: torch's casts do not cover them everywhere
        if not np.all(np.mod(arr, 1) == 0):
            return None, None
        return dtype, None
    cast = t.to(getattr(torch, name))
    if not bool(torch.eq(cast, t).all()):  # compared in the float type: a fraction differs from its cast
        return None, None
    out = cast.numpy()
    return dtype, out.reshape(arr.shape)


def _affine_or_none(value: Any) -> Optional[np.ndarray]:
    if value is None:
        return None
    a = to_numpy(value).astype(np.float64)
    return a if a.ndim == 2 and a.shape[0] == a.shape[1] else None


# the tiles a 3D transpose copies: 8 (x) by all of y by 32 (z). Measured here against 32x32 tiles:
# a 256x256x128 uint8 mask 5.7 ms instead of 16 ms, int16 8.5 instead of 19.5, float32 15 instead of
# 22; 512x512x256 uint8 82 ms instead of 137.
_TILE_X, _TILE_Z = 8, 32


def _fortran_order(arr: np.ndarray) -> np.ndarray:
    """Returns ``arr`` laid out first axis fastest (NIfTI's order).

    A 3D volume is transposed tile by tile (a tile's rows stay in cache on both sides), two to six
    times faster than one whole-array transpose by numpy or torch, which for small elements
    (uint8 masks) miss the cache on nearly every write.
    """
    if arr.flags.f_contiguous:
        return arr
    if arr.ndim == 3:
        nx, ny, nz = arr.shape
        out = np.empty((nz, ny, nx), dtype=arr.dtype)
        tx, tz = _TILE_X, _TILE_Z
        for x0 in range(0, nx, tx):
            for z0 in range(0, nz, tz):
                out[z0 : z0 + tz, :, x0 : x0 + tx] = arr[x0 : x0 + tx, :, z0 : z0 + tz].transpose(2, 1, 0)
        return out.T
    try:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.permute(*reversed(range(arr.ndim))).contiguous().numpy().T
    except (TypeError, RuntimeError):  # a dtype torch does not take
        return np.asfortranarray(arr)


def fortran_bytes(arr: np.ndarray) -> bytes:
    """The voxels as bytes, first axis fastest (NIfTI's and raw transfers' order), transposed by tiles."""
    return _fortran_order(np.asarray(arr)).tobytes(order="F")


def write_nifti(
    path: Target, arr: np.ndarray, affine: Optional[np.ndarray], compress_level: int = 1, gz: Optional[bool] = None
) -> None:
    """Writes a NIfTI file (gzip-compressed when ``path`` ends with ``.gz``, or when ``gz`` says so).

    Args:
        path: destination: a file name, or a binary file object.
        arr: the voxels, spatial axes first (x, y, z[, channel]).
        affine: voxel-to-world (RAS) matrix; identity when None.
        compress_level: gzip level for ``.nii.gz``.
        gz: gzip-compress; None decides from the file name (a file object is written uncompressed).
    """
    import nibabel as nib

    aff = np.eye(4)
    if affine is not None:
        aff[: affine.shape[0] - 1, : affine.shape[1] - 1] = affine[:-1, :-1]
        aff[: affine.shape[0] - 1, 3] = affine[:-1, -1]
    # NIfTI stores the first axis fastest: hand nibabel a Fortran-ordered array, which it writes
    # with plain copies (a C-ordered one it transposes slice by slice, several times slower).
    farr = _fortran_order(arr)
    img = nib.Nifti1Image(farr, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units("mm")
    if gz is None:
        gz = isinstance(path, str) and path.lower().endswith(".gz")
    with _opened(path) as target:
        out: Any = target
        if gz:
            # ISA-L's gzip when installed: ordinary gzip, several times faster than zlib's
            with fastgzip.GzipFile(out, mode="wb", compresslevel=compress_level, mtime=0) as f:
                _write_nifti_image(img, farr, f)
        else:
            _write_nifti_image(img, farr, out)


# element types written as they are, with no scaling: the header, its padding, then the voxels
_PLAIN_NIFTI_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
                                                      np.float32, np.float64))


def _write_nifti_image(img: Any, farr: np.ndarray, f: IO[bytes]) -> None:
    """Writes a NIfTI-1 single file: the header nibabel built, then the voxels in one write.

    nibabel's own writer scans the data for scaling and writes it slab by slab; for the types masks
    come in no scaling applies, so the Fortran-ordered voxels go out as one buffer (no copy: the
    transpose of a Fortran-ordered array is C-contiguous).
    """
    import nibabel as nib

    dtype = farr.dtype
    if dtype not in _PLAIN_NIFTI_DTYPES or not farr.flags.f_contiguous or dtype.byteorder == ">":
        holder: Any = f
        img.to_file_map({"image": nib.FileHolder(fileobj=holder), "header": nib.FileHolder(fileobj=holder)})
        return
    header = img.header
    header.set_data_dtype(dtype)
    header.set_data_shape(farr.shape)
    header.set_slope_inter(None, None)
    header["vox_offset"] = 352
    f.write(header.binaryblock)
    f.write(b"\x00" * (352 - len(header.binaryblock)))
    f.write(farr.T.data.cast("B"))


def write_nrrd(
    path: Target,
    arr: np.ndarray,
    affine: Optional[np.ndarray],
    compress: bool = False,
    labels: Optional[Sequence[str]] = None,
) -> None:
    """Writes an NRRD file with its geometry in LPS space, as 3D Slicer expects.

    Args:
        path: destination: a file name, or a binary file object.
        arr: the voxels, spatial axes first (x, y, z), or channel first (c, x, y, z).
        affine: voxel-to-world (RAS) matrix; no geometry is written when None.
        compress: gzip encoding instead of raw.
        labels: segment names for a ``.seg.nrrd`` header.
    """
    import nrrd

    header: Dict[str, Any] = {"encoding": "gzip" if compress else "raw"}
    spatial = arr.ndim if arr.ndim <= 3 else 3
    if affine is not None and affine.shape[0] == spatial + 1:
        a = affine
        if spatial == 3:
            a = _LPS @ affine
            header["space"] = "left-posterior-superior"
        else:
            header["space dimension"] = spatial
        directions = [a[:spatial, i] for i in range(spatial)]
        kinds = ["domain"] * spatial
        if arr.ndim > spatial:
            directions = [np.full(spatial, np.nan)] + directions
            kinds = ["list"] + kinds
        header["space directions"] = np.array(directions)
        header["space origin"] = a[:spatial, spatial]
        header["kinds"] = kinds
    for i, name in enumerate(labels or []):
        header[f"Segment{i}_ID"] = str(name)
        header[f"Segment{i}_Name"] = str(name)
        header[f"Segment{i}_LabelValue"] = str(i + 1)
    nrrd.write(path, arr, header=header, index_order="F")


def write_png(path: Target, arr: np.ndarray) -> None:
    """Writes a 2D image as PNG (grey, or RGB/RGBA when channel first with 3/4 channels), no Pillow needed.

    MONAI's arrays are indexed (x, y) (as its PIL reader loads them), so rows of the file are ``y``.

    Args:
        path: destination: a file name, or a binary file object.
        arr: uint8 or uint16 array, (x, y) or (c, x, y).

    Raises:
        MONAILabelException: INVALID_INPUT for shapes or dtypes PNG cannot hold.
    """
    if arr.ndim == 3 and arr.shape[0] in (3, 4):
        img, color_type = np.moveaxis(arr, 0, -1).transpose(1, 0, 2), 2 if arr.shape[0] == 3 else 6
    elif arr.ndim == 2:
        img, color_type = arr.T, 0
    else:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"cannot write shape {arr.shape} as PNG")
    if img.dtype == np.uint8:
        depth, raw = 8, np.ascontiguousarray(img)
    elif img.dtype == np.uint16:
        depth, raw = 16, np.ascontiguousarray(img.astype(">u2")).view(np.uint8)
    else:
        raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"cannot write dtype {img.dtype} as PNG")
    h, w = img.shape[0], img.shape[1]
    rows = np.zeros((h, 1 + raw.reshape(h, -1).shape[1]), dtype=np.uint8)  # filter byte 0 per row
    rows[:, 1:] = raw.reshape(h, -1)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    with _opened(path) as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)))
        f.write(chunk(b"IEND", b""))


@dataclass
class PreparedMask:
    """A mask ready to be encoded: what :class:`Writer` would write, held in memory.

    Attributes:
        array: the voxels in their output dtype, spatial axes first ((x, y, z) or (x, y)), or channel
            first ((c, x, y, z), (c, x, y)) when the mask has channels.
        affine: voxel-to-world (RAS) matrix, or None when unknown (written as identity).
        extension: the file format it is meant for (``.nii.gz``, ``.nii``, ``.nrrd``, ``.seg.nrrd``, ``.png`` ...).
        labels: segment names (for ``.seg.nrrd``).
        compress: gzip-encode NRRD data.
    """

    array: np.ndarray
    affine: Optional[np.ndarray]
    extension: str
    labels: Optional[List[str]] = None
    compress: bool = False

    def nifti_array(self) -> np.ndarray:
        """The voxels as NIfTI (and raw voxels) lay them out: channels (time) last."""
        return np.moveaxis(self.array, 0, -1) if self.array.ndim == 4 else self.array


def write_mask(target: Target, mask: PreparedMask, extension: Optional[str] = None) -> None:
    """Writes a prepared mask in the format of its extension.

    Args:
        target: a file name, or a binary file object.
        mask: the mask.
        extension: the format, instead of ``mask.extension``.

    Raises:
        MONAILabelException: INVALID_INPUT for an array the format cannot hold.
    """
    lower = (extension or mask.extension).lower()
    if lower in (".nii", ".nii.gz"):
        write_nifti(target, mask.nifti_array(), mask.affine, gz=lower.endswith(".gz"))
    elif lower in (".nrrd", ".seg.nrrd"):
        write_nrrd(target, mask.array, mask.affine, mask.compress, mask.labels if lower == ".seg.nrrd" else None)
    elif lower == ".png":
        write_png(target, mask.array)
    else:
        Writer._write_with_pillow(target, mask.array, lower)


def encode_mask(mask: PreparedMask, extension: Optional[str] = None) -> bytes:
    """Returns the bytes of the file :func:`write_mask` would write, built in memory.

    Args:
        mask: the mask.
        extension: the format, instead of ``mask.extension``.
    """
    buffer = io.BytesIO()
    write_mask(buffer, mask, extension)
    return buffer.getvalue()


class Writer:
    """Writes ``data[label]`` to a temporary file and returns it with the result dict.

    Per-request options are read from the data dict under the ``key_*`` names (MONAI Label's
    ``result_extension``, ``result_dtype``, ``result_compress``, ``result_write_to_file``).

    Args:
        label: key of the mask to write.
        json: key of the result dict to return.
        ref_image: key whose metadata gives the affine (``label`` when None).
        key_extension: data key of the output extension (``.nii.gz``, ``.nii``, ``.nrrd``, ``.seg.nrrd``, ``.png``).
        key_dtype: data key of the output dtype.
        key_compress: data key: gzip-encode NRRD output.
        key_write_to_file: data key: False to return no file, only the result dict.
        meta_key_postfix: postfix of metadata keys (``pred_meta_dict``).
        nibabel: kept for MONAI Label compatibility (NIfTI is always written with nibabel here).
    """

    def __init__(
        self,
        label: str = "pred",
        json: Optional[str] = None,
        ref_image: Optional[str] = None,
        key_extension: str = "result_extension",
        key_dtype: str = "result_dtype",
        key_compress: str = "result_compress",
        key_write_to_file: str = "result_write_to_file",
        meta_key_postfix: str = "meta_dict",
        nibabel: bool = False,
    ) -> None:
        self.label = label
        self.json = json
        self.ref_image = ref_image if ref_image else label
        self.key_extension = key_extension
        self.key_dtype = key_dtype
        self.key_compress = key_compress
        self.key_write_to_file = key_write_to_file
        self.meta_key_postfix = meta_key_postfix
        self.nibabel = nibabel

    def __call__(self, data: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
        """Writes the mask.

        Args:
            data: the post-processed data dict.

        Returns:
            ``(file_path or None, result_json)``; the file is a temporary file the caller owns.
        """
        mask, output_json = self.prepare(data)
        if mask is None:
            return None, output_json
        fd, path = tempfile.mkstemp(suffix=mask.extension)
        os.close(fd)
        try:
            write_mask(path, mask)
        except BaseException:
            os.unlink(path)
            raise
        logger.debug(f"Result file: {path}; shape {mask.array.shape}; dtype {mask.array.dtype}")
        return path, output_json

    def prepare(self, data: Dict[str, Any]) -> Tuple[Optional[PreparedMask], Dict[str, Any]]:
        """Returns the mask as it would be written (dtype, axes, affine, extension), without writing it.

        This is the in-memory path: :func:`encode_mask` turns the result into file bytes, and an
        array consumer can use ``array`` and ``affine`` directly.

        Args:
            data: the post-processed data dict.

        Returns:
            ``(mask or None, result_json)``; None when ``result_write_to_file`` is False.
        """
        output_json = data.get(self.json, {}) if self.json else {}
        output_json = output_json if output_json is not None else {}
        if not data.get(self.key_write_to_file, True):
            return None, output_json

        arr = to_numpy(data[self.label])
        ext = self._extension(data, arr)
        is_2d_format = ext.lower() in _IMAGE_EXTS
        if arr.ndim >= 3 and arr.shape[0] == 1 and (arr.ndim == 4 or is_2d_format):
            arr = arr[0]  # drop a singleton channel
        spatial_ndim = min(arr.ndim, 2 if is_2d_format else 3)
        spatial_shape = arr.shape[-spatial_ndim:] if arr.ndim > spatial_ndim else arr.shape

        requested = data.get(self.key_dtype)
        if requested:
            dtype = np.dtype(requested)
        else:
            dtype, cast = _smallest_integer(arr)
            arr = cast if cast is not None else arr
        if dtype is None and arr.dtype == np.float64:
            dtype = np.dtype(np.float32)
        if dtype is not None and arr.dtype != dtype:
            arr = arr.astype(dtype)

        affine = self._affine(data, tuple(int(s) for s in spatial_shape))
        labels = data.get("labels") if ext.lower() == ".seg.nrrd" else None
        labels = [str(n) for n in labels] if isinstance(labels, (list, tuple, dict)) else None
        return PreparedMask(arr, affine, ext, labels, bool(data.get(self.key_compress, False))), output_json

    def _extension(self, data: Dict[str, Any], arr: np.ndarray) -> str:
        ext = data.get(self.key_extension) or file_ext(data.get("image_path"))
        ext = ext if not ext or ext.startswith(".") else f".{ext}"
        if ext.lower() in _VOLUME_EXTS or ext.lower() in _IMAGE_EXTS:
            return ext
        # DICOM folders, whole-slide images and anything unknown: NIfTI for volumes, PNG for 2D images.
        squeezed = arr.ndim - (1 if arr.ndim >= 3 and arr.shape[0] in (1, 3, 4) else 0)
        return ".png" if ext.lower() in (".tif", ".tiff", ".svs", ".bmp") and squeezed == 2 else ".nii.gz"

    def _affine(self, data: Dict[str, Any], spatial_shape: Tuple[int, ...]) -> Optional[np.ndarray]:
        # An explicit meta dict (Restored puts the original affine there) wins over MetaTensor geometry.
        meta = data.get(f"{self.ref_image}_{self.meta_key_postfix}")
        if isinstance(meta, dict) and _affine_or_none(meta.get("affine")) is not None:
            return _affine_or_none(meta.get("affine"))
        ref = data.get(self.ref_image)
        if ref is not None and hasattr(ref, "affine") and hasattr(ref, "meta"):
            return _affine_or_none(ref.affine)

        # Fall back to the input image, but only when the mask is on the same grid.
        image = data.get("image")
        if image is not None and hasattr(image, "affine") and hasattr(image, "meta"):
            if tuple(int(s) for s in image.shape[-len(spatial_shape) :]) == spatial_shape:
                return _affine_or_none(image.affine)
        meta = data.get(f"image_{self.meta_key_postfix}")
        if isinstance(meta, dict) and meta.get("affine") is not None:
            shape = meta.get("spatial_shape")
            if shape is not None and tuple(int(s) for s in to_numpy(shape).tolist()) == spatial_shape:
                return _affine_or_none(meta["affine"])
        logger.warning("No affine found for the result; writing it with an identity affine")
        return None

    @staticmethod
    def _write_with_pillow(path: Target, arr: np.ndarray, extension: str) -> None:
        try:
            from PIL import Image
        except ImportError as e:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT, f"writing '{extension}' needs Pillow; ask for '.png' instead"
            ) from e
        img = np.moveaxis(arr, 0, -1).transpose(1, 0, 2) if arr.ndim == 3 else arr.T
        fmt = Image.registered_extensions().get(extension.lower())
        with _opened(path) as f:
            Image.fromarray(np.ascontiguousarray(img.astype(np.uint8))).save(f, format=fmt)


class ClassificationWriter:
    """Returns class names of the predicted indices; writes no file.

    Args:
        label: key of the predicted class indices.
        label_names: ``{index: name}``.
    """

    def __init__(self, label: str = "pred", label_names: Optional[Dict[int, str]] = None) -> None:
        self.label = label
        self.label_names = label_names or {}

    def __call__(self, data: Dict[str, Any]) -> Tuple[None, Dict[str, Any]]:
        """Returns ``(None, {"prediction": [name, ...]})``."""
        values = np.atleast_1d(to_numpy(data[self.label]))
        return None, {"prediction": [self.label_names.get(int(v), int(v)) for v in values]}


class PolygonWriter:
    """Writes the polygons found by ``FindContoursd`` as a DSA JSON or ASAP XML annotation file.

    Args:
        label: key of the mask (unused; kept for MONAI Label compatibility).
        json: key of the result dict holding ``annotation`` (as ``FindContoursd`` writes it).
        key_write_to_file: data key: False to return only the result dict.
        key_annotations: key of the annotations in the result.
        key_label_colors: data key of ``{label: color}``.
        key_output_format: data key of the format: ``dsa`` (default), ``asap`` or ``json``.
    """

    def __init__(
        self,
        label: str = "pred",
        json: str = "result",
        key_write_to_file: str = "result_write_to_file",
        key_annotations: str = "annotations",
        key_label_colors: str = "label_colors",
        key_output_format: str = "output",
    ) -> None:
        self.label = label
        self.json = json
        self.key_write_to_file = key_write_to_file
        self.key_annotations = key_annotations
        self.key_label_colors = key_label_colors
        self.key_output_format = key_output_format

    def __call__(self, data: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
        """Returns ``(file or None, annotations_json)``."""
        output_json = data.get(self.json, {}) or {}
        if not data.get(self.key_write_to_file, True):
            return None, output_json
        res_json = {
            "name": f"MONAILabel Annotations - {data.get('model')}",
            "description": data.get("description"),
            "model": data.get("model"),
            "location": data.get("location"),
            "size": data.get("size"),
            self.key_annotations: [output_json],
        }
        output = data.get(self.key_output_format, "dsa")
        if output not in ("dsa", "asap"):
            return None, res_json
        elements = []
        for annotation in res_json[self.key_annotations]:
            for element in (annotation or {}).get("annotation", {}).get("elements", []):
                for contour in element.get("contours", []):
                    elements.append((str(element.get("label")), contour))
        if output == "dsa":
            doc = {
                "name": res_json["name"],
                "description": res_json["description"],
                "elements": [
                    {"type": "polyline", "closed": True, "label": {"value": lab}, "points": [[x, y, 0] for x, y in c]}
                    for lab, c in elements
                ],
            }
            text, suffix = jsonlib.dumps(doc), ".json"
        else:
            parts = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "<Annotations>"]
            for i, (lab, c) in enumerate(elements):
                parts.append(f'<Annotation Name="{i}" Type="Polygon" PartOfGroup="{lab}"><Coordinates>')
                parts += [f'<Coordinate Order="{j}" X="{x}" Y="{y}" />' for j, (x, y) in enumerate(c)]
                parts.append("</Coordinates></Annotation>")
            parts += ["</Annotations>", "</ASAP_Annotations>"]
            text, suffix = "\n".join(parts), ".xml"
        fd, path = tempfile.mkstemp(suffix=suffix)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path, res_json
