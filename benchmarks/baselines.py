"""Ceilings measured in the same run: a bare grpcio byte stream and a raw TCP socket, each in its own process."""

from __future__ import annotations

import io
import os
import socket
import sys
import tempfile
import time
from concurrent import futures
from typing import Iterator

import grpc

MIB = 1 << 20
_IDENTITY = (lambda b: b, lambda b: b)


def _echo_server(port_file: str) -> None:
    """Runs a bytes-only gRPC server: Sink counts an upload, Source streams N bytes back."""

    def sink(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        total = 0
        for chunk in requests:
            total += len(chunk)
        return str(total).encode()

    def sink_file(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        # as Sink, but every byte is written to a file that is fsync'ed at the end (a durable upload)
        total = 0
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(port_file), prefix="sink-") as f:
            for chunk in requests:
                f.write(chunk)
                total += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        return str(total).encode()

    def source(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        total, block = int(request), b"\x01" * MIB
        for _ in range(total // MIB):
            yield block

    handler = grpc.method_handlers_generic_handler("bench.Echo", {
        "Sink": grpc.stream_unary_rpc_method_handler(sink, *_IDENTITY),
        "SinkFile": grpc.stream_unary_rpc_method_handler(sink_file, *_IDENTITY),
        "Source": grpc.unary_stream_rpc_method_handler(source, *_IDENTITY),
    })
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", 4 * MIB)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with open(port_file, "w") as f:
        f.write(str(port))
    server.wait_for_termination()


def _tcp_server(port_file: str) -> None:
    """Accepts connections and drains each to its end, then answers the byte count."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    with open(port_file, "w") as f:
        f.write(str(srv.getsockname()[1]))
    buf = bytearray(MIB)
    while True:
        conn, _ = srv.accept()
        total = 0
        while n := conn.recv_into(buf):
            total += n
        conn.close()


def grpc_upload(port: int, data: memoryview, durable: bool = False) -> float:
    """Streams ``data`` in 1 MiB chunks to the bare server; returns MB/s.

    With ``durable`` the server writes the bytes to a file and fsyncs it, as any upload that keeps
    them must.
    """
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        sink = ch.stream_unary("/bench.Echo/SinkFile" if durable else "/bench.Echo/Sink", *_IDENTITY)
        sink(iter([b"warm"]))
        t = time.perf_counter()
        n = int(sink(bytes(data[i:i + MIB]) for i in range(0, len(data), MIB)))
        dt = time.perf_counter() - t
    assert n == len(data)
    return len(data) / dt / 1e6


def grpc_download(port: int, size: int, keep: bool = False) -> float:
    """Receives ``size`` bytes in 1 MiB chunks from the bare server; returns MB/s.

    With ``keep`` the bytes are gathered into one ``bytes`` (as a download into memory must), which
    on this kind of machine costs about as much as receiving them: fresh memory is page-faulted in.
    """
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        source = ch.unary_stream("/bench.Echo/Source", *_IDENTITY)
        t = time.perf_counter()
        if keep:
            sink = io.BytesIO()
            for c in source(str(size).encode()):
                sink.write(c)
            n = len(sink.getvalue())
        else:
            n = sum(len(c) for c in source(str(size).encode()))
        dt = time.perf_counter() - t
    assert n == size
    return size / dt / 1e6


def tcp_upload(port: int, data: memoryview) -> float:
    """Sends ``data`` over a raw socket; returns MB/s."""
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
    return len(data) / (time.perf_counter() - t) / 1e6


if __name__ == "__main__":
    {"grpc": _echo_server, "tcp": _tcp_server}[sys.argv[1]](sys.argv[2])
