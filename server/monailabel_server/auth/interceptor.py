"""The one place where calls are authenticated and authorized, and where servicers learn who calls.

``AuthInterceptor`` wraps every handler. The check runs inside the wrapped handler, on the RPC's
own thread, before the servicer sees the request: ``intercept_service`` itself runs on the server's
polling thread, where fetching realm keys would stall every call. It raises
:class:`MONAILabelException` (UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE), which the error
interceptor outside it turns into the status with its details.

Identity: for the length of a call, :func:`current_identity` returns the caller's
:class:`~monailabel_server.auth.tokens.Identity` (None when auth is off or the service is open). It is a
context variable set by the interceptor on the RPC thread, so servicers read it without any change to
their signatures; :func:`stamp_user` and :func:`caller_or` are the two uses they have for it.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any, Callable, Dict, Iterator, Optional

import grpc

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_server.auth.roles import OPEN_SERVICES, Role, rank_of, required_role, role_name
from monailabel_server.auth.settings import AuthSettings
from monailabel_server.auth.tokens import Identity, TokenVerifier
from monailabel_server.errors import replaced_handler

__all__ = ["AuthInterceptor", "current_identity", "stamp_user", "caller_or", "require_role"]

logger = logging.getLogger(__name__)

_CALLER: contextvars.ContextVar[Optional[Identity]] = contextvars.ContextVar("monailabel_caller", default=None)
_SETTINGS: contextvars.ContextVar[Optional[AuthSettings]] = contextvars.ContextVar("monailabel_auth", default=None)


def current_identity() -> Optional[Identity]:
    """Who makes the current call (None when auth is off, or outside a call)."""
    return _CALLER.get()


def set_identity(identity: Optional[Identity]) -> None:
    """Sets the current call's identity (the interceptor's job; the audit log clears it per call)."""
    _CALLER.set(identity)


def stamp_user(info: Dict[str, Any]) -> Dict[str, Any]:
    """Records the authenticated caller as ``info["user"]`` (MONAI Label's field); unchanged when auth is off.

    A client-supplied ``user`` is replaced: with auth on, who made an image or a label is the token's
    user and nobody else.
    """
    identity = current_identity()
    if identity is not None:
        info = dict(info)
        info["user"] = identity.username
    return info


def caller_or(client_id: str) -> str:
    """The name a lease or a session is held under: the authenticated user, else the client's own id."""
    identity = current_identity()
    return identity.username if identity is not None else client_id


def require_role(role: Role) -> None:
    """Raises PERMISSION_DENIED unless the caller holds ``role`` (for checks that depend on the request).

    The interceptor already enforced the RPC's role from the table; a servicer calls this for the
    rare request whose needs go beyond it. No-op when auth is off.
    """
    settings = _SETTINGS.get()
    identity = current_identity()
    if settings is None or identity is None:
        return
    _check_rank(identity, role, settings, "this request")


def _check_rank(identity: Identity, role: Role, settings: AuthSettings, what: str) -> None:
    if rank_of(identity.roles, settings) < role:
        name = role_name(role, settings)
        raise MONAILabelException(
            MONAILabelError.PERMISSION_DENIED,
            f"role '{name}' is required for {what}; user '{identity.username}' does not hold it",
            reason="MISSING_ROLE",
            metadata={"role": name, "user": identity.username},
        )


def _bearer(context: grpc.ServicerContext) -> str:
    values = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    if not values:
        raise MONAILabelException(
            MONAILabelError.UNAUTHENTICATED,
            "authentication required: send 'authorization: Bearer <token>' metadata",
            reason="TOKEN_MISSING",
        )
    value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token.strip():
        raise MONAILabelException(
            MONAILabelError.UNAUTHENTICATED,
            "the authorization metadata must be one 'Bearer <token>'",
            reason="TOKEN_MALFORMED",
        )
    return token.strip()


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks each call's bearer token and the role its RPC needs (:data:`roles.RPC_ROLES`).

    Args:
        settings: the auth settings; with ``enable`` off every call passes with no identity.
        verifier: checks tokens (default: one for ``settings``'s realm).
    """

    def __init__(self, settings: AuthSettings, verifier: Optional[TokenVerifier] = None) -> None:
        self.settings = settings
        self.verifier = verifier or (TokenVerifier(settings) if settings.enable else None)

    def admit(self, method: str, context: grpc.ServicerContext) -> Optional[Identity]:
        """Authenticates and authorizes one call; returns its identity (None when none is needed).

        Raises:
            MONAILabelException: UNAUTHENTICATED, PERMISSION_DENIED or UNAVAILABLE.
        """
        if not self.settings.enable or method.lstrip("/").partition("/")[0] in OPEN_SERVICES:
            return None
        role = required_role(method)
        if role is None:  # fail closed: a method nobody declared is nobody's
            raise MONAILabelException(
                MONAILabelError.PERMISSION_DENIED, f"{method} declares no role", reason="NO_ROLE_DECLARED"
            )
        assert self.verifier is not None
        identity = self.verifier.verify(_bearer(context))
        _CALLER.set(identity)  # known before the role check: the audit log names who was denied
        _check_rank(identity, role, self.settings, method.lstrip("/"))
        return identity

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Optional[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Optional[grpc.RpcMethodHandler[Any, Any]]:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if not self.settings.enable or method.lstrip("/").partition("/")[0] in OPEN_SERVICES:
            # untouched: nothing to check, and health's non-blocking Watch must stay off the request threads
            return handler
        for kind in ("unary_unary", "stream_unary", "unary_stream", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                wrap = self._wrap_stream if handler.response_streaming else self._wrap_unary
                return replaced_handler(handler, **{kind: wrap(behavior, method)})
        return handler

    def _enter(self, method: str, context: grpc.ServicerContext) -> None:
        # set first, then check: a failed check must not leave the thread's previous caller in place
        _CALLER.set(None)
        _SETTINGS.set(self.settings if self.settings.enable else None)
        _CALLER.set(self.admit(method, context))

    def _wrap_unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            self._enter(method, context)
            return behavior(request, context)

        return handler

    def _wrap_stream(self, behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
        def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self._enter(method, context)
            yield from behavior(request, context)

        return handler
