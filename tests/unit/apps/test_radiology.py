"""The radiology template: its models (automatic, deepgrow, deepedit), trainers, conf keys and weights."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict

import nibabel as nib
import numpy as np
import pytest
import torch

from monailabel.datasets import make_phantom, write_phantoms
from monailabel.interfaces.exception import MONAILabelException
from monailabel_server.app_loader import load_app

TEMPLATE = Path(__file__).resolve().parents[3] / "monailabel" / "apps" / "radiology"
SHAPE = (40, 40, 32)
LABELS = '{"organ": 1, "cyst": 2}'


def _app(root: Path, **conf: str) -> Any:
    app_dir = root / "app"
    if not app_dir.exists():
        shutil.copytree(TEMPLATE, app_dir, ignore=shutil.ignore_patterns("__pycache__", "model"))
    studies = root / "studies"
    if not studies.exists():
        write_phantoms(studies, count=3, shape=SHAPE, labels=2)
    return load_app(app_dir, str(studies), {"roi_size": "32,32,32", **conf})


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _app(tmp_path_factory.mktemp("radiology"), models="all", labels=LABELS)


def _infer(app: Any, request: Dict[str, Any]) -> np.ndarray:
    result = app.infer(request)
    img = nib.load(result["file"])
    assert img.get_data_dtype() == np.uint8
    array = np.asarray(img.dataobj)
    Path(result["file"]).unlink()
    return array


def test_models_trainers_strategies_and_labels(app: Any) -> None:
    assert sorted(app.infer_tasks()) == ["deepedit", "deepedit_seg", "deepgrow_3d", "segmentation"]
    assert sorted(app.trainers()) == ["deepedit", "deepgrow_3d", "segmentation"]
    assert sorted(app.strategies()) == ["first", "random"]
    info = app.info()
    assert info["labels"] == {"organ": 1, "cyst": 2}
    assert info["models"]["deepgrow_3d"]["type"] == "deepgrow" and info["models"]["deepedit"]["type"] == "deepedit"
    # nothing is downloaded: every model says it starts from random weights
    assert set(info["weights"]) == set(app.infer_tasks())
    assert all(w.startswith("random weights") for w in info["weights"].values())


@pytest.mark.parametrize("model", ["segmentation", "deepedit_seg", "deepedit"])
def test_automatic_models_answer_a_multi_label_mask_on_the_image_grid(app: Any, model: str) -> None:
    mask = _infer(app, {"model": model, "image": "phantom_000"})
    assert mask.shape == SHAPE
    assert set(np.unique(mask).tolist()) <= {0, 1, 2}


def test_deepgrow_clicks_change_the_mask_and_target_a_label(app: Any) -> None:
    _, label, _ = make_phantom(SHAPE, 0, labels=2)
    inside = [int(round(c)) for c in np.argwhere(label == 1).mean(axis=0)]
    one = _infer(app, {"model": "deepgrow_3d", "image": "phantom_000", "foreground": [inside]})
    two = _infer(app, {"model": "deepgrow_3d", "image": "phantom_000", "foreground": [inside],
                       "background": [[2, 2, 2], [37, 37, 29]]})
    assert one.shape == SHAPE and set(np.unique(one).tolist()) <= {0, 1}
    assert not np.array_equal(one, two), "background clicks must change the answer"
    cyst = _infer(app, {"model": "deepgrow_3d", "image": "phantom_000", "foreground": [inside], "label": "cyst"})
    assert np.array_equal(cyst > 0, one > 0) and set(np.unique(cyst).tolist()) <= {0, 2}


@pytest.mark.slow  # runs the full DeepEdit network several times
def test_deepedit_clicks_change_the_automatic_answer(app: Any) -> None:
    _, label, _ = make_phantom(SHAPE, 0, labels=2)
    inside = [int(round(c)) for c in np.argwhere(label == 1).mean(axis=0)]
    auto = _infer(app, {"model": "deepedit", "image": "phantom_000"})
    clicked = _infer(app, {"model": "deepedit", "image": "phantom_000", "foreground": [inside],
                           "background": [[2, 2, 2]]})
    assert not np.array_equal(auto, clicked)
    by_name = _infer(app, {"model": "deepedit", "image": "phantom_000", "organ": [inside], "background": [[2, 2, 2]]})
    assert np.array_equal(by_name, clicked)  # MONAI Label's label-named clicks mean the same


@pytest.mark.slow  # trains each model
@pytest.mark.parametrize("model", ["segmentation", "deepgrow_3d", "deepedit"])
def test_trainers_run_and_publish(app: Any, model: str) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    stats = app.train({"model": model, "max_epochs": 1, "val_split": 0.34, "device": "cpu", "dataset": "Dataset",
                       "name": "unit"})
    assert stats["epoch"] == 1 and 0.0 <= stats["best_metric"] <= 1.0
    published = Path(app.app_dir) / "model" / f"{model}.pt"
    assert published.is_file()
    # the infer task now reports (and uses) the published checkpoint
    assert app.info()["weights"][model] == f"checkpoint {published}"


@pytest.mark.slow  # builds the app once per configuration
def test_conf_keys_network_pretrained_and_invalid_models(tmp_path: Path) -> None:
    app = _app(tmp_path, models="segmentation", network="segresnet", preload="true")
    assert list(app.infer_tasks()) == ["segmentation"] and app.info()["labels"] == {"organ": 1}
    assert _infer(app, {"model": "segmentation", "image": "phantom_001"}).shape == SHAPE

    # the app's own pretrained checkpoint is used when present (use_pretrained_model, as MONAI Label)
    model_dir = tmp_path / "app" / "model"
    net = app.infer_tasks()["segmentation"].network
    torch.save({"model": net.state_dict()}, model_dir / "pretrained_segmentation_segresnet.pt")
    app = _app(tmp_path, models="segmentation", network="segresnet")
    assert app.info()["weights"]["segmentation"].endswith("pretrained_segmentation_segresnet.pt")
    app = _app(tmp_path, models="segmentation", network="segresnet", use_pretrained_model="false")
    assert app.info()["weights"]["segmentation"].startswith("random weights")

    with pytest.raises(MONAILabelException, match="nope"):
        _app(tmp_path, models="nope")


@pytest.mark.slow  # scores with repeated dropout inference
def test_epistemic_strategy_and_scoring(tmp_path: Path) -> None:
    app = _app(tmp_path, models="segmentation", epistemic_enabled="true", epistemic_samples="3")
    assert sorted(app.strategies()) == ["first", "random", "segmentation_epistemic"]
    assert list(app.scoring_methods()) == ["segmentation_epistemic"]
    # every phantom has a final label: score and pick among images added unlabeled
    for i in range(2):
        image, _, affine = make_phantom(SHAPE, 50 + i)
        nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "studies" / f"new_{i}.nii.gz"))
    app.datastore().refresh()
    torch.manual_seed(0)
    app.scoring({"method": "segmentation_epistemic", "device": "cpu"})
    scores = {i: app.datastore().get_image_info(i).get("epistemic_entropy") for i in ("new_0", "new_1")}
    assert all(isinstance(s, float) and s >= 0 for s in scores.values()), scores
    picked = app.next_sample({"strategy": "segmentation_epistemic"})["id"]
    assert picked == max(scores, key=lambda i: scores[i])
