"""The modules MONAI Label 0.8.5's sample apps import, on real data: bundles, scribbles, DeepEdit, helpers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import EnsureChannelFirstd, LoadImaged, Spacingd

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import IMAGE_PATH_KEY, BasicInferTask, stash_colliding_keys
from monailabel.utils.others.generic import (
    create_dataset_from_path,
    download_file,
    failed_download,
    get_bundle_models,
)


def _nifti(path: Path, shape=(20, 20, 12), spacing=(2.0, 2.0, 3.0)) -> Path:
    data = np.zeros(shape, np.float32)
    data[6:14, 6:14, 4:8] = 100.0
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))
    return path


class _Spaced(BasicInferTask):
    """Spacingd on NIfTI, as every radiology model of the 0.8.5 apps does; records what its stages saw."""

    seen: dict = {}

    def pre_transforms(self, data=None):
        return [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"),
                Spacingd(keys="image", pixdim=(4.0, 4.0, 3.0)), self._record]

    def _record(self, d):
        self.seen = {"image_path" in d, IMAGE_PATH_KEY in d}
        self.seen_path = d.get(IMAGE_PATH_KEY)
        return d

    def post_transforms(self, data=None):
        return [self._post]

    def _post(self, d):
        self.post_image_path = d.get("image_path")
        d["pred"] = (d["pred"][:1] > 0).to(torch.uint8)
        return d


def test_spacingd_on_nifti_with_image_path_and_id(tmp_path: Path) -> None:
    path = _nifti(tmp_path / "ct.nii.gz")
    net = torch.nn.Conv3d(1, 1, 1)
    task = _Spaced(network=net, labels=["organ"])
    out = task.infer_in_memory({"image": str(path), "image_id": "ct"})
    assert out.mask is not None and out.mask.array.shape == (10, 10, 12)
    assert task.seen == {False, True}  # during pre-transforms: no image_path string, the path under IMAGE_PATH_KEY
    assert task.seen_path == str(path)
    assert task.post_image_path == str(path)  # MONAI Label's image_path is back for the later stages


def test_stash_colliding_keys_keeps_meta_dicts() -> None:
    data = {"image": 1, "image_path": "a", "image_id": "b", "image_meta_dict": {}, "label_info": [1], "model": "m"}
    aside = stash_colliding_keys(data)
    assert aside == {"image_path": "a", "image_id": "b"}
    assert set(data) == {"image", "image_meta_dict", "label_info", "model"}


def test_offline_download_fails_fast_and_makes_the_model_unavailable(tmp_path: Path) -> None:
    dest = tmp_path / "model" / "pretrained_x.pt"
    started = time.monotonic()
    assert download_file("http://127.0.0.1:9/pretrained_x.pt", str(dest)) == str(dest)
    assert time.monotonic() - started < 10 and not dest.exists()
    reason = failed_download(str(dest))
    assert reason and "use_pretrained_model false" in reason and "model/pretrained_x.pt" in reason

    class Seg(_Spaced):
        pass

    task = Seg(path=[str(dest), str(tmp_path / "model" / "x.pt")], network=torch.nn.Conv3d(1, 1, 1))
    assert task.unavailable_reason() == reason
    (tmp_path / "model" / "x.pt").write_bytes(b"")  # a published model makes it available again
    assert task.unavailable_reason() is None


def test_create_dataset_from_path(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for n in ("a", "b"):
        (tmp_path / "images" / f"{n}.jpg").write_bytes(b"x")
    (tmp_path / "labels" / "a.png").write_bytes(b"x")
    assert create_dataset_from_path(str(tmp_path)) == [
        {"image": str(tmp_path / "images" / "a.jpg"), "label": str(tmp_path / "labels" / "a.png")}]


def test_get_bundle_models_local_zoo_and_missing(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "model" / "local_one").mkdir(parents=True)
    zoo = tmp_path / "zoo"
    (zoo / "zoo_one").mkdir(parents=True)
    found = get_bundle_models(str(app), {"models": "local_one, zoo_one_v0.1.0, missing", "zoo_dir": str(zoo)})
    assert found == {"local_one": str(app / "model" / "local_one"), "zoo_one_v0.1.0": str(zoo / "zoo_one"),
                     "missing": str(app / "model" / "missing")}


def test_missing_bundle_is_unavailable_with_where_to_put_it(tmp_path: Path) -> None:
    from monailabel.tasks.infer.bundle import BundleInferTask

    task = BundleInferTask(str(tmp_path / "model" / "spleen_ct_segmentation"), {})
    assert not task.is_valid()
    assert "model/spleen_ct_segmentation" in (task.unavailable_reason() or "")


def test_get_class_names_finds_task_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monailabel.utils.others.class_utils import get_class_names

    pkg = tmp_path / "cfgpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text(
        "from monailabel.interfaces.config import TaskConfig\n"
        "class One(TaskConfig):\n    def infer(self): pass\n    def trainer(self): pass\n"
        "class Helper:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import cfgpkg

    assert get_class_names(cfgpkg, "TaskConfig") == ["cfgpkg.one.One"]


def test_heuristic_planner_measures_the_datastore(tmp_path: Path) -> None:
    from monailabel.datastore.local import LocalDatastore
    from monailabel.utils.others.planner import HeuristicPlanner

    _nifti(tmp_path / "a.nii.gz", shape=(20, 22, 12), spacing=(2.0, 2.0, 3.0))
    planner = HeuristicPlanner()
    planner.run(LocalDatastore(str(tmp_path), extensions=["*.nii.gz"]))
    assert list(planner.target_spacing) == [2.0, 2.0, 3.0]
    assert planner.spatial_size == [20, 22, 16]
    assert planner.max_pix == 100.0 and planner.min_pix == 0.0


def test_histogram_and_gmm_graph_cut_follow_the_scribbles(tmp_path: Path) -> None:
    pytest.importorskip("numpymaxflow", reason="scribbles need numpymaxflow (see the README)")
    from monailabel.scribbles.infer import GMMBasedGraphCut, HistogramBasedGraphCut

    shape = (24, 24, 12)
    image = np.full(shape, -200.0, np.float32)
    image[6:18, 6:18, 3:9] = 150.0
    image += np.random.default_rng(0).normal(0, 5, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "img.nii.gz"))
    scribbles = np.zeros(shape, np.uint8)
    scribbles[1:3, 1:3, 1:3] = 2  # background stroke
    scribbles[10:12, 10:12, 5:7] = 3  # foreground stroke
    nib.save(nib.Nifti1Image(scribbles, np.eye(4)), str(tmp_path / "scr.nii.gz"))
    for task in (HistogramBasedGraphCut(pix_dim=(1.0, 1.0, 1.0)), GMMBasedGraphCut(pix_dim=(1.0, 1.0, 1.0),
                                                                                    num_mixtures=2)):
        assert task.type == InferType.SCRIBBLES and task.unavailable_reason() is None
        out = task.infer_in_memory({"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "scr.nii.gz")})
        mask = out.mask.array
        assert mask.shape == shape
        inside = mask[6:18, 6:18, 3:9].mean()
        outside = (mask.sum() - mask[6:18, 6:18, 3:9].sum()) / (mask.size - 12 * 12 * 6)
        assert inside > 0.9 and outside < 0.05, (type(task).__name__, inside, outside)


def test_deepedit_guidance_transforms() -> None:
    from monai.data import MetaTensor

    from monailabel.deepedit.transforms import (
        AddClickGuidanced,
        AddGuidanceSignald,
        AddInitialSeedPointd,
        ResizeGuidanced,
    )

    image = MetaTensor(torch.zeros(3, 32, 32), meta={"spatial_shape": (64, 64)})
    d = AddClickGuidanced(keys=("foreground", "background"))({"foreground": [[10, 20]], "background": []})
    assert d["guidance"] == [[[10, 20]], []]
    d = ResizeGuidanced(keys="guidance", ref_image="image")({**d, "image": image})
    assert d["guidance"] == [[[5, 10]], []]
    d = AddGuidanceSignald(keys="image")(d)
    assert d["image"].shape == (5, 32, 32)
    assert float(d["image"][3, 5, 10]) == 1.0 and float(d["image"][4].max()) == 0.0

    label = np.zeros((1, 16, 16), np.uint8)
    label[0, 4:12, 4:12] = 1
    seeded = AddInitialSeedPointd(keys="guidance", label="label")
    seeded.set_random_state(0)
    pos, neg = json.loads(seeded({"label": label})["guidance"])
    assert len(pos) == 1 and label[tuple(pos[0])] == 1 and neg == [[-1, -1, -1]]


def test_pre_transforms_accept_arrays_and_normalise_labels() -> None:
    from monailabel.transform.pre import LoadImageExd, NormalizeLabeld

    frame = np.zeros((8, 6, 3), np.uint8)
    d = LoadImageExd(keys="image")({"image": frame})
    assert tuple(d["image"].shape) == (8, 6, 3) and d["image_meta_dict"]["spatial_shape"] == (8, 6)
    label = np.array([0, 2, 5])
    assert NormalizeLabeld(keys="label", value=1)({"label": label})["label"].tolist() == [0, 1, 1]


def test_remote_datastores_say_what_is_missing(tmp_path: Path) -> None:
    from monailabel.datastore.cvat import CVATDatastore
    from monailabel.datastore.dsa import DSADatastore

    with pytest.raises(MONAILabelException) as e:
        DSADatastore(api_url="http://127.0.0.1:9/api/v1")
    assert e.value.error == MONAILabelError.PRECONDITION_FAILED and "DSA" in e.value.msg
    ds = CVATDatastore(str(tmp_path), api_url="http://127.0.0.1:9", extensions=["*.png"])
    assert ds.name() == "CVAT+Local Datastore" and ds.list_images() == []
    with pytest.raises(MONAILabelException) as e:
        ds.task_status()
    assert e.value.error == MONAILabelError.PRECONDITION_FAILED and "127.0.0.1:9" in e.value.msg


def test_sam2_is_listed_unavailable(tmp_path: Path) -> None:
    from monailabel.sam2.infer import Sam2InferTask
    from monailabel.sam2.utils import is_sam2_module_available

    assert is_sam2_module_available()
    task = Sam2InferTask(model_dir=str(tmp_path), type=InferType.DEEPGROW, dimension=2)
    assert task.unavailable_reason()
    with pytest.raises(MONAILabelException) as e:
        task({"image": "x"})
    assert e.value.error == MONAILabelError.PRECONDITION_FAILED
