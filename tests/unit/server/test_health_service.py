"""The health service on a real grpc server: watches that close while the server shuts down.

grpcio-health-checking's own servicer froze here: the watches' close callbacks (on grpc's
completion-queue thread) waited for the lock that the NOT_SERVING sends held while they waited on
that same thread. Its first round froze every time on this machine.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Iterator, Tuple

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from monailabel_server.health_service import HealthService

WATCHES = 30
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture()
def served() -> Iterator[Tuple[grpc.Server, HealthService, grpc.Channel]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    service = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(service, server)
    service.set("", SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, service, channel
    finally:
        channel.close()
        server.stop(0).wait(10)
        service.close()


def _shut_down(server: grpc.Server, service: HealthService, within_s: float) -> None:
    """Graceful shutdown as ``RunningServer.stop`` does it, on a thread, bounded."""
    done = threading.Event()

    def stop() -> None:
        service.enter_graceful_shutdown()
        server.stop(1).wait()
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    assert done.wait(within_s), "the server did not stop: a watch's close waited on the health lock"


@pytest.mark.parametrize("round_", range(5))
def test_watches_cancelled_as_the_server_shuts_down_do_not_freeze_it(served, round_: int) -> None:
    server, service, channel = served
    stub = health_pb2_grpc.HealthStub(channel)
    watches = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(WATCHES)]
    assert all(next(w).status == SERVING for w in watches)
    for w in watches:
        w.cancel()
    _shut_down(server, service, within_s=15)


def test_open_watches_hear_not_serving_and_the_server_stops(served) -> None:
    server, service, channel = served
    stub = health_pb2_grpc.HealthStub(channel)
    watches = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(WATCHES)]
    assert all(next(w).status == SERVING for w in watches)
    # half close as the shutdown sends NOT_SERVING to the rest
    for w in watches[::2]:
        w.cancel()
    _shut_down(server, service, within_s=15)
    for w in watches[1::2]:
        assert next(w).status == NOT_SERVING


def _forgotten(service: HealthService, within_s: float = 10.0) -> bool:
    """Whether the service lists no watch of the overall status within ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        with service._lock:
            if not service._send_response_callbacks.get(""):
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def test_a_closed_watch_is_forgotten(served) -> None:
    _, service, channel = served
    stub = health_pb2_grpc.HealthStub(channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
    assert next(watch).status == SERVING
    watch.cancel()
    assert _forgotten(service), "a cancelled watch is still sent statuses"
    # status changes after that reach nobody and do not fail
    service.set("", NOT_SERVING)
    assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == NOT_SERVING


def test_a_watch_whose_call_ended_before_it_registered_is_forgotten() -> None:
    """The race behind a flaky run: the client read the first status and left before the servicer
    added its close callback; grpc then refuses the callback (add_callback returns False)."""

    class EndedCall:
        def add_callback(self, callback) -> bool:  # grpc's answer once the call has terminated
            return False

    service = HealthService()
    try:
        sent: list = []
        service.Watch(health_pb2.HealthCheckRequest(), EndedCall(), sent.append)
        assert sent[0].status == SERVING
        assert _forgotten(service), "the ended watch is still listed"
        assert sent[-1] is None  # told it is closed, as a cancelled watch is
    finally:
        service.close()
