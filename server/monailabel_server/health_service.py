"""The standard ``grpc.health.v1.Health`` service, safe to shut down while watches close.

grpcio-health-checking removes a closed ``Watch`` from its list in a callback that grpc runs on the
server's single completion-queue thread, and that callback takes the servicer's lock. Sending a
status change (``set``, ``enter_graceful_shutdown``) holds the same lock while it waits for the send
to complete, and only that completion-queue thread can report it complete. A watch that closes while
a status is being sent therefore stops the whole server: a client that cancels its watches just as
the server begins to shut down froze the shutdown for good.

Here the closed watch is removed on a thread of its own, so the completion-queue thread never waits
for the lock. And a watch whose client left before the servicer registered that callback (it sends
the first status first; ``add_callback`` then returns False and the callback never runs) is
forgotten at once instead of staying listed for good. Everything else is the library's.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, Callable, cast

from grpc_health.v1 import health

__all__ = ["HealthService"]

if not callable(getattr(health.HealthServicer, "_on_close_callback", None)):  # pragma: no cover
    raise ImportError("grpcio-health-checking changed how it forgets closed watches: review HealthService")


class HealthService(health.HealthServicer):
    """``HealthServicer`` (non-blocking ``Watch``) whose closed watches are forgotten off grpc's thread."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._closer = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-close")

    def _on_close_callback(self, send_response_callback: Callable[[Any], None], service: str) -> Callable[[], None]:
        forget = super()._on_close_callback(send_response_callback, service)  # type: ignore[misc]  # not in the stubs

        def callback() -> None:
            try:
                self._closer.submit(forget)
            except RuntimeError:  # closed: the server is gone, and with it every watch
                pass

        return callback

    # pylint: disable=arguments-differ
    def Watch(self, request: Any, context: Any, send_response_callback: Any = None) -> Any:  # noqa: N802
        return super().Watch(request, cast(Any, _ForgetIfEnded(context)), send_response_callback)

    def close(self) -> None:
        """Stops the thread that forgets closed watches (after the server stopped)."""
        self._closer.shutdown(wait=False)


class _ForgetIfEnded:
    """A call's context whose ``add_callback`` runs the callback at once when the call has already ended."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def add_callback(self, callback: Callable[[], None]) -> bool:
        added = bool(self._context.add_callback(callback))
        if not added:
            callback()  # hands the forgetting to the closer thread (the caller holds the lock now)
        return added

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
