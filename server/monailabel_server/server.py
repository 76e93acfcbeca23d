"""Builds and runs the gRPC server around a loaded app: servicers, errors, health, reflection."""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from monailabel.db import DATABASE_URL_ENV, open_database
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.infer.batching import batcher
from monailabel_api.v1 import (
    app_pb2,
    app_pb2_grpc,
    datastore_pb2,
    datastore_pb2_grpc,
    infer_pb2,
    infer_pb2_grpc,
    job_pb2,
    job_pb2_grpc,
    strategy_pb2,
    strategy_pb2_grpc,
    train_pb2,
    train_pb2_grpc,
)
from monailabel_server import parity
from monailabel_server.app_loader import load_app
from monailabel_server.app_servicer import AppServicer
from monailabel_server.audit import AuditInterceptor, AuditLog, default_path
from monailabel_server.auth import AuthInterceptor, AuthSettings
from monailabel_server.chunks import ChunkCodecInterceptor
from monailabel_server.config import ServerConfig
from monailabel_server.core.uploads import UploadRegistry
from monailabel_server.datastore_servicer import DatastoreServicer
from monailabel_server.errors import ErrorInterceptor
from monailabel_server.health_service import HealthService
from monailabel_server.infer_servicer import InferServicer
from monailabel_server.job_servicer import JobServicer
from monailabel_server.jobs import JobManager
from monailabel_server.memory import retain_freed_memory
from monailabel_server.observability import Metrics, MetricsInterceptor
from monailabel_server.reflection import enable_reflection
from monailabel_server.sampling import NextSampler
from monailabel_server.strategy_servicer import StrategyServicer
from monailabel_server.streams import StreamGuard
from monailabel_server.tls import server_credentials
from monailabel_server.train_servicer import TrainServicer
from monailabel_server.web import EnvoyProcess, start_web
from monailabel_server.workers import ModelWorkers

__all__ = ["RunningServer", "start", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    app_pb2.DESCRIPTOR.services_by_name["AppService"].full_name,
    datastore_pb2.DESCRIPTOR.services_by_name["DatastoreService"].full_name,
    infer_pb2.DESCRIPTOR.services_by_name["InferService"].full_name,
    train_pb2.DESCRIPTOR.services_by_name["TrainService"].full_name,
    strategy_pb2.DESCRIPTOR.services_by_name["StrategyService"].full_name,
    job_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    *parity.SERVICE_NAMES,
)


@dataclass
class RunningServer:
    """A started server.

    Attributes:
        server: the grpc server.
        port: the bound port.
        app: the app it serves.
        workers: its model workers.
        health: its health servicer.
        jobs: its training and scoring jobs.
        config: its settings.
        sampler: its next-sample strategies and leases.
        audit: its audit log.
        guard: its stream idle timeout and stream cap.
        web: Envoy serving the browser port, when ``web_port`` is set.
        uploads: its partial uploads (swept by a daemon until the server stops).
        logs: its log buffer (ServerService.TailLogs), on the root logger while it serves.
        metrics: its Prometheus metrics.
        metrics_port: the port of its ``/metrics`` endpoint (0: none).
    """

    server: grpc.Server
    port: int
    app: MONAILabelApp
    workers: ModelWorkers
    health: HealthService
    jobs: Optional[JobManager] = None
    config: Optional[ServerConfig] = None
    sampler: Optional[NextSampler] = None
    audit: Optional[AuditLog] = None
    guard: Optional[StreamGuard] = None
    metrics: Optional[Metrics] = None
    metrics_port: int = 0
    web: Optional[EnvoyProcess] = None
    logs: Optional[logging.Handler] = None
    uploads: Optional[UploadRegistry] = None

    @property
    def web_port(self) -> int:
        """The browser port (gRPC-Web and Connect); 0 when there is none."""
        return self.web.port if self.web is not None else 0

    @property
    def address(self) -> str:
        """``host:port`` a client on this machine dials."""
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: Optional[float] = 5.0) -> None:
        """Marks the server NOT_SERVING, stops taking calls, lets running ones end within ``grace``."""
        self.health.enter_graceful_shutdown()
        if self.web is not None:
            self.web.stop()
        self.server.stop(grace).wait()
        self.health.close()
        self.workers.shutdown(wait=False)
        self.app.set_job_submitter(None)
        if self.jobs is not None:
            self.jobs.shutdown()
        if self.sampler is not None:
            self.sampler.close()
        if self.audit is not None:
            self.audit.close()
        if self.guard is not None:
            self.guard.close()
        if self.logs is not None:
            logging.getLogger().removeHandler(self.logs)
            self.logs.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.uploads is not None:
            self.uploads.close()


