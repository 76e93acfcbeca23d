"""Interactive sessions: a volume decoded once and kept in memory for later infer calls, with an expiry."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

__all__ = ["Session", "SessionStore"]


@dataclass
class Session:
    """A decoded volume.

    Attributes:
        session_id: its id.
        image: the decoded volume (a MONAI MetaTensor with its affine).
        nbytes: memory it holds.
        ttl_s: idle seconds before it expires.
        image_id: the datastore image it came from, if any.
        expires_at: wall-clock time of expiry.
        lock: held while an infer call uses the session.
    """

    session_id: str
    image: Any
    nbytes: int
    ttl_s: int
    image_id: str = ""
    expires_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def touch(self) -> None:
        """Pushes the expiry back by the session's ttl."""
        self.expires_at = time.time() + self.ttl_s


class SessionStore:
    """Holds sessions within a count and memory budget; expired ones are dropped as others are used.

    Args:
        max_sessions: sessions that may exist at once.
        max_bytes: memory all sessions may hold together.
        default_ttl_s: ttl when a request asks for none.
    """

    def __init__(self, max_sessions: int, max_bytes: int, default_ttl_s: int) -> None:
        self._sessions: Dict[str, Session] = {}
        self._lock = threading.Lock()
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.default_ttl_s = default_ttl_s

    def _expire(self) -> None:
        now = time.time()
        for sid in [s.session_id for s in self._sessions.values() if s.expires_at < now]:
            del self._sessions[sid]

    def reserve(self, nbytes: int) -> None:
        """Checks there is room for a session of that size before it is decoded.

        Args:
            nbytes: expected memory.

        Raises:
            MONAILabelException: RESOURCE_EXHAUSTED when count or memory would go over the limits.
        """
        with self._lock:
            self._expire()
            self._check_room(nbytes)

    def _check_room(self, nbytes: int) -> None:
        if len(self._sessions) >= self.max_sessions:
            raise MONAILabelException(
                MONAILabelError.RESOURCE_EXHAUSTED, f"{self.max_sessions} sessions exist; delete one first"
            )
        held = sum(s.nbytes for s in self._sessions.values())
        if held + nbytes > self.max_bytes:
            raise MONAILabelException(
                MONAILabelError.RESOURCE_EXHAUSTED,
                f"sessions hold {held} bytes; {nbytes} more would pass the limit of {self.max_bytes}",
            )

    def add(self, image: Any, nbytes: int, ttl_s: int = 0, image_id: str = "") -> Session:
        """Adds a decoded volume as a new session.

        Args:
            image: the decoded volume.
            nbytes: memory it holds.
            ttl_s: idle seconds before expiry; 0 for the default.
            image_id: the datastore image it came from.

        Returns:
            The session.
        """
        session = Session(uuid.uuid4().hex, image, nbytes, ttl_s if ttl_s > 0 else self.default_ttl_s, image_id)
        session.touch()
        with self._lock:
            self._expire()
            self._check_room(nbytes)
            self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str) -> Session:
        """Returns a live session and extends its expiry.

        Args:
            session_id: its id.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown or expired session.
        """
        with self._lock:
            self._expire()
            session: Optional[Session] = self._sessions.get(session_id)
            if session is None:
                raise MONAILabelException(
                    MONAILabelError.NOT_FOUND, f"session '{session_id}' does not exist or has expired"
                )
            session.touch()
            return session

    def delete(self, session_id: str) -> None:
        """Deletes a session.

        Args:
            session_id: its id.

        Raises:
            MONAILabelException: NOT_FOUND for an unknown session.
        """
        with self._lock:
            if self._sessions.pop(session_id, None) is None:
                raise MONAILabelException(MONAILabelError.NOT_FOUND, f"session '{session_id}' does not exist")

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
