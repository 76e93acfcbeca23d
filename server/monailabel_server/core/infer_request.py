"""What an infer call may ask for: typed parameters and output options, each checked against limits.

MONAI Label's infer request is a free-form dict. Here the server builds it from typed fields, and the
free-form part (``params.extra``) may carry only the app's own keys: never a key the server sets, a
typed field's key, a data-dict key of the task, or a key naming a path or file. Keys that steer the
cost of a call (sliding-window size, overlap, batch) are checked so that no request can make a model
run for much longer, or hold much more memory, than the volume needs; ``amp`` (mixed precision) must
be a boolean.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.digests import SUPPORTED
from monailabel_api.v1 import common_pb2
from monailabel_api.wire import encoding_of_name
from monailabel_server.validation import MAX_ID_CHARS, check_enum, check_info, check_int, check_number, invalid, shown

__all__ = [
    "InferParams",
    "OutputSpec",
    "MASK_ENCODINGS",
    "MAX_POINTS",
    "MAX_LABEL_ENTRIES",
    "MAX_SW_BATCH_SIZE",
    "MAX_ROI_EDGE",
    "MAX_SLIDING_WINDOWS",
    "MIN_CHUNK_SIZE",
    "RESERVED_EXTRA_KEYS",
    "check_extra",
    "check_points",
    "check_device",
    "check_output",
    "check_label_info",
]

#: Clicks per list (foreground, background).
MAX_POINTS = 1024
#: Entries of label_info.
MAX_LABEL_ENTRIES = 256
#: Windows a sliding-window inferer runs at once.
MAX_SW_BATCH_SIZE = 64
#: Largest edge of a sliding-window ROI, in voxels.
MAX_ROI_EDGE = 1024
#: Windows one call may run over its volume (ROI, overlap and volume shape decide the count).
MAX_SLIDING_WINDOWS = 4096
#: Smallest mask chunk a client may ask for (0 means the server's own size).
MIN_CHUNK_SIZE = 64 << 10

#: Encodings a mask can come back in.
MASK_ENCODINGS: Dict[int, str] = {
    common_pb2.ENCODING_NIFTI: "ENCODING_NIFTI",
    common_pb2.ENCODING_NIFTI_GZ: "ENCODING_NIFTI_GZ",
    common_pb2.ENCODING_NRRD: "ENCODING_NRRD",
    common_pb2.ENCODING_RAW: "ENCODING_RAW",
    common_pb2.ENCODING_IMAGE_2D: "ENCODING_IMAGE_2D",
}
# the file a mask of each encoding is built as (raw voxels are laid out as NIfTI's)
_EXTENSION: Dict[int, str] = {
    common_pb2.ENCODING_NIFTI: ".nii",
    common_pb2.ENCODING_NIFTI_GZ: ".nii.gz",
    common_pb2.ENCODING_NRRD: ".nrrd",
    common_pb2.ENCODING_RAW: ".nii",
    common_pb2.ENCODING_IMAGE_2D: ".png",
}
_RESULT_EXTENSIONS = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".png")

#: Keys ``params.extra`` may not carry: the server sets them, a typed field carries them, or they are
#: keys of the task's data dict.
RESERVED_EXTRA_KEYS = frozenset({
    "model", "image", "image_id", "image_path", "label", "label_tag", "save_label", "labels", "label_names",
    "device", "foreground", "background", "label_info", "cancel_check", "client_id", "description",
    "timeout", "latencies", "pred", "result", "model_filename", "logging",
})
_RESERVED_PREFIXES = ("result_", "_")
_RESERVED_SUFFIXES = ("_meta_dict", "_transforms")
# keys that name something on the server's filesystem
_PATHLIKE = re.compile(r"(path|file|dir|folder|uri|url)", re.IGNORECASE)
_ROI_KEYS = ("roi_size", "tile_size")
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d{1,3})$")


@dataclass
class InferParams:
    """The typed parameters of an infer call.

    Attributes:
        foreground: foreground clicks, one coordinate per spatial axis.
        background: background clicks.
        label_info: ``(name, voxel value)`` of the labels asked for.
        device: where to run; empty for the task's default.
        result_dtype: numpy name of the mask's element type; empty for the smallest integer type.
        extra: the app's own request keys.
        field_prefix: where these came in the request (``params`` or ``header.params``), for errors.
    """

    foreground: List[List[int]] = field(default_factory=list)
    background: List[List[int]] = field(default_factory=list)
    label_info: List[Tuple[str, int]] = field(default_factory=list)
    device: str = ""
    result_dtype: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)
    field_prefix: str = "params"


@dataclass
class OutputSpec:
    """How the mask comes back.

    Attributes:
        encoding: an ``Encoding`` value; 0 for NIfTI gzip (PNG for 2D models) or what ``result_extension`` says.
        result_extension: MONAI Label's ``result_extension``.
        chunk_size: bytes per chunk; 0 for the server's size.
        save_label: also save the mask as the image's ``original`` label.
        skip_mask: send only the result.
        field_prefix: where these came in the request, for errors.
        checksum: the mask header's checksum: ``sha256``, ``xxh3_128``, or "" for both.
    """

    encoding: int = 0
    result_extension: str = ""
    chunk_size: int = 0
    save_label: bool = False
    skip_mask: bool = False
    field_prefix: str = "output"
    checksum: str = ""


def check_output(output: OutputSpec, two_d: bool, server_chunk_size: int) -> Tuple[int, str, int]:
    """Resolves the mask's encoding, file extension and chunk size.

    Args:
        output: the options.
        two_d: the model is 2D (its masks default to PNG).
        server_chunk_size: the server's chunk size (the largest a client may ask for).

    Returns:
        ``(encoding, extension, chunk_size)``.

    Raises:
        MONAILabelException: INVALID_INPUT for an unknown encoding, extension or checksum, or a
            chunk size outside ``[MIN_CHUNK_SIZE, server_chunk_size]``.
    """
    p = output.field_prefix
    check_enum(output.encoding, f"{p}.encoding", list(MASK_ENCODINGS), names=MASK_ENCODINGS)
    check_checksum(output.checksum, f"{p}.checksum")
    ext = output.result_extension.lower()
    if ext and ext not in _RESULT_EXTENSIONS:
        raise invalid(f"{p}.result_extension", f"{p}.result_extension {shown(output.result_extension)} is not "
                                               f"one of {', '.join(_RESULT_EXTENSIONS)}")
    encoding = output.encoding or (encoding_of_name(ext) if ext else 0)
    if not encoding:
        encoding = common_pb2.ENCODING_IMAGE_2D if two_d else common_pb2.ENCODING_NIFTI_GZ
    extension = _EXTENSION[encoding]
    if ext and encoding == common_pb2.ENCODING_NRRD and ext.endswith(".nrrd"):
        extension = ext  # keeps ".seg.nrrd"
    chunk = output.chunk_size
    if chunk != 0 and not MIN_CHUNK_SIZE <= chunk <= server_chunk_size:
        raise invalid(f"{p}.chunk_size",
                      f"{p}.chunk_size is {shown(chunk)}; use 0 (server default) or {MIN_CHUNK_SIZE} "
                      f"to {server_chunk_size} bytes")
    return encoding, extension, chunk or server_chunk_size


def check_checksum(value: str, field_name: str) -> None:
    """Checks a requested checksum name: "", or one of the digests the server computes.

    Raises:
        MONAILabelException: INVALID_INPUT for another value.
    """
    if value and value not in SUPPORTED:
        raise invalid(field_name, f"{field_name} is {shown(value)}; use one of {', '.join(SUPPORTED)}, or leave it "
                                  "empty for both")


def check_points(points: Sequence[Sequence[int]], field_name: str, dimension: int,
                 shape: Optional[Sequence[int]]) -> List[List[int]]:
    """Checks clicks: at most ``MAX_POINTS``, one coordinate per spatial axis, inside the volume.

    Args:
        points: the clicks.
        field_name: their field, as ``params.foreground``.
        dimension: the model's spatial dimension.
        shape: the volume's shape (spatial axes first), when known.

    Raises:
        MONAILabelException: INVALID_INPUT naming the first bad click.
    """
    if len(points) > MAX_POINTS:
        raise invalid(field_name, f"{field_name} has {len(points)} clicks; at most {MAX_POINTS}")
    spatial = tuple(int(s) for s in shape[:dimension]) if shape is not None and len(shape) >= dimension else None
    out = []
    for i, point in enumerate(points):
        where = f"{field_name}[{i}]"
        coords = [int(c) for c in point]
        if len(coords) != dimension:
            raise invalid(where, f"{where} has {len(coords)} coordinates; this model takes {dimension}-D clicks")
        if spatial is not None and any(not 0 <= c < s for c, s in zip(coords, spatial, strict=True)):
            raise invalid(where, f"{where} {shown(coords)} lies outside the volume of shape {list(spatial)}")
        out.append(coords)
    return out


def check_label_info(entries: Sequence[Tuple[str, int]], field_name: str) -> List[Tuple[str, int]]:
    """Checks label_info: at most ``MAX_LABEL_ENTRIES`` names of 1-128 characters, values 0 to 2^31-1.

    Raises:
        MONAILabelException: INVALID_INPUT naming the first bad entry.
    """
    if len(entries) > MAX_LABEL_ENTRIES:
        raise invalid(field_name, f"{field_name} has {len(entries)} entries; at most {MAX_LABEL_ENTRIES}")
    for i, (name, index) in enumerate(entries):
        if not name or len(name) > MAX_ID_CHARS:
            raise invalid(f"{field_name}[{i}].name", f"{field_name}[{i}].name must be 1-{MAX_ID_CHARS} characters")
        check_int(index, f"{field_name}[{i}].index", 0, 2**31 - 1)
    return list(entries)


def check_device(device: str, field_name: str) -> str:
    """Checks a device name against this machine: ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        MONAILabelException: INVALID_INPUT for another name; PRECONDITION_FAILED for CUDA on a
            machine without it, or a CUDA index it does not have.
    """
    if not device:
        return device
    if not _DEVICE.match(device):
        raise invalid(field_name, f"{field_name} {shown(device)} is not a device; use cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED,
                                      f"{field_name} {device}: this server has no CUDA device; use cpu",
                                      field=field_name, reason="DEVICE_UNAVAILABLE")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise MONAILabelException(MONAILabelError.PRECONDITION_FAILED,
                                      f"{field_name} {device}: this server has {count} CUDA device(s), "
                                      f"cuda:0 to cuda:{count - 1}", field=field_name, reason="DEVICE_UNAVAILABLE")
    return device


def check_extra(extra: Mapping[str, Any], field_name: str, task: Any,
                shape: Optional[Sequence[int]]) -> Dict[str, Any]:
    """Checks the app's free-form request keys.

    Args:
        extra: ``params.extra`` as a dict.
        field_name: its field, as ``params.extra``.
        task: the infer task (its data-dict keys are reserved too).
        shape: the volume's shape (spatial axes first), when known.

    Returns:
        The keys, to merge into the request dict.

    Raises:
        MONAILabelException: INVALID_INPUT naming ``field_name.KEY`` for a reserved key, a bad
            sliding-window value or an ``amp`` that is not a boolean; RESOURCE_EXHAUSTED for one that
            would run too many windows.
    """
    extra = check_info(dict(extra), field_name)
    task_keys = {str(getattr(task, k, "")) for k in ("input_key", "output_label_key", "output_json_key")}
    for key in extra:
        where = f"{field_name}.{key}"
        lower = key.lower()
        if lower in RESERVED_EXTRA_KEYS or key in task_keys or lower.startswith(_RESERVED_PREFIXES) \
                or lower.endswith(_RESERVED_SUFFIXES):
            raise invalid(where, f"{where}: {shown(key)} is set by the server or a typed field; it may not "
                                 "be in extra")
        if _PATHLIKE.search(key):
            raise invalid(where, f"{where}: keys naming a path or file may not be in extra")
        if lower.startswith("sw_") and lower not in ("sw_batch_size", "sw_overlap"):
            raise invalid(where, f"{where} is not a sliding-window key; use roi_size, sw_batch_size, sw_overlap")
    if "amp" in extra and not isinstance(extra["amp"], bool):
        where = f"{field_name}.amp"
        raise invalid(where, f"{where} is {shown(extra['amp'])}; it must be true or false (mixed precision)")
    _check_sliding_window(extra, field_name, int(getattr(task, "dimension", 3) or 3), shape)
    return extra


def _check_sliding_window(extra: Dict[str, Any], field_name: str, dimension: int,
                          shape: Optional[Sequence[int]]) -> None:
    if "sw_batch_size" in extra:
        check_int(extra["sw_batch_size"], f"{field_name}.sw_batch_size", 1, MAX_SW_BATCH_SIZE)
    overlap = 0.25
    if "sw_overlap" in extra:
        where = f"{field_name}.sw_overlap"
        overlap = check_number(extra["sw_overlap"], where, 0.0, 1.0)
        if overlap >= 1.0:
            raise invalid(where, f"{where} is {shown(overlap)}; it must be at least 0 and below 1")
    for key in _ROI_KEYS:
        if key not in extra:
            continue
        where = f"{field_name}.{key}"
        roi = extra[key]
        if not isinstance(roi, list) or len(roi) != dimension:
            raise invalid(where, f"{where} must be a list of {dimension} positive integers (one per spatial axis)")
        for i, edge in enumerate(roi):
            check_int(edge, f"{where}[{i}]", 1, MAX_ROI_EDGE)
        if shape is not None and len(shape) >= dimension:
            windows = 1
            for edge, size in zip(roi, shape[:dimension], strict=True):
                step = max(1, int(edge * (1.0 - overlap)))
                windows *= math.ceil(max(int(size) - edge, 0) / step) + 1
            if windows > MAX_SLIDING_WINDOWS:
                raise invalid(where, f"{where} {shown(roi)} with overlap {overlap} needs {windows} windows over "
                                     f"this volume; at most {MAX_SLIDING_WINDOWS}", MONAILabelError.INVALID_INPUT)
