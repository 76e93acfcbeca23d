"""A real PostgreSQL server for tests: Debian's ``postgresql`` package, in a temporary folder on a free port.

``initdb`` refuses to run as root, so when the tests run as root the server runs as the ``postgres``
user (the package creates it) on a folder it owns. Trust authentication on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, List

__all__ = ["PostgresServer", "postgres_server"]


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: apt-get install postgresql")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A running PostgreSQL server.

    Attributes:
        port: its port on 127.0.0.1.
        folder: its data and socket folder.
    """

    def __init__(self, folder: Path, port: int, as_user: List[str]) -> None:
        self.folder = folder
        self.port = port
        self._as_user = as_user

    def url(self, name: str) -> str:
        """The URL of database ``name``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, prefix: str = "t") -> str:
        """Creates a fresh empty database; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        subprocess.run([*self._as_user, _bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        name], check=True, capture_output=True, timeout=60)
        return self.url(name)

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self._as_user, _bin("pg_ctl"), "-D", str(self.folder / "data"), *args], check=True,
                       capture_output=True, timeout=120)


@contextlib.contextmanager
def postgres_server(log_statements: bool = False) -> Iterator[PostgresServer]:
    """Starts a PostgreSQL server for the block, then stops it and removes its folder.

    Args:
        log_statements: log every statement to ``<folder>/server.log`` (the benchmark counts them).
    """
    folder = Path(tempfile.mkdtemp(prefix="monailabel-pg-"))
    os.chmod(folder, 0o755)
    as_user: List[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    server = PostgresServer(folder, port, as_user)
    subprocess.run([*as_user, _bin("initdb"), "-D", str(folder / "data"), "-U", "postgres", "-A", "trust",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    opts = f"-p {port} -k {folder} -h 127.0.0.1 -c fsync=off -c max_connections=200"
    if log_statements:
        opts += " -c log_statement=all"
    server._ctl("-o", opts, "-l", str(folder / "server.log"), "-w", "-t", "60", "start")
    try:
        yield server
    finally:
        try:
            server._ctl("-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
