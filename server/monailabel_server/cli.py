"""The ``monailabel`` command line: ``start_server`` (here, in the server package) and the SDK's commands.

``start_server`` checks what a user most often gets wrong (no ``main.py`` in the app folder, a studies
folder that does not exist, a port that is taken) before it imports torch, MONAI and the app, and says
so in one line; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Dict, List, Optional, cast

from monailabel.main import add_commands
from monailabel_server.config import ServerConfig

__all__ = ["main", "parser", "config_of", "EXIT_CODES", "SDK_ENVIRONMENT"]

# Exit status of ``start_server`` per class of failure.
EXIT_CODES: Dict[str, int] = {
    "usage": 2,  # bad arguments: no main.py, no studies folder, an unreadable setting
    "port_in_use": 3,  # another process listens on --port
    "app_failed": 4,  # the app's main.py raised while loading
    "database": 5,  # --database is not a supported URL, or cannot be reached
    "interrupted": 130,
}

# The SDK's settings (MONAI Label's names) that the server and the template apps read.
SDK_ENVIRONMENT: Dict[str, str] = {
    "MONAI_LABEL_APP_DIR": "--app when not given",
    "MONAI_LABEL_STUDIES": "--studies when not given",
    "MONAI_LABEL_APP_CONF": "--conf pairs as a JSON object (pairs given on the command line win)",
    "MONAI_LABEL_AUTO_UPDATE_SCORING": "rescore after training publishes a model (default true; "
    "--conf auto_update_scoring overrides)",
    "MONAI_LABEL_TASKS_TRAIN": "load the app's trainers (default true)",
    "MONAI_LABEL_TASKS_STRATEGY": "load the app's strategies (default true)",
    "MONAI_LABEL_TASKS_SCORING": "load the app's scoring methods (default true)",
    "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "notice files added to the studies folder (default true)",
    "MONAI_LABEL_DATASTORE_READ_ONLY": "refuse uploads and label saves (default false)",
    "MONAI_LABEL_DATASTORE_FILE_EXT": "image file patterns of the studies folder (JSON list or comma separated)",
    "MONAI_LABEL_DECODE_CACHE_MB": "memory for decoded images of repeated inference (default 1024)",
}

# what each ServerConfig setting means on the command line (its default comes from ServerConfig)
_SETTING_HELP: Dict[str, str] = {
    "host": "address to bind (0.0.0.0 for every interface)",
    "port": "port to bind; 0 picks a free one and prints it",
    "rpc_threads": "threads serving calls (model work never runs on them)",
    "model_workers": "threads running infer tasks (more than one only helps with several devices)",
    "max_queue": "infer calls that may wait for a worker before RESOURCE_EXHAUSTED",
    "batch_wait_ms": "ms the first infer request of a batch waits for others for the same model (0: no batching)",
    "max_batch_size": "most requests in one batched forward (1: no batching; 0: 8 with a GPU, else 1)",
    "retain_memory_mb": "freed memory kept for reuse by the next call, in MiB (0: the C allocator's defaults)",
    "max_message_mb": "largest gRPC message accepted, in MiB",
    "max_volume_mb": "largest volume an upload or inference may carry, in MiB",
    "session_ttl": "seconds an idle interactive session lives",
    "session_device": "where a session's decoded volume lives: auto (the GPU when CUDA is present and its free "
    "memory holds it with a margin, else host memory), cpu, or cuda (the GPU whenever it fits)",
}
_SETTING_FIELD = {"max_message_mb": "max_message_bytes", "max_volume_mb": "max_volume_bytes",
                  "session_ttl": "session_ttl_s"}


class StartError(Exception):
    """A failure of ``start_server`` the user can fix, with its exit status."""

    def __init__(self, message: str, status: str = "usage") -> None:
        super().__init__(message)
        self.status = EXIT_CODES[status]


def _env_settings() -> List[str]:
    """The ``MONAI_LABEL_GRPC_*`` names ServerConfig reads, with their defaults."""
    skip = {"app_dir", "studies", "conf"}
    out = []
    for f in dataclasses.fields(ServerConfig):
        if f.name in skip or f.type not in ("int", int, "str", str):
            continue
        out.append(f"  MONAI_LABEL_GRPC_{f.name.upper():<22} default {f.default}")
    return out


def _epilog() -> str:
    sdk = [f"  {name:<35} {text}" for name, text in SDK_ENVIRONMENT.items()]
    codes = ", ".join(f"{code} {name.replace('_', ' ')}" for name, code in EXIT_CODES.items())
    return "\n".join([
        "environment (an option on the command line wins over its variable):",
        *_env_settings(),
        *sdk,
        "",
        "writes: <studies>/.monailabel/ (datastore index, job history and logs, upload state, leases) and",
        "<app>/model/ (trained checkpoints); stop with Ctrl-C or SIGTERM (running calls get 5 s to end).",
        f"exit status: {codes}.",
    ])


def _check_port(host: str, port: int) -> None:
    """Fails fast when the port is taken (grpc would say so only after the app has loaded)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a port left in TIME_WAIT by a server that just stopped is free to grpc too
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise StartError(f"port {port} on {host} is in use (another server?); pass --port N, or --port 0 "
                                 "for a free one", "port_in_use") from None
            raise StartError(f"cannot bind {host}:{port}: {e.strerror}") from None


