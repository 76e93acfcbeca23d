"""Model workers: infer tasks run here, never on an RPC thread, with bounded admission and cancellation."""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional, TypeVar

import grpc

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = ["ModelWorkers", "CallCancel"]

T = TypeVar("T")


class CallCancel:
    """Tells model work that its caller went away (cancelled the call or passed its deadline).

    Args:
        context: the RPC's context.
    """

    def __init__(self, context: grpc.ServicerContext) -> None:
        self.event = threading.Event()
        context.add_callback(self.event.set)
        self._context = context

    def __call__(self) -> bool:
        """Returns True once the call is no longer active."""
        return self.event.is_set() or not self._context.is_active()


class ModelWorkers:
    """A fixed pool of model threads with a bounded queue.

    Args:
        workers: threads that run model work.
        max_queue: calls that may wait beyond the busy workers before RESOURCE_EXHAUSTED.
    """

    def __init__(self, workers: int, max_queue: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="model")
        self._slots = threading.BoundedSemaphore(max(1, workers) + max(0, max_queue))
        self._limit = max(1, workers) + max(0, max_queue)
        self.on_wait: Optional[Callable[[float], None]] = None  # told how long each call waited (metrics)

    def run(self, fn: Callable[[], T], cancel: Callable[[], bool]) -> tuple[T, float]:
        """Runs ``fn`` on a model thread and waits for it while the caller is there.

        Args:
            fn: the work; it should itself check ``cancel`` to stop early.
            cancel: the call's cancellation.

        Returns:
            What ``fn`` returned, and the seconds it waited for a worker.

        Raises:
            MONAILabelException: RESOURCE_EXHAUSTED when the queue is full, CANCELLED when the caller left.
        """
        if not self._slots.acquire(blocking=False):
            raise MONAILabelException(
                MONAILabelError.RESOURCE_EXHAUSTED,
                f"all {self._limit} model slots are taken (running and queued); retry later",
            )
        queued_at = time.perf_counter()
        started: list[float] = []

        def job() -> T:
            started.append(time.perf_counter())
            if cancel():
                raise MONAILabelException(MONAILabelError.CANCELLED, "the call was cancelled before it ran")
            return fn()

        try:
            # the call's context (its request id) goes with the work onto the model thread
            future: Future[T] = self._pool.submit(contextvars.copy_context().run, job)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        result = future.result()
        waited = (started[0] - queued_at) if started else 0.0
        if self.on_wait is not None:
            self.on_wait(waited)
        return result, waited

    def usage(self) -> tuple[int, int]:
        """Returns the slots in use (running and queued work) and the slots there are."""
        return self._limit - self._slots._value, self._limit

    def shutdown(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        """Stops accepting work and, with ``wait``, lets running work end."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
