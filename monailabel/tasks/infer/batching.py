"""Dynamic batching of network forwards, as Triton does it: requests for the same network that reach the
forward within a bounded wait run as one batch.

A request's pre-transformed input (batch axis of one) joins the open batch of its key: the network,
the inferer's type and settings, the input's shape, dtype and device, and the caller's autocast
state. The first request opens the batch and sets its deadline (``wait_s`` later); the batch runs
when it is full (``max_size``) or at the deadline, on the thread of whichever member gets there
first; each member takes its own slice of the output. A member cancelled while it waits leaves the
batch; the forward itself skips only when every member is cancelled. Forwards of one network never
overlap (batched or not), so memory stays that of one forward at a time.

Off (``wait_s == 0`` or ``max_size <= 1``) every request runs alone, as before. The server turns it
on from ``--batch-wait-ms`` / ``--max-batch-size``; a task opts out with ``batchable = False``.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional

import torch

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.infer._device import autocast_state

__all__ = ["Batcher", "batcher"]

Predict = Callable[[Any, Any], Any]


@dataclass
class _Member:
    inputs: torch.Tensor
    cancel: Optional[Callable[[], bool]]
    done: threading.Event = field(default_factory=threading.Event)
    output: Any = None
    error: Optional[BaseException] = None

    def cancelled(self) -> bool:
        return bool(self.cancel is not None and self.cancel())


@dataclass
class _Batch:
    deadline: float
    members: List[_Member] = field(default_factory=list)
    closed: bool = False


def _describe(value: Any) -> Hashable:
    """A hashable description of an inferer's settings (two inferers with equal settings batch together)."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_describe(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _describe(v)) for k, v in value.items()))
    if isinstance(value, torch.device):
        return str(value)
    return type(value).__qualname__ if not callable(value) else repr(value)


class Batcher:
    """Groups concurrent forwards of one network into batches.

    Args:
        wait_s: how long the first request of a batch waits for others.
        max_size: the most requests in one batch.
    """

    def __init__(self, wait_s: float = 0.0, max_size: int = 1) -> None:
        self.wait_s = wait_s
        self.max_size = max_size
        self._lock = threading.Lock()
        self._open: Dict[Hashable, _Batch] = {}
        self._forward_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
        self.on_batch: Optional[Callable[[int], None]] = None  # told each batch's size (metrics)

    def configure(self, wait_s: float, max_size: int) -> None:
        """Sets the wait and the batch size (0 / 1 turn batching off)."""
        self.wait_s, self.max_size = max(0.0, wait_s), max(1, max_size)

    @property
    def enabled(self) -> bool:
        """Whether requests are batched at all."""
        return self.wait_s > 0 and self.max_size > 1

    def _forward_lock(self, network: Any) -> threading.Lock:
        with self._lock:
            lock = self._forward_locks.get(network)
            if lock is None:
                lock = self._forward_locks[network] = threading.Lock()
            return lock

    def run(self, network: Any, inferer: Any, inputs: torch.Tensor, predictor: Predict,
            cancel: Optional[Callable[[], bool]] = None) -> Any:
        """Runs ``inferer(inputs, predictor)``, in a batch with other requests when they can join.

        Args:
            network: the network (requests batch only with others for the same one).
            inferer: the task's inferer for this input.
            inputs: the input, batch axis first, of size 1 to batch.
            predictor: what the inferer calls (the network, or a cancellable wrapper of it).
            cancel: returns True once the caller is gone.

        Returns:
            The inferer's output for ``inputs`` (batch axis of one).

        Raises:
            MONAILabelException: CANCELLED when the caller left while waiting; what the forward raised.
        """
        if not self.enabled or inputs.shape[0] != 1:
            with self._forward_lock(network):
                return inferer(inputs, predictor)
        try:
            # the forward runs on one member's thread: members must share its autocast state (AMP)
            key: Hashable = (id(network), type(inferer).__qualname__, _describe(vars(inferer)), tuple(inputs.shape),
                             inputs.dtype, str(inputs.device), autocast_state(inputs.device))
        except TypeError:
            with self._forward_lock(network):
                return inferer(inputs, predictor)
        member = _Member(inputs, cancel)
        batch = self._join(key, member)
        while not member.done.is_set():
            remaining = batch.deadline - time.monotonic()
            if remaining > 0 and not batch.closed:
                member.done.wait(min(remaining, 0.05))
                if member.cancelled() and self._leave(key, batch, member):
                    raise MONAILabelException(MONAILabelError.CANCELLED, "Request cancelled by the caller (batch)")
                continue
            if self._close(key, batch):
                self._forward(network, inferer, batch.members)
            else:
                member.done.wait(0.05)
        if member.error is not None:
            raise member.error
        return member.output

    def _join(self, key: Hashable, member: _Member) -> _Batch:
        with self._lock:
            batch = self._open.get(key)
            if batch is None or batch.closed:
                batch = self._open[key] = _Batch(time.monotonic() + self.wait_s)
            batch.members.append(member)
            if len(batch.members) >= self.max_size:
                batch.deadline = 0.0  # full: runs now
            return batch

    def _leave(self, key: Hashable, batch: _Batch, member: _Member) -> bool:
        """Takes a cancelled member out of a batch that has not started; False when it has."""
        with self._lock:
            if batch.closed:
                return False
            batch.members.remove(member)
            if not batch.members and self._open.get(key) is batch:
                del self._open[key]
            return True

    def _close(self, key: Hashable, batch: _Batch) -> bool:
        """Closes the batch for the caller to run it; False when another member has."""
        with self._lock:
            if batch.closed:
                return False
            batch.closed = True
            if self._open.get(key) is batch:
                del self._open[key]
            return True

    def _forward(self, network: Any, inferer: Any, members: List[_Member]) -> None:
        def all_cancelled() -> bool:
            return all(m.cancelled() for m in members)

        def predictor(*args: Any, **kwargs: Any) -> Any:
            if all_cancelled():
                raise MONAILabelException(MONAILabelError.CANCELLED, "Request cancelled by the caller (inferer)")
            return network(*args, **kwargs)

        try:
            with self._forward_lock(network):
                if len(members) == 1:
                    outputs: Any = [inferer(members[0].inputs, predictor)]
                else:
                    joined = inferer(torch.cat([m.inputs for m in members]), predictor)
                    outputs = [joined[i : i + 1] for i in range(len(members))]
            if self.on_batch is not None:
                self.on_batch(len(members))
            for m, out in zip(members, outputs, strict=True):
                m.output = out
        except BaseException as e:  # every member reports what the shared forward raised
            for m in members:
                m.error = e
        finally:
            for m in members:
                m.done.set()


#: the process-wide batcher that ``BasicInferTask`` uses (off until the server configures it)
batcher = Batcher()
