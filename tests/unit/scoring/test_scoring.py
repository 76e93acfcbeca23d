"""The ready-made scoring methods on a real LocalDatastore: epistemic (v2 and v1), Dice, Sum."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer
from monai.networks.nets import UNet
from monai.transforms import Activationsd, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

from monailabel.datasets import make_phantom, write_phantoms
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.tasks.scoring import epistemic, epistemic_v2
from monailabel.tasks.scoring.dice import Dice
from monailabel.tasks.scoring.sum import Sum
from monailabel.tasks.scoring.uncertainty import entropy_map, variance_map

SHAPE = (16, 16, 16)


def _unet() -> UNet:
    torch.manual_seed(0)
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), dropout=0.3)


class DropoutInfer(BasicInferTask):
    def __init__(self, path: str, **kwargs: Any) -> None:
        kwargs.setdefault("train_mode", True)
        kwargs.setdefault("skip_writer", True)
        super().__init__(path=path, network=_unet(), labels={"organ": 1}, dimension=3, description="dropout",
                         **kwargs)

    def pre_transforms(self, data=None):
        return [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), ScaleIntensityd(keys="image")]

    def inferer(self, data=None):
        return SimpleInferer()

    def inverse_transforms(self, data=None):
        return []

    def post_transforms(self, data=None):
        return [Activationsd(keys="pred", softmax=True)]


@pytest.fixture()
def datastore(tmp_path: Path):
    write_phantoms(tmp_path / "studies", count=4, shape=SHAPE, labeled=1)
    ds = LocalDatastore(tmp_path / "studies")
    yield ds
    ds.close()


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    torch.save({"model": _unet().state_dict()}, path)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    return path


def test_entropy_and_variance_maps() -> None:
    certain = np.stack([np.ones((1, 2, 2))] * 3)
    unsure = np.stack([np.full((1, 2, 2), 0.5)] * 3)
    assert entropy_map(certain).max() == pytest.approx(0.0)
    assert entropy_map(unsure).mean() == pytest.approx(-0.5 * np.log(0.5))
    flipping = np.stack([np.zeros((1, 2, 2)), np.ones((1, 2, 2))])
    assert variance_map(flipping).mean() > variance_map(unsure).mean()


def test_epistemic_v2_scores_unlabeled_images_and_caches_by_model(datastore: LocalDatastore, model: Path) -> None:
    method = epistemic_v2.EpistemicScoring(DropoutInfer(str(model)), simulation_size=3)
    first = method({"max_workers": 1}, datastore)
    unlabeled = datastore.get_unlabeled_images()
    assert (first["total"], first["skipped"], first["executed"], first["model_ts"]) == (3, 0, 3, 1_700_000_000)
    infos = {i: datastore.get_image_info(i) for i in unlabeled}
    assert all(0 < info["epistemic_entropy"] < 1 and info["epistemic_ts"] == 1_700_000_000 for info in infos.values())
    assert first["scores"] == pytest.approx({i: infos[i]["epistemic_entropy"] for i in unlabeled})
    assert "epistemic_entropy" not in datastore.get_image_info("phantom_000")  # labeled: not scored

    again = method({}, datastore)
    assert (again["skipped"], again["executed"]) == (3, 0)

    os.utime(model, (1_700_000_100, 1_700_000_100))  # a new model version
    third = method({"max_samples": 2, "use_variance": True}, datastore)
    assert (third["skipped"], third["executed"]) == (0, 2)
    assert method({}, datastore)["executed"] == 1


def test_epistemic_v2_checks_requests_and_needs_the_data_dict(datastore: LocalDatastore, model: Path) -> None:
    method = epistemic_v2.EpistemicScoring(DropoutInfer(str(model)))
    for bad in ({"simulation_size": "3"}, {"simulation_size": 0}, {"max_samples": -1}, {"use_variance": 1},
                {"max_workers": True}, {"device": 0}):
        with pytest.raises(MONAILabelException) as info:
            method.validate(bad)
        assert info.value.error == MONAILabelError.INVALID_INPUT and next(iter(bad)) in info.value.msg
    writer = epistemic_v2.EpistemicScoring(DropoutInfer(str(model), skip_writer=False))
    with pytest.raises(MONAILabelException, match="skip_writer=True"):
        writer({"max_workers": 1}, datastore)


def test_epistemic_v1_with_network_and_checkpoint(datastore: LocalDatastore, model: Path, tmp_path: Path) -> None:
    transforms = [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), ScaleIntensityd(keys="image")]
    method = epistemic.EpistemicScoring(str(model), network=_unet(), transforms=transforms, roi_size=(16, 16, 16),
                                        num_samples=2)
    result = method({"device": "cpu"}, datastore)
    assert sorted(result) == datastore.get_unlabeled_images()
    assert all(0 < r["epistemic_entropy"] < 1 and r["epistemic_ts"] == 1_700_000_000 for r in result.values())
    assert method({}, datastore) == {}  # same model: nothing to do
    assert epistemic.EpistemicScoring(str(tmp_path / "missing.pt"))({}, datastore) is None
    with pytest.raises(MONAILabelException, match="num_samples"):
        method({"num_samples": "many"}, datastore)


def _label(ds: LocalDatastore, tmp_path: Path, image_id: str, tag: str, mask: np.ndarray) -> None:
    _, _, affine = make_phantom(SHAPE, 0)
    path = tmp_path / f"{image_id}-{tag}.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(path))
    ds.save_label(image_id, str(path), tag, {})


def test_dice_compares_final_and_original(datastore: LocalDatastore, tmp_path: Path) -> None:
    a = np.zeros(SHAPE, np.uint8)
    a[2:6] = 1
    b = np.zeros(SHAPE, np.uint8)
    b[4:8] = 1
    _label(datastore, tmp_path, "phantom_000", "original", datastore_label(datastore, "phantom_000"))
    _label(datastore, tmp_path, "phantom_001", "final", a)
    _label(datastore, tmp_path, "phantom_001", "original", b)
    _label(datastore, tmp_path, "phantom_002", "original", b)  # no final label: not scored
    result = Dice()({}, datastore)
    assert result == pytest.approx({"phantom_000": 1.0, "phantom_001": 0.5})
    assert datastore.get_image_info("phantom_001")["dice"] == pytest.approx(0.5)
    assert Dice()({"y": "original", "y_pred": "final"}, datastore)["phantom_001"] == pytest.approx(0.5)


def datastore_label(ds: LocalDatastore, image_id: str) -> np.ndarray:
    return np.asarray(nib.load(ds.get_label_uri(image_id, "final")).dataobj)


def test_sum_measures_labels_into_label_info(datastore: LocalDatastore, tmp_path: Path) -> None:
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:5, 2:4, 2:4] = 1
    _label(datastore, tmp_path, "phantom_001", "original", mask)
    result = Sum()({}, datastore)
    assert result["original"]["phantom_001"] == {"sum": 8, "slices": 2}
    final = datastore_label(datastore, "phantom_000")
    assert result["final"]["phantom_000"] == {
        "sum": int(final.sum()), "slices": int((final.reshape(SHAPE[0], -1) > 0).any(axis=1).sum())
    }
    assert datastore.get_label_info("phantom_001", "original")["sum"] == 8
