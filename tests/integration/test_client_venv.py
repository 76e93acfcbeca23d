"""The client distributions alone: ``pip install api/python clients/python`` into a fresh venv gives a
client that talks to a running server, with neither torch nor MONAI (nor the SDK) installed there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monailabel_server.server import RunningServer

ROOT = Path(__file__).resolve().parents[2]

CLIENT_SCRIPT = r"""
import importlib.util, json, sys
import grpc
import numpy as np
import monailabel_client
from monailabel_client import MonaiLabelClient, error_details

out = {name: importlib.util.find_spec(name) is not None for name in ("torch", "monai", "monailabel", "nibabel")}
out["client_file"] = monailabel_client.__file__
with MonaiLabelClient(sys.argv[1], timeout=60) as client:
    out["app"] = client.info().name
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    out["uploaded"] = client.upload_array("from_venv", array).image_id
    out["downloaded"] = len(client.download_image("from_venv"))
    try:
        client.upload_array("bad/id", array)
    except grpc.RpcError as err:
        details = error_details(err)
        out["error"] = [details.code.name, [f for f, _ in details.field_violations]]
print(json.dumps(out))
"""


@pytest.mark.slow  # creates a venv and installs two distributions and their dependencies (~1 min)
def test_client_from_its_own_distributions_talks_to_a_server(server: RunningServer, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # no PYTHONPATH: the venv must see only what was installed into it
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    python = venv / "bin" / "python"
    # pip builds in the source folder (build/, *.egg-info): build copies, leaving the checkout alone
    sources = []
    for part in ("api", "clients"):
        sources.append(tmp_path / part)
        shutil.copytree(ROOT / part / "python", sources[-1],
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", *map(str, sources)],
                             env=env, capture_output=True, text=True, timeout=400)
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([str(python), "-c", CLIENT_SCRIPT, server.address], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert not out["torch"] and not out["monai"] and not out["monailabel"], out
    assert Path(out["client_file"]).is_relative_to(venv)
    assert out["app"] == "radiology"
    assert out["uploaded"] == "from_venv" and out["downloaded"] > 4 * 5 * 6 * 2
    assert out["error"] == ["INVALID_ARGUMENT", ["header.image_id"]]  # the field's path in the request
    assert server.app.datastore().get_image_uri("from_venv")