def _check_paths(args: argparse.Namespace) -> None:
    if not args.app:
        raise StartError("--app DIR is needed (a folder with the app's main.py; `monailabel apps` lists templates)")
    if not args.studies:
        raise StartError("--studies DIR is needed (the folder of images and labels)")
    app = Path(args.app)
    if not app.is_dir():
        raise StartError(f"app folder {app} does not exist (`monailabel apps --name radiology --download "
                         f"--output {app}` copies a template there)")
    if not (app / "main.py").is_file():
        raise StartError(f"no main.py in app folder {app}: an app folder holds a main.py with a MONAILabelApp subclass")
    studies = Path(args.studies)
    if "://" in args.studies:
        return  # a datastore URI the app opens itself
    if studies.exists() and not studies.is_dir():
        raise StartError(f"studies {studies} is not a folder")
    if not studies.exists():
        if not args.create_studies:
            raise StartError(f"studies folder {studies} does not exist; create it (or pass --create-studies), or "
                             f"fill it with `monailabel datasets --output {studies}`")
        studies.mkdir(parents=True)
        print(f"created the studies folder {studies}: it is EMPTY (upload images, or run "
              f"`monailabel datasets --output {studies}`)", file=sys.stderr, flush=True)


def _conf(args: argparse.Namespace) -> Dict[str, str]:
    conf: Dict[str, str] = {}
    raw = os.environ.get("MONAI_LABEL_APP_CONF", "").strip()
    if raw:
        try:
            conf = {str(k): str(v) for k, v in dict(json.loads(raw)).items()}
        except (ValueError, TypeError) as e:
            raise StartError(f"MONAI_LABEL_APP_CONF must be a JSON object: {e}") from None
    conf.update({k: v for k, v in (args.conf or [])})
    return conf


def config_of(args: argparse.Namespace) -> ServerConfig:
    """The server config that ``start_server`` arguments ask for (unset ones from the environment).

    Args:
        args: the parsed ``start_server`` command line.

    Returns:
        The config.

    Raises:
        StartError: a ``MONAI_LABEL_GRPC_*`` setting that is not a number, or a bad MONAI_LABEL_APP_CONF.
    """
    try:
        return ServerConfig.from_env(
            Path(args.app),
            args.studies,
            conf=_conf(args),
            host=args.host,
            port=args.port,
            rpc_threads=args.rpc_threads,
            model_workers=args.model_workers,
            max_queue=args.max_queue,
            batch_wait_ms=args.batch_wait_ms,
            max_batch_size=args.max_batch_size,
            retain_memory_mb=args.retain_memory_mb,
            max_message_bytes=args.max_message_mb << 20 if args.max_message_mb else None,
            max_volume_bytes=args.max_volume_mb << 20 if args.max_volume_mb else None,
            session_ttl_s=args.session_ttl,
            session_device=args.session_device,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
            reflection=args.reflection,
            audit_log=args.audit_log,
            stream_idle_timeout_s=args.stream_idle_timeout,
            web_port=args.web_port,
            database=args.database,
            replica_timeout_s=args.replica_timeout,
            metrics_port=args.metrics_port,
            train_nodes=args.train_nodes,
            train_node_addr=args.train_node_addr,
            train_join_timeout_s=args.train_join_timeout,
        )
    except ValueError as e:
        raise StartError(f"a MONAI_LABEL_GRPC_* setting is not a number: {e}") from None


