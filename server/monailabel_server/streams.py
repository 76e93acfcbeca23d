"""Keeps slow or stalled clients from taking the server's RPC threads.

grpcio's sync server runs each call on one thread of a fixed pool until the call ends. A client that
opens a stream and then sends nothing (or stops reading what the server sends) would hold its thread
forever, and as many such clients as there are threads would leave none for anyone, health checks
included. :class:`StreamGuard` prevents that in three ways:

* an idle timeout: a streaming call whose client has sent nothing it was asked for, or has not read
  what it was sent, for ``idle_timeout_s`` is ended with DEADLINE_EXCEEDED and a message saying so.
  Time the server itself spends working (inference, waiting for a job event) does not count. One
  watchdog thread checks every guarded call; a handler blocked on its client wakes when the watchdog
  cancels the call in grpc core (the call's status is sent from there, so the message reaches the
  client even though the handler thread is stuck; a client that stopped reading finds the status
  after the data already in flight, once it reads again).
* a cap on concurrent streaming calls (``max_streams``, below the thread count): one over the cap is
  answered RESOURCE_EXHAUSTED with RetryInfo at once, so unary calls always find a thread.
* a thread pool of their own for the health service, so ``grpc.health.v1.Health/Check`` answers even
  while every request thread is busy.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent import futures
from typing import Any, Callable, Dict, Iterator, Optional

import grpc
from grpc_status import rpc_status

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_server.errors import replaced_handler, rich_status

__all__ = ["StreamGuard", "HEALTH_METHODS", "RETRY_AFTER_S"]

logger = logging.getLogger(__name__)

# methods served by the guard's own threads (grpc's sync server reads this attribute of a handler)
HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
# seconds a client turned away for too many streams is told to wait before it retries
RETRY_AFTER_S = 1.0
_POOL_ATTRIBUTE = "experimental_thread_pool"


class _Call:
    """One guarded streaming call: since when it waits for its client (None while the server works)."""

    __slots__ = ("context", "method", "waiting_since", "waiting_for", "expired")

    def __init__(self, context: grpc.ServicerContext, method: str) -> None:
        self.context = context
        self.method = method
        self.waiting_since: Optional[float] = None
        self.waiting_for = ""
        self.expired = False


class StreamGuard(grpc.ServerInterceptor):
    """Idle timeout and concurrency cap for streaming calls; own threads for health checks.

    Place it first among the server's interceptors, so that its handler for the health methods is the
    one grpc runs (and sees the thread pool set on it).

    Args:
        idle_timeout_s: seconds a stream may wait on its client (to send, or to read) before it is ended.
        max_streams: streaming calls served at once; more are refused with RESOURCE_EXHAUSTED.
        health_threads: threads that serve only the health service.
    """

    def __init__(self, idle_timeout_s: float, max_streams: int, health_threads: int = 2) -> None:
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive, not {idle_timeout_s}")
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, not {max_streams}")
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_streams = max_streams
        self.health_pool = futures.ThreadPoolExecutor(max_workers=health_threads, thread_name_prefix="rpc-health")
        self._lock = threading.Condition()
        self._calls: Dict[int, _Call] = {}
        self._closed = False
        # the watchdog looks a few times per timeout: a stall ends within 1.25 timeouts (or 1 s more)
        self._period = max(0.02, min(1.0, self.idle_timeout_s / 4))
        self._watchdog = threading.Thread(target=self._watch, name="stream-watchdog", daemon=True)
        self._watchdog.start()

    @property
    def active_streams(self) -> int:
        """Streaming calls being served now."""
        with self._lock:
            return len(self._calls)

    def close(self) -> None:
        """Stops the watchdog and the health threads (after the server stopped)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._watchdog.join(timeout=5)
        self.health_pool.shutdown(wait=False)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Optional[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Optional[grpc.RpcMethodHandler[Any, Any]]:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method in HEALTH_METHODS:
            return self._on_health_pool(handler)
        if not (handler.request_streaming or handler.response_streaming):
            return handler
        if any(getattr(b, "experimental_non_blocking", False) for b in (handler.unary_stream, handler.stream_stream)):
            return handler  # answers through a callback and holds no thread while it waits
        if handler.stream_unary:
            guarded = self._guard_unary_response(handler.stream_unary, method)
            return replaced_handler(handler, stream_unary=guarded)
        if handler.unary_stream:
            guarded = self._guard_stream_response(handler.unary_stream, method, request_streaming=False)
            return replaced_handler(handler, unary_stream=guarded)
        if handler.stream_stream:
            guarded = self._guard_stream_response(handler.stream_stream, method, request_streaming=True)
            return replaced_handler(handler, stream_stream=guarded)
        return handler

    # -- health on its own threads ---------------------------------------------------------------

    def _on_health_pool(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        changes = {}
        for kind in ("unary_unary", "unary_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                changes[kind] = _with_pool(behavior, self.health_pool)
        return replaced_handler(handler, **changes)

    # -- guarded streams --------------------------------------------------------------------------

    def _guard_unary_response(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        @functools.wraps(behavior)
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            call = self._admit(context, method)
            try:
                return behavior(_WatchedRequests(request, call, self), context)
            finally:
                self._release(call)

        return handler

    def _guard_stream_response(
        self, behavior: Callable[..., Iterator[Any]], method: str, request_streaming: bool
    ) -> Callable[..., Any]:
        @functools.wraps(behavior)
        def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = self._admit(context, method)
            try:
                if request_streaming:
                    request = _WatchedRequests(request, call, self)
                for response in behavior(request, context):
                    # grpc sends the response while this generator is suspended: time spent there
                    # is time the client takes to read it (flow control holds the send until it does)
                    self._waiting(call, "read nothing the server sent")
                    yield response
                    self._working(call)
            finally:
                self._release(call)

        return handler

    def _admit(self, context: grpc.ServicerContext, method: str) -> _Call:
        call = _Call(context, method)
        with self._lock:
            busy = len(self._calls)
            if busy < self.max_streams:
                self._calls[id(call)] = call
                self._lock.notify_all()  # wakes the watchdog, which sleeps while no stream runs
                return call
        refusal = MONAILabelException(
            MONAILabelError.RESOURCE_EXHAUSTED,
            f"the server is serving {busy} streaming calls, its limit; retry in {RETRY_AFTER_S:g} s",
            retry_after_s=RETRY_AFTER_S,
            reason="TOO_MANY_STREAMS",
            metadata={"max_streams": str(self.max_streams)},
        )
        logger.info("%s refused: %s", method, refusal.msg)
        # this interceptor runs outside the error interceptor, so it sends the rich status itself
        context.abort_with_status(rpc_status.to_status(rich_status(refusal)))
        raise refusal  # not reached: abort_with_status raises

    def _release(self, call: _Call) -> None:
        with self._lock:
            self._calls.pop(id(call), None)

    def _waiting(self, call: _Call, what: str) -> None:
        with self._lock:
            call.waiting_for = what
            call.waiting_since = time.monotonic()

    def _working(self, call: _Call) -> None:
        with self._lock:
            call.waiting_since = None

    def _watch(self) -> None:
        while True:
            with self._lock:
                while not self._calls and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                self._lock.wait(self._period)
                now = time.monotonic()
                idle = [
                    c for c in self._calls.values()
                    if not c.expired and c.waiting_since is not None and now - c.waiting_since >= self.idle_timeout_s
                ]
                for c in idle:
                    c.expired = True
            for c in idle:  # outside the lock: cancelling runs grpc callbacks
                self._expire(c)

    def idle_message(self, call: _Call) -> str:
        """What the client of a call ended as idle is told."""
        return (
            f"stream idle: the client {call.waiting_for} for {self.idle_timeout_s:g} s "
            "(the server's stream_idle_timeout_s), so the server ended the call"
        )

    def _expire(self, call: _Call) -> None:
        message = self.idle_message(call)
        logger.info("%s: %s", call.method, message)
        core_call = getattr(getattr(call.context, "_rpc_event", None), "call", None)
        try:
            # cancelling in grpc core sends this status at once and wakes the blocked handler thread
            from grpc._cython import cygrpc  # type: ignore[attr-defined]

            core_call.cancel(cygrpc.StatusCode.deadline_exceeded, message)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a grpcio without that call: cancel plainly (client sees CANCELLED)
            call.context.cancel()


class _WatchedRequests:
    """A request stream whose waits for the client's next message the watchdog can see (and end)."""

    def __init__(self, requests: Iterator[Any], call: _Call, guard: StreamGuard) -> None:
        self._requests = requests
        self._call = call
        self._guard = guard

    def __iter__(self) -> _WatchedRequests:
        return self

    def __next__(self) -> Any:
        # a call the watchdog ended raises grpc's own RpcError here, as for a client that went away:
        # servicers treat both alike (keep what was committed for a resume, stop)
        self._guard._waiting(self._call, "sent nothing")
        try:
            return next(self._requests)
        except StopIteration:
            if self._call.expired:
                # grpc may see the end of the stream before the cancellation: not a complete stream
                raise MONAILabelException(MONAILabelError.CANCELLED, self._guard.idle_message(self._call),
                                          reason="STREAM_IDLE") from None
            raise
        finally:
            self._guard._working(self._call)


def _with_pool(behavior: Callable[..., Any], pool: futures.ThreadPoolExecutor) -> Callable[..., Any]:
    @functools.wraps(behavior)
    def handler(*args: Any, **kwargs: Any) -> Any:
        return behavior(*args, **kwargs)

    # functools.wraps copied the behavior's own attributes (health Watch's non-blocking flag) too
    setattr(handler, _POOL_ATTRIBUTE, pool)
    return handler
