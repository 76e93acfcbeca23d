"""2D end to end over gRPC: PNG/TIFF slides uploaded, tiled inference, the mask back as PNG, polygons, sessions."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from monailabel.datasets import write_slides
from monailabel_api.v1 import common_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

TEMPLATE = Path(__file__).resolve().parents[2] / "monailabel" / "apps" / "pathology"
SHAPE = (160, 120)  # larger than the 64x64 tile


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("pathology")
    shutil.copytree(TEMPLATE, root / "app", ignore=shutil.ignore_patterns("__pycache__", "model"))
    (root / "studies").mkdir()
    running = start(ServerConfig(app_dir=root / "app", studies=str(root / "studies"), port=0,
                                 conf={"tile_size": "64,64"}))
    yield running
    running.stop(grace=1)


def test_png_and_tiff_upload_infer_mask_and_polygons(server: RunningServer, tmp_path: Path) -> None:
    write_slides(tmp_path, count=1, shape=SHAPE, seed=3)
    write_slides(tmp_path, count=1, shape=SHAPE, seed=4, prefix="tif", ext=".tif", labeled=0)
    with MonaiLabelClient(server.address, timeout=60) as client:
        (model,) = client.info().models
        assert model.name == "segmentation_nuclei" and model.dimension == 2
        client.upload_image("slide_png", tmp_path / "slide_000.png")
        client.upload_image("slide_tif", tmp_path / "tif_000.tif")
        assert client.get_image("slide_tif").file_extension == ".tif"

        for image_id in ("slide_png", "slide_tif"):
            out = client.infer(model.name, image_id=image_id)
            assert out.header.encoding == common_pb2.ENCODING_IMAGE_2D and out.header.file_extension == ".png"
            mask = out.array()
            assert mask.shape == SHAPE and mask.dtype == np.uint8 and set(np.unique(mask).tolist()) <= {0, 1}

        # polygons instead of a mask (random weights: whatever it finds, inside the image)
        polygons = client.infer(model.name, image_id="slide_png", params={"output": "json", "min_poly_area": 0})
        assert polygons.header is None and not polygons.data
        for element in polygons.result.get("annotation", {}).get("elements", []):
            assert all(0 <= x < SHAPE[0] and 0 <= y < SHAPE[1] for c in element["contours"] for x, y in c)

        # a 2D session: decoded once, inferred on twice; and a final label saved as PNG
        session = client.create_session(tmp_path / "slide_000.png")
        assert list(session.shape) == [*SHAPE, 3]  # as LoadImage decodes it: channel last
        a = client.infer(model.name, session_id=session.session_id).array()
        b = client.infer(model.name, image_id="slide_png").array()
        assert np.array_equal(a, b)
        client.save_label("slide_png", tmp_path / "labels" / "final" / "slide_000.png")
        got = client.download_label("slide_png", tmp_path / "got.png")
        assert Path(got).read_bytes() == (tmp_path / "labels" / "final" / "slide_000.png").read_bytes()
