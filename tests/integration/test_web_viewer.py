"""The web viewer (clients/web) in headless Chromium, served by the server's browser port.

One whole labeling round through the page: the datastore listed, the next sample shown in three
planes with window/level, an automatic model's mask, clicks for an interactive model in a session
(the volume uploaded once), the mask saved as the ``final`` label, training watched to its end. The
saved label is then checked in the datastore against the mask the page showed; a screenshot is kept
in ``test-artifacts/`` (or ``$MONAI_LABEL_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pytest

from monailabel.datasets import write_phantoms
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start
from tests.integration.conftest import copy_template
from tests.integration.node_tools import ROOT, TS_CLIENT, WEB_VIEWER, npm_project, run

pytestmark = pytest.mark.slow


def _chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium must be installed (Debian: apt-get install -y chromium)"
    return found


@pytest.fixture(scope="module")
def viewer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # the page is built first: Envoy reads the viewer's files when it starts
    npm_project(TS_CLIENT, build=False)
    npm_project(WEB_VIEWER)
    root = tmp_path_factory.mktemp("viewer")
    app_dir = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=4, shape=(48, 48, 32), labeled=2)
    config = ServerConfig(app_dir=app_dir, studies=str(studies), port=0, web_port=0, max_volume_bytes=64 << 20,
                          conf={"roi_size": "32,32,32", "models": "segmentation,deepgrow_3d"})
    running = start(config)
    yield running
    running.stop(grace=1)


def test_a_labeling_round_in_headless_chromium(viewer_server: RunningServer, tmp_path: Path) -> None:
    artifacts = Path(os.environ.get("MONAI_LABEL_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot, result = artifacts / "web-viewer.png", tmp_path / "result.json"
    screenshot.unlink(missing_ok=True)
    run(["node", "--test", "--test-reporter=spec", "test/"], WEB_VIEWER, env={
        "MONAILABEL_VIEWER_URL": f"http://127.0.0.1:{viewer_server.web_port}/",
        "CHROMIUM": _chromium(),
        "MONAILABEL_SCREENSHOT": str(screenshot),
        "MONAILABEL_RESULT": str(result),
    }, timeout=900)
    outcome = json.loads(result.read_text())
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the label the page saved is in the datastore, on its image's grid, with the voxels it showed
    ds = viewer_server.app.datastore()
    image_id = outcome["imageId"]
    label_path = Path(ds.get_label_uri(image_id, "final"))
    assert outcome["saved"] == f"{image_id}/final/{hashlib.sha256(label_path.read_bytes()).hexdigest()}"
    label, image = nib.load(str(label_path)), nib.load(ds.get_image_uri(image_id))
    assert label.shape == image.shape
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-5)
    voxels = np.asarray(label.dataobj).astype(np.uint8)
    assert hashlib.sha256(voxels.tobytes(order="F")).hexdigest() == outcome["maskSha"]
    assert ds.get_label_info(image_id, "final").get("client") == "web-viewer"
