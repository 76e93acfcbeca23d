"""Interactive sessions; they live in the core now (:mod:`monailabel_server.core.sessions`)."""

from monailabel_server.core.sessions import Reservation, Session, SessionStore

__all__ = ["Reservation", "Session", "SessionStore"]
