"""Exceptions of the SDK, as MONAI Label names them.

SDK code raises these; the server maps each :class:`MONAILabelError` to one gRPC status code in a
single place (``monailabel_server.errors``), so app code never deals with transport details.
"""

from __future__ import annotations

from enum import Enum
from typing import Dict, Optional, Sequence, Tuple

__all__ = [
    "MONAILabelError",
    "MONAILabelException",
    "ImageNotFoundException",
    "LabelNotFoundException",
]


class MONAILabelError(Enum):
    """Kinds of failure. The first nine are MONAI Label's; the rest type what its REST server left as 500.

    Attributes:
        SERVER_ERROR: server error.
        UNKNOWN_ERROR: unknown error.
        CLASS_INIT_ERROR: class initialization error.
        MODEL_IMPORT_ERROR: model import error.
        INFERENCE_ERROR: inference error.
        TRANSFORM_ERROR: transform error.
        INVALID_INPUT: invalid input.
        APP_INIT_ERROR: app initialization error.
        APP_ERROR: app error.
        NOT_FOUND: an image, label, model, session or job does not exist.
        ALREADY_EXISTS: the object to create exists already.
        OUT_OF_RANGE: a chunk offset leaves a gap or passes the end.
        RESOURCE_EXHAUSTED: a size or queue limit was reached.
        CONFLICT: a job of that kind runs already, or the object changed under the caller.
        PRECONDITION_FAILED: the system is not in a state to do this (no labeled data, ...).
        UNAVAILABLE: the server is loading or draining.
        UNIMPLEMENTED: the app does not offer this.
        CANCELLED: the caller cancelled the work.
        UNAUTHENTICATED: the call carries no valid token (auth is on).
        PERMISSION_DENIED: the caller's token lacks the role the call needs.
    """

    SERVER_ERROR = "SERVER_ERROR"
    UNKNOWN_ERROR = "UNKNOWN_ERROR"
    CLASS_INIT_ERROR = "CLASS_INIT_ERROR"
    MODEL_IMPORT_ERROR = "MODEL_IMPORT_ERROR"
    INFERENCE_ERROR = "INFERENCE_ERROR"
    TRANSFORM_ERROR = "TRANSFORM_ERROR"
    INVALID_INPUT = "INVALID_INPUT"
    APP_INIT_ERROR = "APP_INIT_ERROR"
    APP_ERROR = "APP_ERROR"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    CONFLICT = "CONFLICT"
    PRECONDITION_FAILED = "PRECONDITION_FAILED"
    UNAVAILABLE = "UNAVAILABLE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    CANCELLED = "CANCELLED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"


class MONAILabelException(Exception):
    """An error the SDK raises on purpose, with its kind and a message meant for the user.

    The keyword arguments are optional, structured facts a client can act on without parsing the
    message; the server sends them as ``google.rpc`` error details (BadRequest, ResourceInfo,
    RetryInfo, ErrorInfo). The SDK itself stays free of any transport type.

    Args:
        error: the kind of failure.
        msg: what went wrong, in words a client can show (never a server path).
        field: the request field at fault, as ``header.content.shape`` (a BadRequest field violation).
        violations: more ``(field, description)`` pairs, for several faults found at once.
        resource: ``(type, name)`` of the resource concerned, as ``("image", "ct_01")`` (ResourceInfo).
        retry_after_s: seconds after which the same call may succeed (RetryInfo).
        reason: a short UPPER_SNAKE_CASE machine-readable cause, as ``UPLOAD_OFFSET_MISMATCH`` (ErrorInfo).
        metadata: string facts that go with ``reason``, as ``{"committed_size": "1048576"}`` (ErrorInfo).
    """

    def __init__(
        self,
        error: MONAILabelError,
        msg: str,
        *,
        field: Optional[str] = None,
        violations: Sequence[Tuple[str, str]] = (),
        resource: Optional[Tuple[str, str]] = None,
        retry_after_s: Optional[float] = None,
        reason: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
    ) -> None:
        super().__init__(msg)
        self.error = error
        self.msg = msg
        self.violations: Tuple[Tuple[str, str], ...] = ((field, msg),) if field else ()
        self.violations += tuple(violations)
        self.resource = resource
        self.retry_after_s = retry_after_s
        self.reason = reason
        self.metadata: Dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        return self.msg


class ImageNotFoundException(MONAILabelException):
    """The image id is not in the datastore.

    Args:
        msg: what went wrong.
    """

    def __init__(self, msg: str, image_id: str = "") -> None:
        super().__init__(MONAILabelError.NOT_FOUND, msg, resource=("image", image_id) if image_id else None)


class LabelNotFoundException(MONAILabelException):
    """The label (image id and tag) is not in the datastore.

    Args:
        msg: what went wrong.
    """

    def __init__(self, msg: str, label: str = "") -> None:
        super().__init__(MONAILabelError.NOT_FOUND, msg, resource=("label", label) if label else None)
