"""The one place where exceptions become gRPC status codes.

Servicers and the SDK raise :class:`MONAILabelException`; this interceptor turns each kind into its
status code with the exception's message and its structured facts as ``google.rpc`` details
(BadRequest field violations, ResourceInfo, RetryInfo, ErrorInfo), which grpcio-status puts in the
``grpc-status-details-bin`` trailer. Anything else is a bug: INTERNAL, traceback in the log only.

Every message is scrubbed before it leaves: absolute server paths become their last component, and
long messages and echoed values are cut, so that trailers stay far below a client's metadata limit.
"""

from __future__ import annotations

import errno
import functools
import logging
import re
from typing import Any, Callable, Dict, Iterator, Optional, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = [
    "ErrorInterceptor",
    "replaced_handler",
    "status_of",
    "rich_status",
    "scrub",
    "STATUS_BY_ERROR",
    "ERROR_DOMAIN",
]

ERROR_DOMAIN = "monailabel.v1"
MAX_MESSAGE_CHARS = 1024
MAX_DETAIL_CHARS = 256
# an absolute POSIX path of two or more components (a file or folder on the server)
_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"<>(),;:]+/)+([^\s/'\"<>(),;:]*)")

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: Dict[MONAILabelError, grpc.StatusCode] = {
    MONAILabelError.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    MONAILabelError.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    MONAILabelError.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    MONAILabelError.OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
    MONAILabelError.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    MONAILabelError.CONFLICT: grpc.StatusCode.ABORTED,
    MONAILabelError.PRECONDITION_FAILED: grpc.StatusCode.FAILED_PRECONDITION,
    MONAILabelError.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    MONAILabelError.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    MONAILabelError.CANCELLED: grpc.StatusCode.CANCELLED,
    MONAILabelError.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    MONAILabelError.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
}


def scrub(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Removes server paths from a message (keeping the last component) and bounds its length.

    Args:
        text: a message or value meant for a client.
        limit: the most characters kept.

    Returns:
        The text as a client may see it.
    """
    text = _ABS_PATH.sub(lambda m: m.group(1) or "<folder>", text)
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text) - limit + 20} more)"


def rich_status(exc: BaseException) -> status_pb2.Status:
    """Builds the ``google.rpc.Status`` (code, scrubbed message, details) a client gets for an exception.

    Args:
        exc: what was raised while serving a call.

    Returns:
        The status with its details.
    """
    code, message = status_of(exc)
    details = []
    if isinstance(exc, MONAILabelException):
        if exc.violations:
            details.append(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=scrub(f, MAX_DETAIL_CHARS),
                                                            description=scrub(d, MAX_DETAIL_CHARS))
                for f, d in exc.violations[:16]
            ]))
        if exc.resource is not None:
            details.append(error_details_pb2.ResourceInfo(
                resource_type=exc.resource[0], resource_name=scrub(exc.resource[1], MAX_DETAIL_CHARS)))
        if exc.retry_after_s is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(max(0.0, exc.retry_after_s) * 1e9))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        if exc.reason:
            details.append(error_details_pb2.ErrorInfo(
                reason=exc.reason, domain=ERROR_DOMAIN,
                metadata={k: scrub(str(v), MAX_DETAIL_CHARS) for k, v in list(exc.metadata.items())[:16]}))
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=_CODE_NUMBER[code], message=scrub(message), details=packed)


_CODE_NUMBER = {c: int(c.value[0]) for c in grpc.StatusCode}
assert _CODE_NUMBER[grpc.StatusCode.INVALID_ARGUMENT] == code_pb2.INVALID_ARGUMENT


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Returns the status code and message that a client sees for an exception.

    Args:
        exc: what was raised while serving a call.

    Returns:
        The code and the message.
    """
    if isinstance(exc, MONAILabelException):
        return STATUS_BY_ERROR.get(exc.error, grpc.StatusCode.INTERNAL), exc.msg
    if _is_out_of_memory(exc):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"out of device memory: {str(exc).splitlines()[0]}"
    if _is_disk_full(exc):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "the server's disk is full; try again once space is freed"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def _is_disk_full(exc: BaseException) -> bool:
    cause: Optional[BaseException] = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        cause = cause.__cause__
    return False


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch

        return isinstance(exc, torch.cuda.OutOfMemoryError)
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def _abort(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    if isinstance(exc, grpc.RpcError) and not context.is_active():
        # the request stream ended because the call did (the client went away, or the stream guard
        # ended it as idle): the client has its status already, and there is no bug to log
        logger.info("%s: the call ended while reading the client's stream", method)
        raise exc
    status = rich_status(exc)
    code = grpc.StatusCode.INTERNAL if status.code == code_pb2.INTERNAL else None
    if code is not None:
        logger.exception("%s failed", method, exc_info=exc)
    elif _is_disk_full(exc):
        logger.error("%s: %s", method, exc)  # the operator's problem, not the client's
    else:
        logger.info("%s: %s: %s", method, code_pb2.Code.Name(status.code), status.message)
    if _is_out_of_memory(exc):
        import torch

        torch.cuda.empty_cache()
    context.abort_with_status(rpc_status.to_status(status))


def _wrap_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    @functools.wraps(behavior)  # keeps attributes grpc reads from a handler (its thread pool)
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except Exception as exc:  # noqa: BLE001 - this is the mapping point
            if _already_aborted(context):
                raise
            _abort(context, exc, method)

    return handler


def _wrap_stream(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
    @functools.wraps(behavior)
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except Exception as exc:  # noqa: BLE001 - this is the mapping point
            if _already_aborted(context):
                raise
            _abort(context, exc, method)

    return handler


def _already_aborted(context: grpc.ServicerContext) -> bool:
    state = getattr(context, "_state", None)
    return bool(getattr(state, "aborted", False))


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps exceptions raised by any handler to gRPC status codes."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Optional[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Optional[grpc.RpcMethodHandler[Any, Any]]:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if any(getattr(b, "experimental_non_blocking", False) for b in (handler.unary_stream, handler.stream_stream)):
            # a non-blocking stream (health Watch) answers through a callback grpc passes it; a wrapper
            # would have to pass that on, and such handlers raise no MONAILabelException to map
            return handler
        if handler.unary_unary:
            return replaced_handler(handler, unary_unary=_wrap_unary(handler.unary_unary, method))
        if handler.stream_unary:
            return replaced_handler(handler, stream_unary=_wrap_unary(handler.stream_unary, method))
        if handler.unary_stream:
            return replaced_handler(handler, unary_stream=_wrap_stream(handler.unary_stream, method))
        if handler.stream_stream:
            return replaced_handler(handler, stream_stream=_wrap_stream(handler.stream_stream, method))
        return handler


def replaced_handler(handler: grpc.RpcMethodHandler[Any, Any], **changes: Any) -> grpc.RpcMethodHandler[Any, Any]:
    """A method handler with some of its parts replaced (grpc's handlers are named tuples).

    Args:
        handler: the handler an interceptor's continuation returned.
        **changes: the parts to replace, as ``unary_unary=wrapped``.

    Returns:
        The new handler.
    """
    return cast("grpc.RpcMethodHandler[Any, Any]", handler._replace(**changes))  # type: ignore[attr-defined]

