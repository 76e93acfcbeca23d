"""The pathology template: tiled 2D inference on images larger than a tile, masks or polygons, training."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.inferers import SlidingWindowInferer
from monai.transforms import LoadImage

from monailabel.datasets import write_slides
from monailabel_server.app_loader import load_app

TEMPLATE = Path(__file__).resolve().parents[3] / "monailabel" / "apps" / "pathology"
SHAPE = (200, 136)  # larger than the 64x64 tile on both axes, and not a multiple of it


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("pathology")
    shutil.copytree(TEMPLATE, root / "app", ignore=shutil.ignore_patterns("__pycache__", "model"))
    write_slides(root / "studies", count=3, shape=SHAPE)
    write_slides(root / "studies", count=1, shape=SHAPE, seed=7, prefix="tiff", ext=".tif", labeled=0)
    return load_app(root / "app", str(root / "studies"), {"tile_size": "64,64", "patch_size": "32,32"})


def test_info_and_weights(app: Any) -> None:
    info = app.info()
    assert list(info["models"]) == ["segmentation_nuclei"] and info["labels"] == {"nuclei": 1}
    assert info["models"]["segmentation_nuclei"]["dimension"] == 2
    assert info["weights"]["segmentation_nuclei"].startswith("random weights")


@pytest.mark.parametrize("image", ["slide_000", "tiff_000"])
def test_tiled_inference_answers_a_png_mask_of_the_whole_image(app: Any, image: str) -> None:
    task = app.infer_tasks()["segmentation_nuclei"]
    assert isinstance(task.inferer({"image": torch.zeros(3, *SHAPE)}), SlidingWindowInferer)
    result = app.infer({"model": "segmentation_nuclei", "image": image})
    assert result["file"].endswith(".png")
    mask = np.asarray(LoadImage(image_only=True)(result["file"]))
    Path(result["file"]).unlink()
    assert mask.shape == SHAPE and set(np.unique(mask).tolist()) <= {0, 1}


@pytest.mark.slow  # trains the nuclei model
def test_train_then_polygons(app: Any) -> None:
    torch.manual_seed(0)
    stats = app.train({"model": "segmentation_nuclei", "max_epochs": 3, "val_split": 0.34, "device": "cpu",
                       "dataset": "Dataset", "name": "unit"})
    assert stats["epoch"] == 3 and stats["best_metric"] > 0.3
    result = app.infer({"model": "segmentation_nuclei", "image": "slide_002", "output": "json"})
    assert result["file"] is None
    (element,) = result["params"]["annotation"]["elements"]
    assert element["label"] == "nuclei" and len(element["contours"]) >= 3
    assert all(0 <= x < SHAPE[0] and 0 <= y < SHAPE[1] for c in element["contours"] for x, y in c)
