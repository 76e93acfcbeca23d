"""The command lines as a user runs them: ``monailabel start_server --port 0`` in its own process,
``grpcurl`` through server reflection (no proto files), and ``monailabel-client``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from monailabel.datasets import write_phantoms

from .conftest import copy_template

pytestmark = pytest.mark.slow  # a server in a subprocess, and the client command line

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("cli")
    app = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=2, shape=(32, 32, 16), labeled=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "monailabel_server", "start_server", "--app", str(app), "--studies", str(studies),
         "--port", "0", "--conf", "roi_size", "32,32,32"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    address = ""
    for line in proc.stdout:
        if "listening on" in line:
            address = line.strip().rsplit(" ", 1)[1]
            break
    assert address, "the server should print the port it picked"
    yield address, root
    proc.terminate()
    proc.stdout.close()
    assert proc.wait(timeout=30) == 0, "SIGTERM drains and exits cleanly"


def _run(*args: str) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_port_zero_prints_a_real_port(served) -> None:
    address, _ = served
    port = int(address.rsplit(":", 1)[1])
    assert port > 0


def test_grpcurl_lists_and_calls_through_reflection(served) -> None:
    address, _ = served
    grpcurl = shutil.which("grpcurl") or str(BIN / "grpcurl")
    services = _run(grpcurl, "-plaintext", address, "list").split()
    assert {"monailabel.v1.AppService", "monailabel.v1.DatastoreService", "monailabel.v1.InferService",
            "grpc.health.v1.Health"} <= set(services)
    info = json.loads(_run(grpcurl, "-plaintext", address, "monailabel.v1.AppService/GetAppInfo"))
    assert info["name"] == "radiology" and info["models"][0]["name"] == "segmentation"
    health = json.loads(_run(grpcurl, "-plaintext", address, "grpc.health.v1.Health/Check"))
    assert health["status"] == "SERVING"
    page = json.loads(_run(grpcurl, "-plaintext", "-d", '{"page_size": 1}', address,
                           "monailabel.v1.DatastoreService/ListImages"))
    assert len(page["images"]) == 1, page
    assert page.get("nextPageToken") or page.get("next_page_token"), page


def test_client_command_line_upload_infer_download(served, tmp_path: Path) -> None:
    address, root = served
    cli = [sys.executable, "-m", "monailabel_client.cli", "--address", address]
    src = root / "studies" / "phantom_001.nii.gz"
    uploaded = json.loads(_run(*cli, "upload", "cli_case", str(src)))
    assert uploaded["imageId"] == "cli_case"
    out = tmp_path / "mask.nii.gz"
    result = json.loads(_run(*cli, "infer", "segmentation", "--image-id", "cli_case", "--output", str(out)))
    assert result["labels"] == {"organ": 1} and out.stat().st_size > 0
    back = tmp_path / "back.nii.gz"
    _run(*cli, "download", "cli_case", str(back))
    assert back.read_bytes() == src.read_bytes()
    listing = _run(*cli, "list")
    assert "cli_case" in listing and "phantom_000" in listing
