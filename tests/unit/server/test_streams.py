"""The stream guard on a real grpc server: idle streams end, slow ones do not, the cap, health's own threads.

The server here serves a few test methods (a stream that reads its requests, a stream that sends
1 MiB messages, a unary call that blocks until released) behind the same interceptors as the
MONAI Label server, so each behaviour is seen from a real client over a real port.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Any, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from monailabel_server.errors import ErrorInterceptor
from monailabel_server.streams import RETRY_AFTER_S, StreamGuard

IDLE_S = 1.0
THREADS = 4
MAX_STREAMS = 2


class _Service:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def read_all(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        n = 0
        for message in requests:
            n += len(message)
        return str(n).encode()

    def send_many(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in range(int(request)):
            yield b"x" * (1 << 20)

    def block(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.entered.release()
        self.release.wait(30)
        return b"released"


@pytest.fixture()
def served() -> Iterator[tuple[grpc.Channel, StreamGuard, _Service]]:
    service = _Service()
    guard = StreamGuard(IDLE_S, MAX_STREAMS)
    server = grpc.server(futures.ThreadPoolExecutor(THREADS), interceptors=[guard, ErrorInterceptor()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Guarded", {
        "ReadAll": grpc.stream_unary_rpc_method_handler(service.read_all),
        "SendMany": grpc.unary_stream_rpc_method_handler(service.send_many),
        "Block": grpc.unary_unary_rpc_method_handler(service.block),
    }),))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # no BDP probing: the flow-control window stays at 64 KiB, so an unread 1 MiB message blocks the send
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.http2.bdp_probe", 0)])
    try:
        yield channel, guard, service
    finally:
        service.release.set()
        channel.close()
        server.stop(0).wait()
        guard.close()


def _stalled(release: threading.Event) -> Iterator[bytes]:
    yield b"header"
    release.wait(30)


def _read_all(channel: grpc.Channel) -> Any:
    return channel.stream_unary("/test.Guarded/ReadAll")


def _wait_streams(guard: StreamGuard, n: int) -> None:
    deadline = time.monotonic() + 10
    while guard.active_streams != n:
        assert time.monotonic() < deadline, f"{guard.active_streams} streams active, expected {n}"
        time.sleep(0.01)


def test_a_stream_whose_client_sends_nothing_ends_with_deadline_exceeded(served) -> None:
    channel, guard, _ = served
    release = threading.Event()
    started = time.monotonic()
    future = _read_all(channel).future(_stalled(release))
    with pytest.raises(grpc.RpcError) as info:
        future.result(timeout=IDLE_S * 5)
    elapsed = time.monotonic() - started
    release.set()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "idle" in info.value.details() and "sent nothing" in info.value.details()
    assert IDLE_S <= elapsed < IDLE_S * 5  # the watchdog looks every quarter timeout
    _wait_streams(guard, 0)
    # the thread is free again: a complete stream succeeds
    assert _read_all(channel)(iter([b"abc", b"de"]), timeout=5) == b"5"


def test_a_slow_but_steady_stream_is_not_cut(served) -> None:
    channel, _, _ = served
    pause = threading.Event()

    def slow() -> Iterator[bytes]:
        for _ in range(6):  # 6 gaps of 0.3 idle timeouts: nearly 2 timeouts in all
            pause.wait(IDLE_S * 0.3)
            yield b"ab"

    assert _read_all(channel)(slow(), timeout=30) == b"12"


def test_a_client_that_stops_reading_is_ended(served) -> None:
    channel, guard, _ = served
    call = channel.unary_stream("/test.Guarded/SendMany")(b"50", timeout=30)
    assert len(next(call)) == 1 << 20
    _wait_streams(guard, 1)
    # stop reading: the server's next send fills the window and blocks until the watchdog ends the call
    started = time.monotonic()
    _wait_streams(guard, 0)
    assert time.monotonic() - started < IDLE_S * 3
    # the client learns it once it reads again: what was in flight, then the status
    with pytest.raises(grpc.RpcError) as info:
        for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "read nothing" in info.value.details()


def test_streams_over_the_cap_get_resource_exhausted_with_retry_info(served) -> None:
    channel, guard, _ = served
    release = threading.Event()
    held = [_read_all(channel).future(_stalled(release)) for _ in range(MAX_STREAMS)]
    _wait_streams(guard, MAX_STREAMS)
    with pytest.raises(grpc.RpcError) as info:
        _read_all(channel)(_stalled(release), timeout=5)
    err = info.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(err)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    infos = [d for d in status.details if d.Is(retry.DESCRIPTOR)]
    assert len(infos) == 1 and infos[0].Unpack(retry)
    assert retry.retry_delay.ToNanoseconds() == int(RETRY_AFTER_S * 1e9)
    reason = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(reason) for d in status.details if d.Is(reason.DESCRIPTOR))
    assert reason.reason == "TOO_MANY_STREAMS" and reason.metadata["max_streams"] == str(MAX_STREAMS)
    # unary calls still run while the streams hold their threads
    release.set()
    for future in held:
        assert future.result(timeout=5) == b"6"  # the header each sent


def test_health_answers_while_every_request_thread_is_busy(served) -> None:
    channel, _, service = served
    block = channel.unary_unary("/test.Guarded/Block")
    blocked = [block.future(b"", timeout=30) for _ in range(THREADS + 2)]
    # every request thread holds a blocked call (and two more wait for one)
    for _ in range(THREADS):
        assert service.entered.acquire(timeout=10)
    started = time.monotonic()
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert time.monotonic() - started < 2
    assert not any(f.done() for f in blocked)
    service.release.set()
    assert all(f.result(timeout=10) == b"released" for f in blocked)


def test_health_watch_still_streams_from_its_own_threads(served) -> None:
    channel, guard, _ = served
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    assert guard.active_streams == 0  # not one of the capped streams
    watch.cancel()


@pytest.mark.parametrize(("idle", "streams", "message"), [(0, 4, "idle_timeout_s"), (-1, 4, "idle_timeout_s"),
                                                          (5, 0, "max_streams")])
def test_bad_settings_are_refused_at_start(idle: float, streams: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamGuard(idle, streams)
