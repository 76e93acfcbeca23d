"""Server settings, with defaults that suit a workstation and a command line that can change each."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional

if TYPE_CHECKING:
    from monailabel_server.auth.settings import AuthSettings

__all__ = ["ServerConfig", "MIB"]

MIB = 1 << 20


@dataclass
class ServerConfig:
    """How the server runs.

    Attributes:
        app_dir: folder holding the app's ``main.py``.
        studies: datastore folder (or URI, for datastores that take one).
        conf: the app's ``--conf KEY VALUE`` pairs.
        host: address to bind.
        port: port to bind; 0 picks a free one.
        rpc_threads: threads that serve RPCs (model work never runs on them).
        model_workers: threads that run infer tasks; more than one only helps with several devices.
        max_queue: infer calls that may wait for a worker before RESOURCE_EXHAUSTED.
        chunk_size: bytes per chunk the server sends.
        max_message_bytes: largest gRPC message accepted (a chunk plus its envelope).
        max_volume_bytes: largest volume an upload or inference may carry.
        session_ttl_s: idle seconds before an interactive session expires, when the client asks for none.
        max_session_ttl_s: the longest idle time a client may ask for; longer requests are clamped to it.
        max_session_bytes: memory all interactive sessions together may hold.
        max_sessions: sessions that may exist at once.
        session_device: where a session's decoded volume lives: ``auto`` on the GPU when CUDA is present
            and its free memory holds the volume, a call's copy and a 2 GiB margin, else in host memory
            (a copy-on-write memfd); ``cpu`` always in host memory; ``cuda`` on the GPU whenever it fits
            (the server refuses to start without CUDA).
        lease_ttl_s: seconds an image served as next sample stays reserved for its client (unless the
            client asks for another or saves a final label first).
        upload_ttl_s: seconds a partial upload (a broken stream) is kept for a resume.
        max_partial_uploads: partial and active uploads that may exist at once.
        tls_cert: PEM certificate chain; with ``tls_key``, the port serves TLS.
        tls_key: PEM private key of ``tls_cert``.
        tls_client_ca: PEM CA certificates; set, clients must present a certificate they sign (mTLS).
        reflection: ``auto`` (on only when auth is off), ``on`` or ``off``.
        audit_log: the audit log file; empty for ``<studies>/.monailabel/logs/audit.log``.
        web_port: the browser port (gRPC-Web and Connect through Envoy, CORS from
            ``MONAI_LABEL_CORS_ORIGINS``); -1 for none, 0 picks a free one.
        auth: authentication settings; None reads ``MONAI_LABEL_AUTH_*`` from ``conf`` and the environment.
        stream_idle_timeout_s: seconds a streaming call may wait on its client (for the next message
            it sends, or to read the one it was sent) before the server ends it (DEADLINE_EXCEEDED).
        reserved_threads: RPC threads kept from streaming calls, so unary calls always find one:
            at most ``rpc_threads - reserved_threads`` streams (at least 1) are served at once.
        database: where shared state lives: "" for SQLite files in the studies folder, or
            ``postgresql://...`` for a database several replicas share (sets ``MONAI_LABEL_DATABASE_URL``
            for the whole process, which the datastore reads).
        replica_timeout_s: seconds without a heartbeat after which a replica counts as dead and the
            others fail its running jobs.
        metrics_port: port of the Prometheus ``/metrics`` endpoint (0 picks one); None serves none.
        train_nodes: how many nodes (replicas on one database) a ``multi_gpu`` train job spans when its
            request does not say (``nodes``); 1 trains on the replica that runs the job only.
        train_node_addr: the address other nodes reach this replica's training ranks (and, when it
            runs the job, the c10d rendezvous) at; empty for this machine's host name.
        train_join_timeout_s: seconds a train job across nodes waits for every node to join.
        batch_wait_ms: how long the first infer request of a batch waits for others for the same
            model (dynamic batching); 0 turns batching off.
        max_batch_size: the most requests in one batched forward; 1 turns batching off, 0 (the
            default) means 8 when a GPU is present and 1 (off) on CPU. With
            batching on, ``max(model_workers, max_batch_size)`` model threads run pipelines at once
            (a network's forwards still run one at a time).
        retain_memory_mb: freed memory the process keeps for reuse (glibc's allocator), in MiB: large
            buffers come from the heap and the next call reuses them instead of faulting in fresh
            pages (a 256x256x128 inference's transforms take about half the time). Resident memory
            stays near its peak, up to this much above what is in use. 0 leaves the allocator's
            defaults. Applies to the whole process, once.
    """

    app_dir: Path
    studies: str
    conf: Dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 50051
    rpc_threads: int = 16
    model_workers: int = 1
    max_queue: int = 8
    chunk_size: int = MIB
    max_message_bytes: int = 4 * MIB
    max_volume_bytes: int = 2048 * MIB
    session_ttl_s: int = 600
    max_session_ttl_s: int = 3600
    max_session_bytes: int = 4096 * MIB
    max_sessions: int = 64
    session_device: str = "auto"
    lease_ttl_s: int = 3600
    upload_ttl_s: int = 24 * 3600
    max_partial_uploads: int = 64
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    reflection: str = "auto"
    audit_log: str = ""
    web_port: int = -1
    auth: Optional[AuthSettings] = None
    stream_idle_timeout_s: float = 60.0
    reserved_threads: int = 4
    database: str = ""
    replica_timeout_s: float = 15.0
    metrics_port: Optional[int] = None
    train_nodes: int = 1
    train_node_addr: str = ""
    train_join_timeout_s: float = 120.0
    batch_wait_ms: float = 2.0
    max_batch_size: int = 0
    retain_memory_mb: int = 1024

    @property
    def batch_size(self) -> int:
        """The most requests in one forward: ``max_batch_size``, or for 0 (auto) 8 with a GPU and 1 without.

        On CPU a batch of N costs about N single forwards, and the wait and the concurrent pipelines
        cost more (measured: 0.73x to 0.93x the throughput of no batching at 1 to 16 clients), so
        batching is on by default only where a GPU runs the models.
        """
        if self.max_batch_size > 0:
            return self.max_batch_size
        import torch

        return 8 if torch.cuda.is_available() else 1

    @property
    def batching(self) -> bool:
        """Whether concurrent infer requests for one model are batched."""
        return self.batch_wait_ms > 0 and self.batch_size > 1

    @property
    def model_threads(self) -> int:
        """Model threads: batching needs requests to reach the forward together."""
        return max(self.model_workers, self.batch_size) if self.batching else self.model_workers

    @property
    def max_streams(self) -> int:
        """Streaming calls served at once; more are refused with RESOURCE_EXHAUSTED."""
        return max(1, self.rpc_threads - self.reserved_threads)

    @classmethod
    def from_env(cls, app_dir: Path, studies: str, **overrides: object) -> ServerConfig:
        """Builds a config, taking unset values from ``MONAI_LABEL_GRPC_*`` environment variables.

        Args:
            app_dir: folder holding the app's ``main.py``.
            studies: datastore folder.
            **overrides: explicit values (from the command line), which win over the environment.

        Returns:
            The config.
        """
        values: Dict[str, object] = {}
        for name, f in cls.__dataclass_fields__.items():
            if name in ("app_dir", "studies"):
                continue  # given as arguments (the command line reads MONAI_LABEL_APP_DIR / _STUDIES)
            env = os.environ.get(f"MONAI_LABEL_GRPC_{name.upper()}")
            if env is not None and f.type in ("int", int):
                values[name] = int(env)
            elif env is not None and f.type in ("float", float):
                values[name] = float(env)
            elif env is not None and f.type in ("str", str):
                values[name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(app_dir=app_dir, studies=studies, **values)  # type: ignore[arg-type]
