"""What operators see: Prometheus metrics (``--metrics-port``) and JSON log lines with a request id.

Every RPC is counted and timed by method and final status code, and the bytes clients stream in are
counted by method. Gauges are read when Prometheus scrapes: model slots in use (running and queued
infer work), interactive sessions and the memory they hold, jobs by state (the database's view, so
every replica reports the cluster's jobs), partial uploads and their committed bytes, and GPU memory
when there is a GPU. Each server has its own registry, so several servers in one process do not mix.

Each call gets a request id: the client's ``x-request-id`` metadata when it sends one, else a fresh
one. It is kept in a context variable for the call (model work inherits it), and the JSON log format
(``--log-format json``) writes it, with the method, on every line logged during the call.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from monailabel_server.errors import replaced_handler
from monailabel_server.streams import HEALTH_METHODS

__all__ = ["Metrics", "MetricsInterceptor", "JsonFormatter", "request_id", "configure_logging", "REQUEST_ID_KEY"]

#: the metadata key that carries a request id
REQUEST_ID_KEY = "x-request-id"
_MAX_REQUEST_ID = 128
_request: contextvars.ContextVar[Tuple[str, str]] = contextvars.ContextVar("monailabel_request", default=("", ""))


def request_id() -> str:
    """The id of the call this code runs for ("" outside a call)."""
    return _request.get()[0]


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON object: time, level, logger, message, request id and method."""

    def format(self, record: logging.LogRecord) -> str:
        rid, method = _request.get()
        line: Dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if rid:
            line.update(request_id=rid, method=method)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """Sets up the root logger: ``text`` (human lines) or ``json`` (one object per line, with request ids).

    Args:
        level: DEBUG, INFO, WARNING or ERROR.
        fmt: ``text`` or ``json``.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        logging.Formatter.converter = time.gmtime
    else:
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


class Metrics:
    """One server's metrics registry and the gauges read at scrape time.

    Attributes:
        registry: the Prometheus registry.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpcs = Counter("monailabel_rpc", "RPCs served, by method and status code", ["method", "code"],
                            registry=self.registry)
        self.latency = Histogram(
            "monailabel_rpc_duration_seconds", "RPC duration, by method and status code", ["method", "code"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=self.registry,
        )
        self.received = Counter("monailabel_rpc_received_bytes", "Bytes of streamed request messages, by method",
                                ["method"], registry=self.registry)
        self.model_wait = Histogram("monailabel_model_queue_wait_seconds", "Seconds infer work waited for a model "
                                    "worker", buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30), registry=self.registry)
        self.batch_size = Histogram("monailabel_infer_batch_size", "Requests per network forward (dynamic batching)",
                                    buckets=(1, 2, 4, 8, 16, 32), registry=self.registry)
        self._sources: Dict[str, Callable[[], Any]] = {}
        self.registry.register(_Gauges(self._sources))
        self._http: Optional[Any] = None

    def source(self, name: str, read: Callable[[], Any]) -> None:
        """Adds a gauge source, read at scrape time.

        Args:
            name: ``model_slots``, ``sessions``, ``session_devices``, ``jobs`` or ``uploads``.
            read: returns the source's current values.
        """
        self._sources[name] = read

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Serves ``/metrics`` over HTTP on ``port`` (0 picks one); returns the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        """Stops the HTTP endpoint."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _Gauges:
    """Reads the gauge sources when Prometheus scrapes."""

    def __init__(self, sources: Dict[str, Callable[[], Any]]) -> None:
        self.sources = sources

    def describe(self) -> List[Any]:
        return []  # values come from live objects: never describe (so registration reads nothing)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        read = self.sources
        if "model_slots" in read:
            used, limit = read["model_slots"]()
            yield GaugeMetricFamily("monailabel_model_slots_in_use", "Infer calls running or queued", value=used)
            yield GaugeMetricFamily("monailabel_model_slots", "Infer calls that may run or queue at once",
                                    value=limit)
        if "sessions" in read:
            count, held = read["sessions"]()
            yield GaugeMetricFamily("monailabel_sessions", "Interactive sessions held", value=count)
            yield GaugeMetricFamily("monailabel_session_bytes", "Memory interactive sessions hold", value=held)
        if "session_devices" in read:
            family = GaugeMetricFamily("monailabel_session_device_bytes", "Memory interactive sessions hold, by "
                                       "where their volumes live (cpu: host memory)", labels=["device"])
            for device, held in sorted(read["session_devices"]().items()):
                family.add_metric([device], held)
            yield family
        if "jobs" in read:
            family = GaugeMetricFamily("monailabel_jobs", "Jobs by kind and state (every replica's)",
                                       labels=["kind", "state"])
            for (kind, state), n in sorted(read["jobs"]().items()):
                family.add_metric([kind, state], n)
            yield family
        if "uploads" in read:
            count, committed = read["uploads"]()
            yield GaugeMetricFamily("monailabel_partial_uploads", "Partial uploads kept for a resume", value=count)
            yield GaugeMetricFamily("monailabel_partial_upload_bytes", "Bytes partial uploads have committed",
                                    value=committed)
        gpu = _gpu_memory()
        if gpu:
            family = GaugeMetricFamily("monailabel_gpu_memory_allocated_bytes", "GPU memory tensors hold",
                                       labels=["device"])
            for device, allocated in gpu.items():
                family.add_metric([device], allocated)
            yield family


def _gpu_memory() -> Dict[str, int]:
    try:
        import torch

        if not torch.cuda.is_available():
            return {}
        return {f"cuda:{i}": int(torch.cuda.memory_allocated(i)) for i in range(torch.cuda.device_count())}
    except Exception:  # noqa: BLE001 - a scrape must not fail for want of a GPU
        return {}


class _Counted:
    """A request stream that counts the bytes of the messages it yields."""

    def __init__(self, requests: Iterator[Any], counter: Any) -> None:
        self._requests = requests
        self._counter = counter

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        message = next(self._requests)
        size = getattr(message, "ByteSize", None)
        # the chunk codec hands over chunks it parsed itself (not protobuf messages): count their data
        self._counter.inc(size() if callable(size) else len(getattr(getattr(message, "chunk", None), "data", b"")))
        return message


def _reset(token: contextvars.Token[Tuple[str, str]]) -> None:
    try:
        _request.reset(token)
    except ValueError:  # a stream closed from another context (its generator collected elsewhere)
        _request.set(("", ""))


class MetricsInterceptor(grpc.ServerInterceptor):
    """Sets each call's request id, and counts and times it by method and final status code.

    Args:
        metrics: where the numbers go.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._local = threading.local()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Optional[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Optional[grpc.RpcMethodHandler[Any, Any]]:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in HEALTH_METHODS:  # health has its own threads (see streams.StreamGuard)
            return handler
        given = dict(handler_call_details.invocation_metadata or ()).get(REQUEST_ID_KEY, "")
        rid = given if isinstance(given, str) and 0 < len(given) <= _MAX_REQUEST_ID and given.isprintable() else ""
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if getattr(behavior, "experimental_non_blocking", False):
                return handler  # answers through a callback (the stream guard must see it as such)
            if behavior is not None:
                wrapped = self._wrap(behavior, method, rid, kind.startswith("stream"), kind.endswith("stream"))
                return replaced_handler(handler, **{kind: wrapped})
        return handler

    def _wrap(self, behavior: Callable[..., Any], method: str, given: str, streamed_in: bool,
              streamed_out: bool) -> Callable[..., Any]:
        metrics = self.metrics

        def done(context: grpc.ServicerContext, started: float, failed: bool) -> None:
            code = context.code() if hasattr(context, "code") else None
            if code is None:
                code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            metrics.rpcs.labels(method, name).inc()
            metrics.latency.labels(method, name).observe(time.perf_counter() - started)

        def begin(request: Any) -> Tuple[Any, contextvars.Token[Tuple[str, str]]]:
            token = _request.set((given or uuid.uuid4().hex[:16], method))
            if streamed_in:
                request = _Counted(request, metrics.received.labels(method))
            return request, token

        if streamed_out:
            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started = time.perf_counter()
                request, token = begin(request)
                failed = True
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    done(context, started, failed)
                    _reset(token)

            return stream

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            request, token = begin(request)
            failed = True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                done(context, started, failed)
                _reset(token)

        return unary
