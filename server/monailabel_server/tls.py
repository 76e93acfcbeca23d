"""TLS and mutual TLS for the server port.

``--tls-cert`` and ``--tls-key`` serve TLS; ``--tls-client-ca`` also requires every client to present a
certificate signed by that CA (mTLS). Files are read once at start; a missing or unreadable file stops
the server with a message naming the setting, rather than falling back to plaintext.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import grpc

__all__ = ["server_credentials"]


def _read(path: str, setting: str) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{setting}: {path} is not a PEM file")
    return data


def server_credentials(cert: str = "", key: str = "", client_ca: str = "") -> Optional[grpc.ServerCredentials]:
    """Builds the port's credentials from PEM files (None: no TLS settings, a plaintext port).

    Args:
        cert: the server's certificate chain.
        key: its private key.
        client_ca: CA certificates that sign client certificates; set, clients must present one.

    Returns:
        The credentials, or None when no file is given.

    Raises:
        ValueError: a file is missing, unreadable or not PEM, or a setting is given without its pair.
    """
    if not (cert or key or client_ca):
        return None
    if not (cert and key):
        raise ValueError("TLS needs both --tls-cert and --tls-key (--tls-client-ca alone cannot serve TLS)")
    chain = _read(cert, "--tls-cert")
    private_key = _read(key, "--tls-key")
    roots = _read(client_ca, "--tls-client-ca") if client_ca else None
    return grpc.ssl_server_credentials(
        [(private_key, chain)], root_certificates=roots, require_client_auth=roots is not None
    )
