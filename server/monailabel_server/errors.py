"""The one place where exceptions become gRPC status codes.

Servicers and the SDK raise :class:`MONAILabelException`; this interceptor turns each kind into its
status code with the exception's message. Anything else is a bug: INTERNAL, traceback in the log only.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterator, Optional

import grpc

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = ["ErrorInterceptor", "status_of", "STATUS_BY_ERROR"]

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
}


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
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch

        return isinstance(exc, torch.cuda.OutOfMemoryError)
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def _abort(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        logger.exception("%s failed", method, exc_info=exc)
    else:
        logger.info("%s: %s: %s", method, code.name, message)
    if _is_out_of_memory(exc):
        import torch

        torch.cuda.empty_cache()
    context.abort(code, message)


def _wrap_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except Exception as exc:  # noqa: BLE001 - this is the mapping point
            if _already_aborted(context):
                raise
            _abort(context, exc, method)

    return handler


def _wrap_stream(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
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
        continuation: Callable[[grpc.HandlerCallDetails], Optional[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Optional[grpc.RpcMethodHandler]:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, method))  # type: ignore[attr-defined]
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_unary(handler.stream_unary, method))  # type: ignore[attr-defined]
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap_stream(handler.unary_stream, method))  # type: ignore[attr-defined]
        if handler.stream_stream:
            return handler._replace(stream_stream=_wrap_stream(handler.stream_stream, method))  # type: ignore[attr-defined]
        return handler
