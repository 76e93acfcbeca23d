"""The command lines as a user runs them: ``monailabel start_server --port 0`` in its own process,
``grpcurl`` through server reflection (no proto files), and ``monailabel-client``."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from monailabel.datasets import write_phantoms

from .conftest import copy_template

pytestmark = pytest.mark.slow  # a server in a subprocess, and the client command line

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("cli")
    app = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=3, shape=(32, 32, 16), labeled=2)
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
    assert uploaded["image_id"] == "cli_case" and uploaded["file_extension"] == ".nii.gz"
    assert uploaded["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "mask.nii.gz"
    result = json.loads(_run(*cli, "infer", "segmentation", "--image-id", "cli_case", "--output", str(out)))
    assert result["labels"] == {"organ": 1} and out.stat().st_size > 0
    back = tmp_path / "back.nii.gz"
    _run(*cli, "download", "cli_case", str(back))
    assert back.read_bytes() == src.read_bytes()
    listing = _run(*cli, "list")
    assert "cli_case" in listing and "phantom_000" in listing


def _cli(address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monailabel_client.cli", "--address", address, *args],
                          capture_output=True, text=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_errors_are_one_line_with_an_exit_status_per_class(served, tmp_path: Path) -> None:
    address, root = served
    out = str(tmp_path / "x.nii.gz")
    cases = [  # (arguments, exit status, the start of the one line)
        (["infer", "segmentaton", "--image-id", "phantom_000", "--output", out], 4,
         "error: NOT_FOUND: model 'segmentaton' does not exist; models: segmentation"),
        (["download", "no_such_image", out], 4, "error: NOT_FOUND: image 'no_such_image'"),
        (["upload", "u", str(tmp_path / "missing.nii.gz")], 2, "error: "),
    ]
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    cases += [
        (["upload", "notes", str(notes)], 2, "error: cannot tell the format of"),
        (["upload", "notes", str(notes), "--encoding", "nii"], 3, "error: INVALID_ARGUMENT: "),
        (["upload", "phantom_000", str(root / "studies" / "phantom_001.nii.gz")], 5, "error: ALREADY_EXISTS: "),
    ]
    for args, status, start in cases:
        result = _cli(address, *args)
        assert result.returncode == status, (args, result.stderr)
        assert result.stderr.startswith(start) and result.stderr.count("\n") == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert "--encoding" in _cli(address, "upload", "notes", str(notes)).stderr

    down = _cli(f"127.0.0.1:{_free_port()}", "info")
    assert down.returncode == 6 and down.stderr.startswith("error: UNAVAILABLE: no server answers at 127.0.0.1:")
    assert down.stderr.count("\n") == 1
    debug = _cli(address, "--debug", "download", "no_such_image", out)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_client_json_uses_proto_field_names(served) -> None:
    address, _ = served
    status = json.loads(_run(sys.executable, "-m", "monailabel_client.cli", "--address", address, "status"))
    assert "label_tags" in status and "labelTags" not in status
    sample = json.loads(_run(sys.executable, "-m", "monailabel_client.cli", "--address", address, "next",
                             "--strategy", "first", "--client-id", "json"))
    assert sample["status"] == "SAMPLE_STATUS_FOUND" and sample["client_id"] == "json" and "image_id" in sample
    assert "lease_expire_time" in sample and "unlabeled_count" in sample
    info = json.loads(_run(sys.executable, "-m", "monailabel_client.cli", "--address", address, "info"))
    assert "scoring_methods" in info or "server_version" in info


def test_app_info_reports_the_trainers_effective_device(served) -> None:
    address, _ = served
    grpcurl = shutil.which("grpcurl") or str(BIN / "grpcurl")
    info = json.loads(_run(grpcurl, "-plaintext", address, "monailabel.v1.AppService/GetAppInfo"))
    config = info["trainers"][0]["config"]
    if torch.cuda.is_available():
        assert config["device"] == "cuda"
        assert config["multi_gpu"] == (torch.cuda.device_count() > 1)
    else:
        assert config["device"] == "cpu" and config["multi_gpu"] is False, config
    # the free-form info holds only the app's own keys: the typed trainer list is where the device is
    assert "trainers" not in info.get("info", {})


@pytest.mark.slow
def test_training_progress_on_a_pipe_is_whole_lines(served) -> None:
    address, _ = served
    result = _cli(address, "train", "segmentation", "--max-epochs", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\r" not in result.stdout
    progress = [line for line in result.stderr.splitlines() if "iteration" in line]
    assert progress and "(100%)" in progress[-1], result.stderr
    assert "SUCCEEDED" in result.stdout and "epoch 1/1" in result.stdout


def _server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monailabel_server", "start_server", *args],
                          capture_output=True, text=True, timeout=60)


def test_start_server_says_what_is_wrong_in_one_line(served, tmp_path: Path) -> None:
    address, root = served
    app, studies, port = str(root / "app"), str(root / "studies"), address.rsplit(":", 1)[1]

    started = time.monotonic()
    taken = _server("--app", app, "--studies", studies, "--port", port)
    assert taken.returncode == 3 and taken.stderr.startswith(f"error: port {port} on 127.0.0.1 is in use")
    assert time.monotonic() - started < 20, "checked before the app (torch, MONAI) loads"

    no_main = _server("--app", studies, "--studies", studies, "--port", "0")
    assert no_main.returncode == 2 and no_main.stderr.startswith("error: no main.py in app folder")

    missing = tmp_path / "no_studies"
    absent = _server("--app", app, "--studies", str(missing), "--port", "0")
    assert absent.returncode == 2 and "does not exist" in absent.stderr and "--create-studies" in absent.stderr
    assert not missing.exists()
    # --create-studies creates it and says loudly that it is empty (then, here, the port is taken)
    created = _server("--app", app, "--studies", str(missing), "--port", port, "--create-studies")
    assert missing.is_dir() and "EMPTY" in created.stderr and created.returncode == 3
    broken = tmp_path / "broken_app"
    broken.mkdir()
    (broken / "main.py").write_text("import no_such_package_here\n")
    failed = _server("--app", str(broken), "--studies", studies, "--port", "0")
    assert failed.returncode == 4, failed.stderr
    assert failed.stderr.splitlines()[-1].startswith("error: the app did not load: ModuleNotFoundError: ")
    assert "Traceback" not in failed.stderr
    checked = [taken, no_main, absent]
    if not torch.cuda.is_available():
        no_gpu = _server("--app", app, "--studies", studies, "--port", "0", "--session-device", "cuda")
        assert no_gpu.returncode == 2 and no_gpu.stderr.startswith("error: --session-device cuda: torch sees no CUDA")
        checked.append(no_gpu)
    for result in checked:
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_transfer_progress_on_a_pipe_is_whole_lines(served, tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    address, _ = served
    big = tmp_path / "big.nii"  # over the 16 MiB from which transfers show progress
    nib.save(nib.Nifti1Image(np.arange(256 * 256 * 136, dtype=np.int16).reshape(256, 256, 136), np.eye(4)), big)
    assert big.stat().st_size > 16 << 20
    up = _cli(address, "upload", "big_case", str(big))
    assert up.returncode == 0, up.stderr
    assert "\r" not in up.stderr and up.stderr.splitlines()[-1] == "upload: 17/17 MiB (100%)", up.stderr
    down = _cli(address, "download", "big_case", str(tmp_path / "back.nii"))
    assert down.returncode == 0 and "\r" not in down.stderr and down.stderr.endswith("(100%)\n"), down.stderr
    assert (tmp_path / "back.nii").read_bytes() == big.read_bytes()