def _check_session_device(setting: str) -> None:
    """``--session-device`` is one of its values, and ``cuda`` needs a CUDA device (torch is imported then only)."""
    from monailabel_server.core.volume import SESSION_DEVICES

    if setting not in SESSION_DEVICES:
        raise StartError(f"--session-device must be one of {', '.join(SESSION_DEVICES)}; got {setting!r}")
    if setting == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise StartError("--session-device cuda: torch sees no CUDA device on this machine; use auto or cpu")


def _start_server(args: argparse.Namespace) -> int:
    _check_paths(args)
    config = config_of(args)
    if config.database and not config.database.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise StartError("--database must be sqlite:///FILE or postgresql://USER@HOST:PORT/NAME", "database")
    if config.train_nodes < 1:
        raise StartError(f"--train-nodes must be at least 1; got {config.train_nodes}")
    _check_session_device(config.session_device)
    _check_port(config.host, config.port)

    # heavy imports (torch, MONAI, grpc servicers) only once the cheap checks passed
    from monailabel.db import DatabaseUnavailable
    from monailabel.interfaces.exception import MONAILabelException
    from monailabel_server.server import serve

    try:
        serve(config)
    except DatabaseUnavailable as e:
        raise StartError(str(e), "database") from None
    except MONAILabelException as e:
        raise StartError(f"the app did not load: {e.msg}", "app_failed") from e
    except (ImportError, SyntaxError) as e:
        # the usual mistakes in an app's main.py or lib: a missing package, a typo
        raise StartError(f"the app did not load: {type(e).__name__}: {e} (--debug shows the traceback)",
                         "app_failed") from e
    except OSError as e:
        if e.errno == errno.EADDRINUSE or "bind" in str(e):
            raise StartError(f"cannot serve on {config.host}:{config.port}: {e}", "port_in_use") from e
        raise
    return 0


def _default_help(name: str) -> str:
    field = _SETTING_FIELD.get(name, name)
    default = ServerConfig.__dataclass_fields__[field].default
    if field.endswith("_bytes"):
        default = int(cast(int, default)) >> 20
    return f"{_SETTING_HELP[name]} (default {default}; env MONAI_LABEL_GRPC_{field.upper()})"


