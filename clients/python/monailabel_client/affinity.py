"""Replica affinity: one random ``x-monailabel-affinity`` value per client, sent with every call.

Behind a load balancer that hashes on it (``deploy/envoy/lb.yaml``), all calls of one client reach the
same server replica, so the interactive sessions it creates (held in that replica's memory) are found
by its later calls. Servers ignore the header.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc

__all__ = ["AFFINITY_KEY", "with_affinity"]

AFFINITY_KEY = "x-monailabel-affinity"


class _Affinity(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, key: str) -> None:
        self.key = key

    def _details(self, details: grpc.ClientCallDetails) -> Any:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k != AFFINITY_KEY]
        metadata.append((AFFINITY_KEY, self.key))
        return details._replace(metadata=metadata)  # type: ignore[attr-defined]

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


def with_affinity(channel: grpc.Channel, key: str = "") -> grpc.Channel:
    """Returns ``channel`` sending ``x-monailabel-affinity: key`` (a fresh random key when empty) on every call."""
    return grpc.intercept_channel(channel, _Affinity(key or uuid.uuid4().hex))
