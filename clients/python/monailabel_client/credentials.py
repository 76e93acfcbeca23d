"""Channels to a secured server: TLS (a CA file), mTLS (a client certificate and key), a bearer token.

The token travels as ``authorization: Bearer <token>`` metadata on every call. It may be a string or
a function returning the current one (called per call, so a refreshed token is picked up). Without an
explicit token the client reads ``MONAI_LABEL_TOKEN`` from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple, Union

import grpc

__all__ = ["TOKEN_ENV", "TokenSource", "secure_channel", "with_token"]

TOKEN_ENV = "MONAI_LABEL_TOKEN"
TokenSource = Union[str, Callable[[], str]]
PathLike = Union[str, "os.PathLike[str]"]


class _CallDetails(NamedTuple):
    method: str
    timeout: Optional[float]
    metadata: Optional[Sequence[Tuple[str, Union[str, bytes]]]]
    credentials: Optional[grpc.CallCredentials]
    wait_for_ready: Optional[bool]
    compression: Any


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to each call's metadata."""

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        token = self._token() if callable(self._token) else self._token
        metadata = [(k, v) for k, v in (details.metadata or ()) if k != "authorization"]
        metadata.append(("authorization", f"Bearer {token}"))
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


def _read(path: Optional[PathLike], what: str) -> Optional[bytes]:
    if path is None or path == "":
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def secure_channel(
    address: str,
    *,
    ca_file: Optional[PathLike] = None,
    cert_file: Optional[PathLike] = None,
    key_file: Optional[PathLike] = None,
    server_name: Optional[str] = None,
    options: Sequence[Tuple[str, Any]] = (),
) -> grpc.Channel:
    """Dials a TLS server (mTLS when a client certificate and key are given).

    Args:
        address: ``host:port``.
        ca_file: PEM CA certificates that sign the server's certificate (None: the system's roots).
        cert_file: the client's PEM certificate chain (mTLS).
        key_file: its PEM private key.
        server_name: the name to check the server's certificate against, when it differs from the host.
        options: more channel options.

    Raises:
        ValueError: a file can't be read, or only one of ``cert_file`` and ``key_file`` is given.
    """
    if bool(cert_file) != bool(key_file):
        raise ValueError("a client certificate needs both cert_file and key_file")
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "ca_file"),
        private_key=_read(key_file, "key_file"),
        certificate_chain=_read(cert_file, "cert_file"),
    )
    opts = list(options)
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(address, creds, options=opts)


def with_token(channel: grpc.Channel, token: Optional[TokenSource]) -> grpc.Channel:
    """Returns ``channel`` sending a bearer token on every call (``channel`` itself when token is empty)."""
    if not token:
        return channel
    return grpc.intercept_channel(channel, _BearerToken(token))
