"""The structured facts a failed call carries, read from a ``grpc.RpcError`` without parsing its text.

The server sends, beside the status code and message, ``google.rpc`` error details in the call's
trailers: which request fields were wrong (BadRequest), which resource was concerned (ResourceInfo),
when to retry (RetryInfo), and a machine-readable reason with its facts (ErrorInfo). Example::

    try:
        client.upload_image("ct 01", "ct.nii.gz")
    except grpc.RpcError as err:
        details = error_details(err)
        for field, problem in details.field_violations:
            print(field, problem)
        if details.retry_after_s is not None:
            time.sleep(details.retry_after_s)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = ["ErrorDetails", "error_details"]


@dataclass(frozen=True)
class ErrorDetails:
    """What a failed call reported.

    Attributes:
        code: the status code.
        message: the status message.
        field_violations: ``(field, description)`` for each request field at fault, as
            ``("header.image_id", "image_id '..' is not valid: ...")``.
        retry_after_s: seconds after which the same call may succeed; None when retrying will not help.
        resource: ``(type, name)`` of the resource concerned, as ``("image", "ct_01")``.
        reason: a short UPPER_SNAKE_CASE cause, as ``"TOO_MANY_STREAMS"``.
        domain: the domain of ``reason`` (``"monailabel.v1"`` for this server's reasons).
        metadata: facts that go with ``reason``, as ``{"max_streams": "12"}``.
    """

    code: grpc.StatusCode
    message: str
    field_violations: Tuple[Tuple[str, str], ...] = ()
    retry_after_s: Optional[float] = None
    resource: Optional[Tuple[str, str]] = None
    reason: Optional[str] = None
    domain: str = ""
    metadata: Dict[str, str] = field(default_factory=dict)


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Reads the status and its ``google.rpc`` details from a failed call.

    Args:
        error: the error a stub call raised (or a call object that ended with an error).

    Returns:
        The details; only code and message are set when the server sent no details (or when the
        error did not come from a call, as for a channel closed before it).
    """
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else str(error)) or ""
    status = _status_of(error)
    if status is None:
        return ErrorDetails(code=code, message=message)
    violations: Tuple[Tuple[str, str], ...] = ()
    retry_after_s: Optional[float] = None
    resource: Optional[Tuple[str, str]] = None
    reason: Optional[str] = None
    domain = ""
    metadata: Dict[str, str] = {}
    for packed in status.details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            violations += tuple((v.field, v.description) for v in bad.field_violations)
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            retry_after_s = retry.retry_delay.ToNanoseconds() / 1e9
        elif packed.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            info = error_details_pb2.ResourceInfo()
            packed.Unpack(info)
            resource = (info.resource_type, info.resource_name)
        elif packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            cause = error_details_pb2.ErrorInfo()
            packed.Unpack(cause)
            reason, domain, metadata = cause.reason, cause.domain, dict(cause.metadata)
    return ErrorDetails(code, status.message or message, violations, retry_after_s, resource, reason, domain, metadata)


def _status_of(error: grpc.RpcError) -> Optional[status_pb2.Status]:
    if not hasattr(error, "trailing_metadata"):
        return None
    try:
        return rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # trailers whose status disagrees with the call's: trust the call's code alone
        return None
