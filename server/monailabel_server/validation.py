"""The one boundary where request values are checked, against declared limits, before the core acts.

Every check raises :class:`MONAILabelException` with the field at fault (sent to the client as a
``google.rpc.BadRequest`` field violation), so servicers and the core never repeat a check and no
value reaches the filesystem, the process table or a model unchecked. Values a client sends are
echoed back only in short, bounded form (:func:`shown`).
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = [
    "MAX_ID_CHARS",
    "MAX_INFO_BYTES",
    "MAX_INFO_DEPTH",
    "MAX_INFO_KEYS",
    "MAX_PAGE_SIZE",
    "invalid",
    "shown",
    "check_id",
    "check_tag",
    "check_info",
    "check_int",
    "check_enum",
    "check_number",
]

# ids name files (with an extension and staging prefixes added), so they stay far below NAME_MAX (255)
MAX_ID_CHARS = 128
# free-form info of an image or label: bounded so that any page of listings stays under 4 MiB
MAX_INFO_BYTES = 16 * 1024
MAX_INFO_DEPTH = 8
MAX_INFO_KEYS = 256
MAX_PAGE_SIZE = 1000

_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


def shown(value: Any, limit: int = 40) -> str:
    """A client value as it may appear in a message: repr'd and cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid(field: str, msg: str, error: MONAILabelError = MONAILabelError.INVALID_INPUT) -> MONAILabelException:
    """Builds the exception for a bad request field.

    Args:
        field: the field's path in the request, as ``header.content.shape``.
        msg: what is wrong, in words a client can show.
        error: the kind (INVALID_INPUT unless a limit is meant: RESOURCE_EXHAUSTED, OUT_OF_RANGE).

    Returns:
        The exception (raise it).
    """
    return MONAILabelException(error, msg, field=field)


def check_id(value: str, field: str = "image_id") -> str:
    """Validates an image id (or any id that names a file) before it is used.

    Args:
        value: the id.
        field: its field name, for the message and the field violation.

    Returns:
        The id.

    Raises:
        MONAILabelException: INVALID_INPUT for an empty or too long id, a path separator, ``..``,
            a leading ``.`` or other characters.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or ".." in value or not _ID.match(value):
        raise invalid(
            field,
            f"{field} {shown(value)} is not valid: use 1-{MAX_ID_CHARS} letters, digits, '.', '_' or '-', "
            "not starting with '.', with no path separator or '..'",
        )
    return value


def check_tag(value: str, field: str = "tag", default: str = "final") -> str:
    """Validates a label tag; an empty tag means ``default``.

    Raises:
        MONAILabelException: INVALID_INPUT as :func:`check_id`.
    """
    return check_id(value or default, field)


def check_info(info: Mapping[str, Any], field: str = "info") -> Dict[str, Any]:
    """Validates free-form info (of an image, a label or an upload) a client sends.

    Values must be JSON (no NaN or infinity), at most ``MAX_INFO_DEPTH`` deep, with at most
    ``MAX_INFO_KEYS`` keys at any level, and ``MAX_INFO_BYTES`` in all once encoded.

    Args:
        info: the info as a dict (``None`` values mean "remove this key" where a caller merges).
        field: its field name.

    Returns:
        The info.

    Raises:
        MONAILabelException: INVALID_INPUT for non-finite numbers, keys that are not short strings,
            or nesting beyond the limit; RESOURCE_EXHAUSTED for info over the size limit.
    """
    import json

    def walk(value: Any, path: str, depth: int) -> None:
        if depth > MAX_INFO_DEPTH:
            raise invalid(path, f"{field} nests deeper than {MAX_INFO_DEPTH} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid(path, f"{path} is {value}: info values must be finite numbers")
        if isinstance(value, Mapping):
            if len(value) > MAX_INFO_KEYS:
                raise invalid(path, f"{path} has {len(value)} keys; at most {MAX_INFO_KEYS}")
            for k, v in value.items():
                if not isinstance(k, str) or not k or len(k) > MAX_ID_CHARS:
                    raise invalid(path, f"{path} has a key {shown(k)}: keys are 1-{MAX_ID_CHARS} characters")
                walk(v, f"{path}.{k}", depth + 1)
        elif isinstance(value, (list, tuple)):
            if len(value) > MAX_INFO_BYTES:
                raise invalid(path, f"{path} has {len(value)} items")
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]", depth + 1)
        elif not (value is None or isinstance(value, (str, int, float, bool))):
            raise invalid(path, f"{path} is a {type(value).__name__}: info values must be JSON")

    walk(info, field, 0)
    size = len(json.dumps(info, allow_nan=False).encode())
    if size > MAX_INFO_BYTES:
        raise invalid(field, f"{field} is {size} bytes once encoded; at most {MAX_INFO_BYTES}",
                      MONAILabelError.RESOURCE_EXHAUSTED)
    return dict(info)


def check_int(value: int, field: str, lo: int, hi: int) -> int:
    """Checks ``lo <= value <= hi``.

    Raises:
        MONAILabelException: INVALID_INPUT outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise invalid(field, f"{field} is {shown(value)}; it must be an integer from {lo} to {hi}")
    return value


