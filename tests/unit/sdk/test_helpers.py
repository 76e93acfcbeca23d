"""Generic helpers, settings, post-transforms and the curated public surface."""

from __future__ import annotations

import importlib
import logging
import os

import numpy as np
import pytest
import torch

from monailabel.config import Settings
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.utils.transform import run_transforms
from monailabel.transform.post import BoundingBoxd, FindContoursd, LargestCCd, RenameKeyd, Restored
from monailabel.utils.others.generic import (
    device_list,
    download_file,
    file_checksum,
    file_ext,
    get_basename,
    get_basename_no_ext,
    name_to_device,
    remove_file,
    strtobool,
)


def test_strtobool():
    assert strtobool("Yes") and strtobool("1") and strtobool(True) and not strtobool("off") and not strtobool(None)
    with pytest.raises(ValueError):
        strtobool("maybe")


@pytest.mark.parametrize(
    ("name", "ext", "base"),
    [
        ("/d/img.nii.gz", ".nii.gz", "img"),
        ("/d/a.b.nii", ".nii", "a.b"),
        ("seg.seg.nrrd", ".seg.nrrd", "seg"),
        ("/d/IMG.NII.GZ", ".NII.GZ", "IMG"),
        ("/d/dicom_dir/", "", "dicom_dir"),
    ],
)
def test_file_ext_and_basenames(name, ext, base):
    assert file_ext(name) == ext and get_basename_no_ext(name) == base
    assert get_basename(name) == os.path.basename(os.path.normpath(name))
    assert file_ext(None) == ""


def test_download_file_offline_and_remove(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"weights")
    dest = tmp_path / "models" / "a.pt"
    assert download_file(src.as_uri(), str(dest)) == str(dest) and dest.read_bytes() == b"weights"
    src.write_bytes(b"changed")
    download_file(str(src), str(dest))  # exists already: kept
    assert dest.read_bytes() == b"weights"
    download_file(str(src), str(dest), skip_on_exists=False)
    assert dest.read_bytes() == b"changed" and len(file_checksum(str(dest))) == 64
    assert [p.name for p in dest.parent.iterdir()] == ["a.pt"]  # no partial files left
    with pytest.raises(FileNotFoundError):
        download_file(str(tmp_path / "missing"), str(tmp_path / "x"))
    remove_file(str(dest.parent))
    remove_file(str(dest.parent))
    assert not dest.parent.exists()


def test_devices_fall_back_to_cpu(caplog):
    assert device_list()[-1] == "cpu" and name_to_device(["cpu", "cuda"]) == "cpu"
    if not torch.cuda.is_available():
        with caplog.at_level(logging.WARNING):
            assert name_to_device("cuda:1") == "cpu"
        assert "CUDA is not available" in caplog.text
        assert name_to_device(None) == "cpu"


def test_settings_from_environment():
    s = Settings(
        {
            "MONAI_LABEL_INFER_CONCURRENCY": "2",
            "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
            "MONAI_LABEL_DATASTORE_FILE_EXT": "*.nii.gz,*.nrrd",
            "MONAI_LABEL_APP_CONF": '{"a": "b"}',
        }
    )
    assert s.MONAI_LABEL_INFER_CONCURRENCY == 2 and s.MONAI_LABEL_DATASTORE_AUTO_RELOAD is False
    assert s.MONAI_LABEL_DATASTORE_FILE_EXT == ["*.nii.gz", "*.nrrd"] and s.MONAI_LABEL_APP_CONF == {"a": "b"}
    d = Settings({})
    assert "*.xml" in d.MONAI_LABEL_DATASTORE_FILE_EXT and d.MONAI_LABEL_INFER_CONCURRENCY == -1
    d.MONAI_LABEL_DATASTORE_FILE_EXT.append("*.x")
    assert "*.x" not in Settings({}).MONAI_LABEL_DATASTORE_FILE_EXT


def test_largest_cc_bbox_rename():
    mask = np.zeros((1, 8, 8, 8), dtype=np.uint8)
    mask[0, 0:2, 0:2, 0:2] = 1
    mask[0, 4:8, 4:8, 4:8] = 1
    d = LargestCCd(keys="pred")({"pred": mask})
    assert d["pred"].sum() == 64 and d["pred"][0, 0, 0, 0] == 0
    d = BoundingBoxd(keys="pred")(d)
    assert d["result"]["bbox"] == [[4, 4, 4], [8, 8, 8]]
    assert RenameKeyd("pred", "label")(d)["label"] is d["pred"]


def test_find_contours_polygons_and_labels():
    mask = np.zeros((40, 30), dtype=np.uint8)
    mask[5:15, 5:20] = 1  # 10 x 15 rectangle of label 1
    mask[25:35, 2:6] = 2  # too small: area 27 < 80
    d = FindContoursd(keys="pred", labels={"tumor": 1, "other": 2})({"pred": mask, "location": [100, 200]})
    annotation = d["result"]["annotation"]
    assert [e["label"] for e in annotation["elements"]] == ["tumor"]
    (polygon,) = annotation["elements"][0]["contours"]
    assert sorted(polygon) == [[105, 205], [105, 219], [114, 205], [114, 219]]
    assert set(annotation["labels"]) == {"tumor", "other"}


def test_restored_resizes_to_the_original_shape():
    meta = {"spatial_shape": np.array([8, 8, 8]), "original_affine": np.eye(4) * 2}
    d = Restored(keys="pred", ref_image="image")({"pred": np.ones((1, 4, 4, 4), np.float32), "image_meta_dict": meta})
    assert tuple(d["pred"].shape) == (8, 8, 8) and d["pred_meta_dict"]["affine"][0, 0] == 2


def test_run_transforms_names_the_failure_and_times_each_step():
    def ok(d):
        return dict(d, x=1)

    data = run_transforms({"a": 0}, [ok], log_prefix="PRE")
    assert data["x"] == 1 and "function" in data["latencies"]["pre"]

    class Broken:
        def __call__(self, d):
            raise ValueError("bad pixel")

    with pytest.raises(MONAILabelException) as e:
        run_transforms({}, [Broken()], log_prefix="POST")
    assert e.value.error == MONAILabelError.TRANSFORM_ERROR and "Broken" in e.value.msg and "bad pixel" in e.value.msg


@pytest.mark.parametrize(
    "module",
    [
        "monailabel.interfaces",
        "monailabel.interfaces.tasks",
        "monailabel.interfaces.utils",
        "monailabel.tasks.infer",
        "monailabel.tasks.activelearning",
        "monailabel.utils.others",
    ],
)
def test_public_surface(module):
    mod = importlib.import_module(module)
    assert mod.__all__ and all(getattr(mod, name) is not None for name in mod.__all__)


def test_interfaces_import_is_light():
    import subprocess
    import sys

    code = "import sys, monailabel.interfaces as m; m.MONAILabelApp; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