def add_start_server(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``start_server`` to a command line.

    Args:
        sub: the command line's subparsers.
    """
    s = sub.add_parser("start_server", help="serve an app over gRPC", description="Serve a MONAI Label app over gRPC.",
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("-a", "--app", default=os.environ.get("MONAI_LABEL_APP_DIR") or None,
                   help="app folder holding main.py (env MONAI_LABEL_APP_DIR)")
    s.add_argument("-s", "--studies", default=os.environ.get("MONAI_LABEL_STUDIES") or None,
                   help="studies folder: images, and labels under labels/ (env MONAI_LABEL_STUDIES)")
    s.add_argument("--create-studies", action="store_true",
                   help="create the studies folder when it does not exist (default: refuse to start)")
    s.add_argument("-c", "--conf", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="an app setting, e.g. --conf models all (repeat for more; env MONAI_LABEL_APP_CONF)")
    s.add_argument("-i", "--host", default=None, help=_default_help("host"))
    s.add_argument("-p", "--port", type=int, default=None, help=_default_help("port"))
    s.add_argument("--rpc-threads", type=int, default=None, help=_default_help("rpc_threads"))
    s.add_argument("--model-workers", type=int, default=None, help=_default_help("model_workers"))
    s.add_argument("--max-queue", type=int, default=None, help=_default_help("max_queue"))
    s.add_argument("--batch-wait-ms", type=float, default=None, help=_default_help("batch_wait_ms"))
    s.add_argument("--max-batch-size", type=int, default=None, help=_default_help("max_batch_size"))
    s.add_argument("--retain-memory-mb", type=int, default=None, help=_default_help("retain_memory_mb"))
    s.add_argument("--max-message-mb", type=int, default=None, help=_default_help("max_message_mb"))
    s.add_argument("--max-volume-mb", type=int, default=None, help=_default_help("max_volume_mb"))
    s.add_argument("--session-ttl", type=int, default=None, help=_default_help("session_ttl"))
    s.add_argument("--session-device", choices=["auto", "cpu", "cuda"], default=None,
                   help=_default_help("session_device"))
    s.add_argument("--stream-idle-timeout", type=float, default=None,
                   help="seconds a stream may wait on its client before the server ends it with DEADLINE_EXCEEDED "
                        "(default 60; env MONAI_LABEL_GRPC_STREAM_IDLE_TIMEOUT_S)")
    s.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve TLS (with --tls-key; default off)")
    s.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    s.add_argument("--tls-client-ca", default=None,
                   help="PEM CA of client certificates: require mTLS (default: no client certificates)")
    s.add_argument("--reflection", choices=["auto", "on", "off"], default=None,
                   help="gRPC server reflection (default auto: on only when MONAI_LABEL_AUTH_ENABLE is off)")
    s.add_argument("--audit-log", default=None,
                   help="audit log file of state-changing calls (default <studies>/.monailabel/logs/audit.log)")
    s.add_argument("--web-port", type=int, default=None,
                   help="also serve browsers on this port: gRPC-Web and Connect through Envoy, CORS for "
                        "MONAI_LABEL_CORS_ORIGINS (0 picks a free port; default: off)")
    s.add_argument("--database", default=os.environ.get("MONAI_LABEL_DATABASE_URL") or None,
                   help="shared state (index, jobs, leases, uploads): postgresql://USER@HOST:PORT/NAME for "
                        "several replicas (env MONAI_LABEL_DATABASE_URL; default: SQLite files in the studies folder)")
    s.add_argument("--replica-timeout", type=float, default=None,
                   help="seconds without a heartbeat after which a replica's running jobs are failed by the others "
                        "(default 15; env MONAI_LABEL_GRPC_REPLICA_TIMEOUT_S)")
    s.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (default: none)")
    s.add_argument("--train-nodes", type=int, default=None,
                   help="nodes (replicas on one --database) a multi_gpu train job spans unless its request sets "
                        "'nodes' (default 1; env MONAI_LABEL_GRPC_TRAIN_NODES)")
    s.add_argument("--train-node-addr", default=None,
                   help="address the other nodes reach this replica's training ranks at (default: the host name; "
                        "env MONAI_LABEL_GRPC_TRAIN_NODE_ADDR)")
    s.add_argument("--train-join-timeout", type=float, default=None,
                   help="seconds a train job across nodes waits for every node to join (default 120)")
    s.set_defaults(func=_start_server)


def parser() -> argparse.ArgumentParser:
    """Returns the command line's parser."""
    p = argparse.ArgumentParser(prog="monailabel", description="MONAI Label over gRPC")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("MONAI_LABEL_LOG_FORMAT", "text"),
                   help="text lines, or one JSON object per line with the call's request id (default text; "
                        "env MONAI_LABEL_LOG_FORMAT)")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")
    add_start_server(sub)
    add_commands(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line.

    Args:
        argv: arguments; None for ``sys.argv[1:]``.

    Returns:
        The exit status (see :data:`EXIT_CODES`).
    """
    args = parser().parse_args(argv)
    from monailabel_server.observability import configure_logging

    configure_logging(args.log_level, args.log_format)
    try:
        return int(args.func(args))
    except StartError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return EXIT_CODES["interrupted"]


if __name__ == "__main__":
    raise SystemExit(main())
