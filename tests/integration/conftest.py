"""A real server on a real port (port 0), with the radiology template app on a temporary studies folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from monailabel.datasets import write_phantoms
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .postgres import PostgresServer, postgres_server

TEMPLATE = Path(__file__).resolve().parents[2] / "monailabel" / "apps" / "radiology"


def copy_template(dest: Path) -> Path:
    """Copies the radiology template into ``dest`` (so its model folder is the test's own)."""
    shutil.copytree(TEMPLATE, dest, ignore=shutil.ignore_patterns("__pycache__", "model"))
    return dest


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("server")
    app_dir = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=3, shape=(48, 48, 32), labeled=1)
    config = ServerConfig(app_dir=app_dir, studies=str(studies), port=0, max_volume_bytes=64 << 20,
                          conf={"roi_size": "32,32,32"})
    running = start(config)
    yield running
    running.stop(grace=1)


@pytest.fixture()
def client(server: RunningServer) -> Iterator[MonaiLabelClient]:
    with MonaiLabelClient(server.address, timeout=60) as c:
        yield c


@pytest.fixture()
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server (Debian's package) for the whole session; each test module creates its own database."""
    with postgres_server() as server:
        yield server