def check_number(value: float, field: str, lo: float, hi: float) -> float:
    """Checks a finite ``lo <= value <= hi``.

    Raises:
        MONAILabelException: INVALID_INPUT for NaN, infinity or a value outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise invalid(field, f"{field} is {shown(value)}; it must be a number from {lo} to {hi}")
    return float(value)


def check_enum(value: int, field: str, known: Sequence[int], allow_unspecified: bool = True,
               names: Optional[Mapping[int, str]] = None) -> int:
    """Checks that an enum value is one this server knows (proto3 keeps unknown numbers as ints).

    Raises:
        MONAILabelException: INVALID_INPUT for an unknown value, or for 0 when it is not allowed.
    """
    if (value == 0 and allow_unspecified) or (value != 0 and value in known):
        return value
    listed = ", ".join(names[k] if names else str(k) for k in known)
    raise invalid(field, f"{field} {value} is not one of: {listed}")


# -- datastore requests ---------------------------------------------------------------------------

# an upload id is the 32 hex digits of a uuid4 the server issued
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
# largest offset or size a request may name: far beyond any volume, far below int64 overflow
MAX_OFFSET = 1 << 50


def check_upload_id(value: str, field: str = "header.upload_id") -> str:
    """Validates an upload id a client sends back ("" means a new upload).

    Raises:
        MONAILabelException: INVALID_INPUT for anything but an id this server could have issued.
    """
    if value and not _UPLOAD_ID.match(value):
        raise invalid(field, f"{field} {shown(value)} is not an upload id this server issued")
    return value


def check_raw_shape(shape: Sequence[int], itemsize: int, max_bytes: int, field: str = "content.shape") -> int:
    """Checks the shape of raw voxels: 2 to 4 positive sizes whose bytes stay within ``max_bytes``.

    Returns:
        The number of bytes the shape holds.

    Raises:
        MONAILabelException: INVALID_INPUT for a bad rank or size, RESOURCE_EXHAUSTED over the limit.
    """
    dims = [int(s) for s in shape]
    if not 2 <= len(dims) <= 4 or any(s <= 0 for s in dims):
        raise invalid(field, f"raw voxels need a shape of 2 to 4 positive sizes, got {shown(dims, 80)}")
    total = itemsize
    for s in dims:  # Python integers: no overflow; stop as soon as the limit is passed
        total *= s
        if total > max_bytes:
            raise invalid(field, f"shape {shown(dims, 80)} is over this server's limit of {max_bytes} bytes",
                          MONAILabelError.RESOURCE_EXHAUSTED)
    return total


def check_geometry(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float], ndim: int,
                   field: str = "content.geometry") -> None:
    """Checks a geometry: finite values, positive spacing, and a non-singular direction matrix.

    Unset (empty) parts are allowed; the lengths are checked where the affine is built.

    Raises:
        MONAILabelException: INVALID_INPUT for NaN, infinity, a spacing that is not positive, or a
            direction matrix that is singular.
    """
    for name, values in (("spacing", spacing), ("origin", origin), ("direction", direction)):
        if any(not math.isfinite(v) for v in values):
            raise invalid(f"{field}.{name}", f"{field}.{name} has a value that is NaN or infinite")
    if any(v <= 0 for v in spacing):
        raise invalid(f"{field}.spacing", f"{field}.spacing values must be positive")
    if direction and len(direction) == ndim * ndim:
        import numpy as np

        matrix = np.asarray(direction, dtype=np.float64).reshape(ndim, ndim)
        if abs(float(np.linalg.det(matrix))) < 1e-6:
            raise invalid(f"{field}.direction", f"{field}.direction is a singular matrix")


#: Smallest chunk a client may ask a download to come in (0 asks for the server's own size).
MIN_DOWNLOAD_CHUNK = 64 << 10


def check_chunk_size(value: int, field: str, server_chunk_size: int) -> int:
    """Resolves a download's chunk size: 0 for the server's, else ``MIN_DOWNLOAD_CHUNK`` to the server's.

    Raises:
        MONAILabelException: INVALID_INPUT outside those bounds.
    """
    if value == 0:
        return server_chunk_size
    if not MIN_DOWNLOAD_CHUNK <= value <= server_chunk_size:
        raise invalid(field, f"{field} is {shown(value)}; use 0 (server default) or {MIN_DOWNLOAD_CHUNK} to "
                             f"{server_chunk_size} bytes")
    return int(value)


def check_model_name(value: str, field: str, names: Sequence[str]) -> str:
    """Checks that ``value`` names one of ``names`` (an app's models).

    Raises:
        MONAILabelException: INVALID_INPUT when empty, NOT_FOUND (listing the names) when unknown.
    """
    if not value:
        raise invalid(field, f"{field} is required")
    if value not in names:
        raise MONAILabelException(MONAILabelError.NOT_FOUND,
                                  f"model {shown(value)} does not exist; models: {', '.join(sorted(names)) or 'none'}",
                                  resource=("model", value[:MAX_ID_CHARS]))
    return value


def check_names(names: Sequence[str], every: bool, field: str, every_field: str) -> List[str]:
    """The names a start-many call lists, or ``[]`` for all of them when ``every`` is set (exactly one of the two).

    Raises:
        MONAILabelException: INVALID_INPUT for both or neither, or a bad name.
    """
    if every and names:
        raise invalid(field, f"{field} must be empty when {every_field} is set")
    if not every and not names:
        raise invalid(field, f"name the {field}, or set {every_field} to start them all")
    for i, name in enumerate(names):
        check_id(name, f"{field}[{i}]")
    return list(names)
