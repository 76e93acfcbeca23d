"""Interactive sessions: a volume decoded once and kept in memory for later infer calls, with an expiry.

Calls share the session's volume without copying it: each gets a copy-on-write view
(:class:`~monailabel_server.core.volume.CowVolume`), so a pipeline that writes into its input
changes its own pages only. With a GPU the volume may live on the device instead
(:class:`~monailabel_server.core.volume.DeviceVolume`, ``--session-device``), each call getting a
device copy of it.

Sessions are the one place where a client makes the server hold memory between calls, so every
session is paid for up front: its decoded size is reserved against the store's budget before the
volume is decoded (:meth:`SessionStore.reserve`), its idle time is capped (``max_ttl_s``), and a
sweeper thread drops expired sessions even when no call comes to notice them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_server.core.volume import CowVolume, DeviceVolume, choose_session_device, free_cuda_bytes
from monailabel_server.validation import check_id

__all__ = ["Session", "SessionStore", "Reservation", "SWEEP_INTERVAL_S"]

logger = logging.getLogger(__name__)

#: How often the sweeper looks for expired sessions.
SWEEP_INTERVAL_S = 5.0


@dataclass
class Session:
    """A decoded volume.

    Attributes:
        session_id: its id.
        image: the decoded volume (a MONAI MetaTensor with its affine), a view of ``volume`` when
            there is one: read it, never write it.
        nbytes: memory it holds.
        ttl_s: idle seconds before it expires.
        image_id: the datastore image it came from, if any.
        expires_at: wall-clock time of expiry.
        lock: held while the volume is read whole (downloads).
        volume: the voxels in shared memory (each call's view of them is copy-on-write), or on a
            device (each call gets a device copy).
    """

    session_id: str
    image: Any
    nbytes: int
    ttl_s: int
    image_id: str = ""
    expires_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    volume: Union[CowVolume, DeviceVolume, None] = None

    def shared(self, device: str = "") -> Any:
        """The volume for one call, the call's own to write into.

        Args:
            device: where the call wants it; a session on a GPU hands ``cpu`` a host copy, any other
                value a copy on its own device.

        Returns:
            A copy-on-write view of the memfd, or a copy on the session's device.
        """
        if isinstance(self.volume, DeviceVolume):
            return self.volume.view("cpu" if device == "cpu" else None)
        if self.volume is not None:
            return self.volume.view()
        with self.lock:
            return self.image.clone()

    @property
    def device(self) -> str:
        """Where the volume lives: ``cpu`` (shared memory) or the CUDA device, e.g. ``cuda:0``."""
        return self.volume.device if isinstance(self.volume, DeviceVolume) else "cpu"

    def touch(self) -> None:
        """Pushes the expiry back by the session's ttl."""
        self.expires_at = time.time() + self.ttl_s

    @property
    def spatial_shape(self) -> Tuple[int, ...]:
        """The volume's shape (spatial axes first, as MONAI's LoadImage returns it)."""
        return tuple(int(s) for s in self.image.shape)


class Reservation:
    """Memory set aside for a session being decoded; released unless :meth:`SessionStore.add` takes it."""

    def __init__(self, store: SessionStore, nbytes: int) -> None:
        self.store = store
        self.nbytes = nbytes
        self.open = True

    def release(self) -> None:
        """Gives the memory back (nothing when already taken or released)."""
        self.store._release(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class SessionStore:
    """Holds sessions within a count and memory budget; expired sessions are dropped.

    Args:
        max_sessions: sessions that may exist at once.
        max_bytes: memory all sessions may hold together (decoded sizes, reservations included).
        default_ttl_s: ttl when a request asks for none.
        max_ttl_s: the longest ttl a request may have; longer requests are clamped to it.
        sweep_interval_s: how often expired sessions are dropped; 0 for no sweeper thread.
        device: where volumes live: ``auto`` (on the GPU when its free memory allows, see
            :func:`~monailabel_server.core.volume.choose_session_device`), ``cpu`` or ``cuda``.
    """

    def __init__(self, max_sessions: int, max_bytes: int, default_ttl_s: int, max_ttl_s: int = 3600,
                 sweep_interval_s: float = SWEEP_INTERVAL_S, device: str = "auto") -> None:
        self._sessions: Dict[str, Session] = {}
        self._reserved = 0
        self._lock = threading.Lock()
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.device = device
        self.max_ttl_s = max(1, max_ttl_s)
        self.default_ttl_s = min(max(1, default_ttl_s), self.max_ttl_s)
        self._stop = threading.Event()
        if sweep_interval_s > 0:
            threading.Thread(target=_sweep, args=(weakref.ref(self), self._stop, sweep_interval_s),
                             name="session-sweeper", daemon=True).start()

    # -- budget -----------------------------------------------------------------------------------
    def ttl_for(self, requested_s: int) -> int:
        """The ttl a session gets: the default for 0, else the request clamped to ``max_ttl_s``.

        Raises:
            MONAILabelException: INVALID_INPUT for a negative ttl.
        """
        if requested_s < 0:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "ttl must not be negative",
                                      field="header.ttl")
        return self.default_ttl_s if requested_s == 0 else min(int(requested_s), self.max_ttl_s)

    def reserve(self, nbytes: int) -> Reservation:
        """Sets memory aside for a session before its volume is decoded.

        Args:
            nbytes: the decoded size.

        Returns:
            The reservation (release it, or pass it to :meth:`add`).

        Raises:
            MONAILabelException: RESOURCE_EXHAUSTED when count or memory would pass the limits,
                with the time until the next session expires as the retry delay.
        """
        with self._lock:
            self._expire()
            self._check_room(nbytes)
            self._reserved += nbytes
            return Reservation(self, nbytes)

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation.open:
                reservation.open = False
                self._reserved -= reservation.nbytes

    def _held(self) -> int:
        return sum(s.nbytes for s in self._sessions.values()) + self._reserved

    def _retry_after(self) -> Optional[float]:
        if not self._sessions:
            return None
        return max(0.0, min(s.expires_at for s in self._sessions.values()) - time.time())

    def _check_room(self, nbytes: int) -> None:
        if len(self._sessions) >= self.max_sessions:
            raise MONAILabelException(
                MONAILabelError.RESOURCE_EXHAUSTED,
                f"{self.max_sessions} sessions exist; delete one or wait for one to expire",
                retry_after_s=self._retry_after(), reason="SESSION_LIMIT",
            )
        if nbytes > self.max_bytes:
            raise MONAILabelException(
                MONAILabelError.RESOURCE_EXHAUSTED,
                f"the decoded volume needs {nbytes} bytes; sessions may hold {self.max_bytes} in all",
                reason="SESSION_MEMORY",
            )
        held = self._held()
        if held + nbytes > self.max_bytes:
            raise MONAILabelException(
                MONAILabelError.RESOURCE_EXHAUSTED,
                f"sessions hold {held} bytes; {nbytes} more would pass the limit of {self.max_bytes}",
                retry_after_s=self._retry_after(), reason="SESSION_MEMORY",
            )

    # -- sessions ---------------------------------------------------------------------------------
    def add(self, image: Any, reservation: Reservation, ttl_s: int, image_id: str = "") -> Session:
        """Adds a decoded volume as a new session, in the memory its reservation set aside.

        Args:
            image: the decoded volume.
            reservation: from :meth:`reserve`, for the volume's decoded size.
            ttl_s: idle seconds before expiry (from :meth:`ttl_for`).
            image_id: the datastore image it came from.

        Returns:
            The session.
        """
        volume = self._place(image, reservation.nbytes) if isinstance(image, (torch.Tensor, np.ndarray)) else None
        held = volume.image() if isinstance(volume, DeviceVolume) else volume.view() if volume is not None else image
        session = Session(uuid.uuid4().hex, held, reservation.nbytes, ttl_s, image_id, volume=volume)
        session.touch()
        with self._lock:
            if not reservation.open:
                raise MONAILabelException(MONAILabelError.CONFLICT, "the session's reservation was released")
            reservation.open = False
            self._reserved -= reservation.nbytes
            self._sessions[session.session_id] = session
        return session

    def _place(self, image: Any, nbytes: int) -> Union[CowVolume, DeviceVolume]:
        """The volume on the GPU when :attr:`device` and the free memory allow, else in a memfd."""
        if self.device != "cpu" and choose_session_device(self.device, nbytes, free_cuda_bytes()) == "cuda":
            try:
                return DeviceVolume(image, self._cuda_device())
            except torch.cuda.OutOfMemoryError:  # another session or call took the memory meanwhile
                torch.cuda.empty_cache()
                logger.warning("session volume of %d bytes: no room on the GPU after all; kept in host memory",
                               nbytes)
        elif self.device == "cuda":
            logger.warning("session volume of %d bytes: too large for the GPU's free memory; kept in host memory",
                           nbytes)
        return CowVolume(image)

    @staticmethod
    def _cuda_device() -> str:
        """The CUDA device volumes go to: the current one (the one ``cuda`` means in a request)."""
        return f"cuda:{torch.cuda.current_device()}"

    def get(self, session_id: str, field_name: str = "session_id") -> Session:
        """Returns a live session and extends its expiry.

        Args:
            session_id: its id.
            field_name: the request field it came in, for errors.

        Raises:
            MONAILabelException: INVALID_INPUT for a malformed id, NOT_FOUND for an unknown or
                expired session.
        """
        check_id(session_id, field_name)
        with self._lock:
            self._expire()
            session: Optional[Session] = self._sessions.get(session_id)
            if session is None:
                # behind a load balancer the call may also have reached another replica than the one
                # holding the session (sessions live in one replica's memory): either way, create it again
                raise MONAILabelException(MONAILabelError.NOT_FOUND,
                                          f"session '{session_id}' does not exist or has expired (or is held by "
                                          "another server replica); create the session again",
                                          resource=("session", session_id), reason="SESSION_NOT_FOUND")
            session.touch()
            return session

    def delete(self, session_id: str, field_name: str = "session_id") -> None:
        """Deletes a session.

        Raises:
            MONAILabelException: INVALID_INPUT for a malformed id, NOT_FOUND for an unknown session.
        """
        check_id(session_id, field_name)
        with self._lock:
            if self._sessions.pop(session_id, None) is None:
                raise MONAILabelException(MONAILabelError.NOT_FOUND, f"session '{session_id}' does not exist",
                                          resource=("session", session_id))

    def sweep(self) -> int:
        """Drops expired sessions now; returns how many."""
        with self._lock:
            return self._expire()

    def _expire(self) -> int:
        now = time.time()
        expired = [sid for sid, s in self._sessions.items() if s.expires_at < now]
        for sid in expired:
            del self._sessions[sid]
        return len(expired)

    def bytes_by_device(self) -> Dict[str, int]:
        """Memory sessions hold, by where their volumes live (``cpu``, ``cuda:0`` ...)."""
        with self._lock:
            out: Dict[str, int] = {}
            for s in self._sessions.values():
                out[s.device] = out.get(s.device, 0) + s.nbytes
            return out

    @property
    def held_bytes(self) -> int:
        """Memory sessions and reservations hold."""
        with self._lock:
            return self._held()

    def close(self) -> None:
        """Stops the sweeper and drops every session."""
        self._stop.set()
        with self._lock:
            self._sessions.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        with self._lock:
            return iter(list(self._sessions.values()))


def _sweep(ref: weakref.ref[SessionStore], stop: threading.Event, interval: float) -> None:
    """Drops expired sessions every ``interval`` seconds until the store is closed or collected."""
    while not stop.wait(interval):
        store = ref()
        if store is None:
            return
        store.sweep()
        del store