def start(config: ServerConfig, app: Optional[MONAILabelApp] = None) -> RunningServer:
    """Loads the app (unless given) and starts serving it.

    Args:
        config: server settings.
        app: an app already constructed; None loads ``config.app_dir/main.py``.

    Returns:
        The running server.
    """
    # security settings are checked before the (slow) app load, so that a typo fails at once
    auth = config.auth or AuthSettings.from_env(config.conf)
    credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
    if config.web_port >= 0 and credentials is not None:
        raise ValueError("--web-port with TLS is not supported: run Envoy as a sidecar (README) that dials the "
                         "TLS port, or serve the gRPC port in plaintext on a private address")
    if config.reflection not in ("auto", "on", "off"):
        raise ValueError(f"reflection must be auto, on or off, not {config.reflection!r}")
    if config.database:
        open_database(config.database).close()  # unreachable or mistyped: fail now, before the app loads
        os.environ[DATABASE_URL_ENV] = config.database  # the app's datastore opens its index there
    retain_freed_memory(config.retain_memory_mb << 20)  # before the app allocates its models
    if app is None:
        app = load_app(config.app_dir, config.studies, config.conf)
    audit = AuditLog(Path(config.audit_log) if config.audit_log else default_path(config.studies, config.app_dir))
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    # the guard first: stalled streams must not hold every thread, and health checks get their own
    metrics = Metrics()
    guard = StreamGuard(config.stream_idle_timeout_s, config.max_streams)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.rpc_threads, thread_name_prefix="rpc"),
        # the guard first (stalled streams must not hold every thread; health gets its own), then
        # outermost first: metrics and audit see each call's final status; auth runs inside the error mapping
        interceptors=[guard, MetricsInterceptor(metrics), ChunkCodecInterceptor(), AuditInterceptor(audit, auth.enable),
                      ErrorInterceptor(), AuthInterceptor(auth)],
        options=options,
        maximum_concurrent_rpcs=config.rpc_threads * 4,
    )
    workers = ModelWorkers(config.model_threads, config.max_queue)
    workers.on_wait = metrics.model_wait.observe
    batcher.configure(config.batch_wait_ms / 1000.0 if config.batching else 0.0, config.batch_size)
    batcher.on_batch = metrics.batch_size.observe
    jobs = JobManager(app, config.app_dir, config.studies, config.conf, replica_timeout_s=config.replica_timeout_s,
                      heartbeat_s=max(0.2, config.replica_timeout_s / 5), train_nodes=config.train_nodes,
                      node_addr=config.train_node_addr, join_timeout_s=config.train_join_timeout_s)
    jobs.audit = audit
    sampler = NextSampler(app, jobs.store.path.parent / "leases.db", config.lease_ttl_s)
    app_pb2_grpc.add_AppServiceServicer_to_server(AppServicer(app, config), server)
    datastore_servicer = DatastoreServicer(app, config, on_final_label=sampler.release_image)
    # uploads held by a replica stay held while it lives; a dead one's resume anywhere
    datastore_servicer.core.uploads.attach_replica(jobs.replica_id, jobs.replica_alive)
    datastore_pb2_grpc.add_DatastoreServiceServicer_to_server(datastore_servicer, server)
    infer_servicer = InferServicer(app, config, workers, volumes=datastore_servicer.core.take_volume)
    infer_pb2_grpc.add_InferServiceServicer_to_server(infer_servicer, server)
    train_pb2_grpc.add_TrainServiceServicer_to_server(TrainServicer(jobs), server)
    job_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(jobs), server)
    strategy_pb2_grpc.add_StrategyServiceServicer_to_server(StrategyServicer(app, config, sampler, jobs), server)
    logs = parity.add_services(server, app, config, jobs)
    health_servicer = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection == "on" or (config.reflection == "auto" and not auth.enable):
        enable_reflection((*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    address = f"{config.host}:{config.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {config.host}:{config.port}")
    metrics.source("model_slots", workers.usage)
    metrics.source("sessions", lambda: (len(infer_servicer.core.sessions), infer_servicer.core.sessions.held_bytes))
    metrics.source("session_devices", infer_servicer.core.sessions.bytes_by_device)
    metrics.source("jobs", jobs.store.count_by_state)
    metrics.source("uploads", datastore_servicer.core.uploads.stats)
    server.start()
    metrics_port = metrics.serve(config.metrics_port, config.host) if config.metrics_port is not None else 0
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("serving %s on %s:%d (%s, auth %s)", type(app).__name__, config.host, port,
                ("mTLS" if config.tls_client_ca else "TLS") if credentials else "plaintext",
                f"on, realm {auth.realm_uri}" if auth.enable else "off")
    if auth.enable and credentials is None:
        logger.warning("auth is on over a plaintext port: tokens can be read off the network; use --tls-cert")
    # the app's async_scoring / async_training become jobs; then MONAI Label's init hook (scoring, if auto)
    app.set_job_submitter(lambda kind, request: jobs.submit(kind, request, trigger=f"app: {kind} requested"))
    app.on_init_complete()
    running = RunningServer(server, port, app, workers, health_servicer, jobs, config, sampler, audit, guard,
                            metrics=metrics, metrics_port=metrics_port)
    running.logs = logs
    running.uploads = datastore_servicer.core.uploads
    if config.web_port >= 0:
        try:
            running.web = start_web(config.host, port, config.host, config.web_port, config.max_message_bytes)
        except BaseException:
            running.stop(grace=0)
            raise
    return running


def serve(config: ServerConfig) -> None:
    """Starts the server, prints its address, and serves until SIGINT or SIGTERM.

    Args:
        config: server settings.
    """
    running = start(config)
    print(f"monailabel server listening on {config.host}:{running.port}", flush=True)
    if running.web is not None:
        print(f"monailabel browser port (gRPC-Web, Connect) on {config.host}:{running.web_port}", flush=True)
    done = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logger.info("signal %d: draining", signum)
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    done.wait()
    running.stop()
