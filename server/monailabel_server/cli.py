"""The ``monailabel`` command line: ``start_server`` (here, in the server package) and the SDK's commands."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional

from monailabel.main import add_commands

__all__ = ["main", "parser"]


def _start_server(args: argparse.Namespace) -> int:
    from monailabel_server.config import ServerConfig
    from monailabel_server.server import serve

    conf = {k: v for k, v in (args.conf or [])}
    config = ServerConfig.from_env(
        Path(args.app),
        args.studies,
        conf=conf,
        host=args.host,
        port=args.port,
        rpc_threads=args.rpc_threads,
        model_workers=args.model_workers,
        max_queue=args.max_queue,
        max_message_bytes=args.max_message_mb << 20 if args.max_message_mb else None,
        max_volume_bytes=args.max_volume_mb << 20 if args.max_volume_mb else None,
        session_ttl_s=args.session_ttl,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        reflection=args.reflection,
        audit_log=args.audit_log,
        web_port=args.web_port,
    )
    serve(config)
    return 0


def add_start_server(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``start_server`` to a command line.

    Args:
        sub: the command line's subparsers.
    """
    s = sub.add_parser("start_server", help="serve an app over gRPC")
    s.add_argument("-a", "--app", required=True, help="app folder holding main.py")
    s.add_argument("-s", "--studies", required=True, help="datastore folder")
    s.add_argument("-c", "--conf", nargs=2, action="append", metavar=("KEY", "VALUE"), help="app config pair")
    s.add_argument("-i", "--host", default="127.0.0.1")
    s.add_argument("-p", "--port", type=int, default=50051, help="0 picks a free port and prints it")
    s.add_argument("--rpc-threads", type=int, default=None)
    s.add_argument("--model-workers", type=int, default=None)
    s.add_argument("--max-queue", type=int, default=None)
    s.add_argument("--max-message-mb", type=int, default=None)
    s.add_argument("--max-volume-mb", type=int, default=None)
    s.add_argument("--session-ttl", type=int, default=None, help="seconds an idle session lives")
    s.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve TLS (with --tls-key)")
    s.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    s.add_argument("--tls-client-ca", default=None, help="PEM CA of client certificates: require mTLS")
    s.add_argument("--reflection", choices=["auto", "on", "off"], default=None,
                   help="gRPC server reflection (auto: on only when MONAI_LABEL_AUTH_ENABLE is off)")
    s.add_argument("--audit-log", default=None, help="audit log file (default <studies>/.monailabel/logs/audit.log)")
    s.add_argument("--web-port", type=int, default=None,
                   help="also serve browsers on this port: gRPC-Web and Connect through Envoy, CORS for "
                        "MONAI_LABEL_CORS_ORIGINS (0 picks a free port)")
    s.set_defaults(func=_start_server)


def parser() -> argparse.ArgumentParser:
    """Returns the command line's parser."""
    p = argparse.ArgumentParser(prog="monailabel", description="MONAI Label over gRPC")
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)
    add_start_server(sub)
    add_commands(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line.

    Args:
        argv: arguments; None for ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
