"""The TypeScript client (clients/typescript) in Node against a real server.

Its generated code must match protos/ (regenerated with the committed buf.gen.yaml); then its Node
tests run over the gRPC port (Node's gRPC transport) and the browser port (gRPC-Web and Connect):
upload, infer with the mask's checksum verified, resume an upload, error codes, and a short
training job watched to its end through JobService (then resumed after a sequence number over gRPC-Web).
"""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Iterator

import pytest

from monailabel.datasets import write_phantoms
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start
from tests.integration.conftest import copy_template
from tests.integration.helpers import write_volume
from tests.integration.node_tools import TS_CLIENT, buf_binary, npm_project, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("ts")
    app_dir = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=4, shape=(48, 48, 32), labeled=4)
    config = ServerConfig(app_dir=app_dir, studies=str(studies), port=0, web_port=0, max_volume_bytes=64 << 20,
                          conf={"roi_size": "32,32,32"})
    running = start(config)
    yield running
    running.stop(grace=1)


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    npm_project(TS_CLIENT, build=False)
    run([buf_binary(), "generate", "-o", str(tmp_path)], TS_CLIENT)
    fresh, committed = tmp_path / "src" / "gen", TS_CLIENT / "src" / "gen"
    files = sorted(p.relative_to(fresh) for p in fresh.rglob("*.ts"))
    assert files == sorted(p.relative_to(committed) for p in committed.rglob("*.ts"))
    stale = [str(f) for f in files if not filecmp.cmp(fresh / f, committed / f, shallow=False)]
    assert not stale, f"regenerate with `npm run generate` in clients/typescript: {stale}"


def test_typescript_client_in_node(ts_server: RunningServer, tmp_path: Path) -> None:
    npm_project(TS_CLIENT)
    volume = tmp_path / "volume.nii.gz"
    write_volume(volume, shape=(40, 40, 24), seed=7)
    out = run(["node", "--test", "--test-reporter=spec", "dist/test/"], TS_CLIENT, env={
        "MONAILABEL_GRPC_URL": f"http://{ts_server.address}",
        "MONAILABEL_WEB_URL": f"http://127.0.0.1:{ts_server.web_port}",
        "MONAILABEL_VOLUME": str(volume),
        "MONAILABEL_VOLUME_SHAPE": "40,40,24",
    }, timeout=900)
    assert "pass 10\n" in out and "fail 0\n" in out, out
