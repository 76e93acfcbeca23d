"""MONAI Label 0.8.5's own sample apps, unmodified, served over gRPC by a real server on port 0.

The apps come from the released wheel (``pip download --no-deps monailabel==0.8.5``, cached in the
temporary folder); the test is skipped, saying why, when the package index cannot be reached.
Weights are random (``use_pretrained_model false``): the tests check that the apps load, that each
model runs on our SDK and returns a mask on the image's grid, and that unavailable models say why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import pytest

from monailabel.datasets import write_phantoms
from monailabel_api.v1 import app_pb2, app_pb2_grpc
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .helpers import assert_status

pytestmark = pytest.mark.slow

CACHE = Path(tempfile.gettempdir()) / "monailabel-grpc-test-cache" / "monailabel-0.8.5"


def sample_apps() -> Path:
    """The 0.8.5 wheel's ``sample-apps`` folder, downloaded once and unpacked in a cache folder."""
    apps = CACHE / "sample-apps"
    if apps.is_dir():
        return apps
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(CACHE.glob("monailabel-0.8.5-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "monailabel==0.8.5", "-d", str(CACHE)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wheels = list(CACHE.glob("monailabel-0.8.5-*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.skip(f"cannot download monailabel==0.8.5 from the package index: {done.stderr.strip()[-300:]}")
    staging = Path(tempfile.mkdtemp(dir=CACHE))
    with zipfile.ZipFile(wheels[0]) as z:
        for name in z.namelist():
            if "/sample-apps/" in name:
                z.extract(name, staging)
    found = next(staging.glob("*.data/data/monailabel/sample-apps"))
    try:
        found.rename(apps)
    except OSError:  # another test process unpacked it first
        assert apps.is_dir()
    shutil.rmtree(staging, ignore_errors=True)
    return apps


def serve(app: Path, studies: Path, conf: dict) -> RunningServer:
    config = ServerConfig(app_dir=app, studies=str(studies), port=0, max_volume_bytes=64 << 20, conf=conf)
    return start(config)


def app_info(server: RunningServer) -> app_pb2.GetAppInfoResponse:
    with grpc.insecure_channel(server.address) as ch:
        return app_pb2_grpc.AppServiceStub(ch).GetAppInfo(app_pb2.GetAppInfoRequest(), timeout=60)


@pytest.fixture(scope="module")
def radiology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("radiology")
    app = root / "radiology"
    shutil.copytree(sample_apps() / "radiology", app)
    studies = root / "studies"
    write_phantoms(studies, count=2, shape=(40, 40, 24), labeled=2)
    conf = {"models": "segmentation_spleen,deepedit,deepgrow_3d,segmentation", "use_pretrained_model": "false"}
    running = serve(app, studies, conf)
    yield running
    running.stop(grace=1)


def _struct(message) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message)


def test_radiology_app_loads_and_lists_unavailable_models(radiology: RunningServer) -> None:
    info = app_info(radiology)
    assert info.name.startswith("MONAILabel - Radiology")
    unavailable = _struct(info.info)["unavailable_models"]
    # SAM2 cannot run here: listed with the reason, not silently missing
    assert "sam_2d" in unavailable and "sam2" in unavailable["sam_2d"].lower()
    # the typed model list says it too: every model, the unavailable ones with their reason
    typed = {m.name: m.unavailable_reason for m in info.models}
    assert typed["sam_2d"] == unavailable["sam_2d"] and typed["segmentation_spleen"] == ""
    assert set(radiology.app.infer_tasks()) >= {"segmentation_spleen", "deepedit", "deepgrow_3d", "segmentation"}


def test_unavailable_model_fails_with_precondition(radiology: RunningServer) -> None:
    with MonaiLabelClient(radiology.address, timeout=120) as client:
        assert_status(grpc.StatusCode.FAILED_PRECONDITION,
                      lambda: client.infer("sam_2d", image_id="phantom_001", foreground=[[5, 5]]), "sam2")


def test_segmentation_spleen_infers_on_nifti(radiology: RunningServer) -> None:
    # Spacingd of MONAI 1.6 updates every ``image_*`` entry: image_path/image_id must not be strings there
    with MonaiLabelClient(radiology.address, timeout=300) as client:
        out = client.infer("segmentation_spleen", image_id="phantom_001")
    array, _ = out.array_and_affine()
    assert array.shape == (40, 40, 24)
    assert out.labels == {"spleen": 1}
    assert set(np.unique(array)) <= {0, 1}


def test_deepgrow_3d_and_deepedit_take_clicks(radiology: RunningServer) -> None:
    with MonaiLabelClient(radiology.address, timeout=600) as client:
        grown = client.infer("deepgrow_3d", image_id="phantom_001", foreground=[[20, 20, 12]])
        assert grown.array().shape == (40, 40, 24)
        edited = client.infer("deepedit", image_id="phantom_001", background=[[2, 2, 2]],
                              params={"spleen": [[20, 20, 12]]})
        assert edited.array().shape == (40, 40, 24)


def test_radiology_scribbles_graph_cut(radiology: RunningServer, tmp_path: Path) -> None:
    # The app's own Histogram+GraphCut / GMM+GraphCut; scribbles come as a volume (MONAI Label's "label" key)
    pytest.importorskip("numpymaxflow", reason="scribbles need numpymaxflow (README: Bring your MONAI Label app)")
    import nibabel as nib

    app = radiology.app
    store = app.datastore()
    image = nib.load(store.get_image_uri("phantom_001"))
    truth = np.asarray(nib.load(store.get_label_uri("phantom_001", "final")).dataobj) > 0
    task = app.infer_tasks()["Histogram+GraphCut"]
    scribbles = np.zeros(truth.shape, np.uint8)
    inside = np.argwhere(truth)
    centre = inside[len(inside) // 2]
    scribbles[tuple(slice(c - 1, c + 2) for c in centre)] = task.scribbles_fg_label
    scribbles[:3, :3, :] = task.scribbles_bg_label
    path = tmp_path / "scribbles.nii.gz"
    nib.save(nib.Nifti1Image(scribbles, image.affine), str(path))
    # GMM's app default (sigma 0.5) smooths a small phantom away; sigma is a per-request setting
    for model, params in (("Histogram+GraphCut", {}), ("GMM+GraphCut", {"sigma": 0.1})):
        out = app.infer_in_memory({"model": model, "image": "phantom_001", "label": str(path), **params})
        mask = out.mask.array > 0
        assert mask.shape == truth.shape
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        assert dice > 0.5, (model, dice)


def start_training_over_grpc(server: RunningServer, model: str) -> str:
    """Starts a training job over gRPC, checks it was accepted, and cancels it; returns its id.

    The one place that touches the job RPCs (they are being reworked): adapt it to the new API.
    """
    with MonaiLabelClient(server.address, timeout=60) as client:
        job = client.start_train(model, max_epochs=1, device="cpu")
        assert job.job_id and job.model == model
        client.cancel_job(job.job_id)
        return job.job_id


def test_segmentation_trains_an_epoch_and_publishes(radiology: RunningServer) -> None:
    # SDK-level training (the job RPCs are being reworked): the app's own trainer, one epoch on CPU
    app = radiology.app
    published = Path(app.app_dir) / "model" / "segmentation.pt"
    assert not published.exists()
    app.train({"model": "segmentation", "max_epochs": 1, "train_batch_size": 1, "val_split": 0.5,
               "dataset": "Dataset", "device": "cpu", "multi_gpu": False})
    assert published.is_file() and published.stat().st_size > 0
    assert "segmentation" in {t.name for t in app_info(radiology).trainers}
    assert start_training_over_grpc(radiology, "segmentation")


def test_failed_pretrained_download_lists_the_model_unavailable(tmp_path: Path) -> None:
    # the app's default use_pretrained_model=true, with its download URL pointed at a closed local port
    app = tmp_path / "radiology"
    shutil.copytree(sample_apps() / "radiology", app)
    studies = tmp_path / "studies"
    write_phantoms(studies, count=1, shape=(40, 40, 24), labeled=0)
    conf = {"models": "segmentation_spleen", "pretrained_path": "http://127.0.0.1:9", "sam2": "false",
            "scribbles": "false"}
    running = serve(app, studies, conf)
    try:
        reason = _struct(app_info(running).info)["unavailable_models"]["segmentation_spleen"]
        assert "use_pretrained_model false" in reason and "pretrained_segmentation_spleen.pt" in reason
        image_id = running.app.datastore().list_images()[0]
        with MonaiLabelClient(running.address, timeout=60) as client:
            assert_status(grpc.StatusCode.FAILED_PRECONDITION,
                          lambda: client.infer("segmentation_spleen", image_id=image_id),
                          "use_pretrained_model false")
    finally:
        running.stop(grace=1)


# The app's own post-processing (skimage on a boolean mask) warns; the warning is the app's, not ours.
@pytest.mark.filterwarnings("ignore:.*boolean array")
def test_pathology_app_infers_on_a_2d_image(tmp_path: Path) -> None:
    from monailabel.datasets import write_slides

    app = tmp_path / "pathology"
    shutil.copytree(sample_apps() / "pathology", app)
    studies = tmp_path / "slides"
    ids = write_slides(studies, count=1, shape=(64, 64), labeled=0)
    conf = {"models": "segmentation_nuclei", "use_pretrained_model": "false", "roi_size": "[64, 64]"}
    running = serve(app, studies, conf)
    try:
        assert "segmentation_nuclei" in running.app.infer_tasks()
        with MonaiLabelClient(running.address, timeout=300) as client:
            out = client.infer("segmentation_nuclei", image_id=ids[0])
        # the app's PolygonWriter: nuclei as polygons (JSON), on the slide's size
        assert out.header.file_extension == ".json"
        assert isinstance(out.result["annotations"], list) and out.result["model"] == "segmentation_nuclei"
        assert isinstance(json.loads(out.data), dict)
    finally:
        running.stop(grace=1)


@pytest.mark.filterwarnings("ignore:.*boolean array")
def test_endoscopy_deepedit_takes_clicks_on_a_frame(tmp_path: Path) -> None:
    from PIL import Image

    app = tmp_path / "endoscopy"
    shutil.copytree(sample_apps() / "endoscopy", app)
    studies = tmp_path / "frames"
    studies.mkdir()
    frame = np.zeros((64, 80, 3), np.uint8)
    frame[20:40, 30:50] = 200
    Image.fromarray(frame).save(studies / "frame_0.jpg")
    running = serve(app, studies, {"models": "deepedit", "use_pretrained_model": "false"})
    try:
        with MonaiLabelClient(running.address, timeout=300) as client:
            out = client.infer("deepedit", image_id="frame_0", foreground=[[30, 40]])
        assert out.header.file_extension == ".json" and out.result["model"] == "deepedit"
    finally:
        running.stop(grace=1)


def write_bundle(root: Path, name: str, dims: int) -> Path:
    """A small MONAI bundle: metadata, an inference config, (3D) a train config, and random weights."""
    import torch
    from monai.networks.nets import UNet

    bundle = root / name
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    keys = '["image", "label"]'
    metadata = {
        "version": "0.1.0", "description": f"test {dims}D segmentation",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [32] * dims}},
            "outputs": {"pred": {"type": "image", "num_channels": 2,
                                 "channel_def": {"0": "background", "1": "organ"}}}},
    }
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    net = {"_target_": "UNet", "spatial_dims": dims, "in_channels": 1, "out_channels": 2,
           "channels": [4, 8], "strides": [2], "num_res_units": 0}
    inference = {
        "bundle_root": ".", "device": "$torch.device('cpu')", "network_def": net,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "ScaleIntensityd", "keys": "image"},
            {"_target_": "EnsureTyped", "keys": "image"}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32] * dims, "sw_batch_size": 1},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "$@bundle_root + '/eval'"}]},
    }
    (bundle / "configs" / "inference.json").write_text(json.dumps(inference))
    if dims == 3:
        train = {
            "bundle_root": ".", "device": "$torch.device('cpu')", "network_def": net,
            "network": "$@network_def.to(@device)",
            "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
            "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 1e-3},
            "train": {
                "preprocessing": {"_target_": "Compose", "transforms": [
                    {"_target_": "LoadImaged", "keys": json.loads(keys)},
                    {"_target_": "EnsureChannelFirstd", "keys": json.loads(keys)},
                    {"_target_": "ScaleIntensityd", "keys": "image"},
                    {"_target_": "RandSpatialCropd", "keys": json.loads(keys), "roi_size": [32, 32, 16],
                     "random_size": False}]},
                "dataset": {"_target_": "Dataset", "data": [], "transform": "@train#preprocessing"},
                "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 1},
                "handlers": [{"_target_": "CheckpointSaver", "save_dir": "$@bundle_root + '/models'",
                              "save_dict": {"model": "@network"}, "save_final": True,
                              "final_filename": "model.pt"}],
                "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 2, "device": "@device",
                            "train_data_loader": "@train#dataloader", "network": "@network",
                            "loss_function": "@loss", "optimizer": "@optimizer",
                            "train_handlers": "@train#handlers"},
            },
            "run": ["$@train#trainer.run()"],
        }
        (bundle / "configs" / "train.json").write_text(json.dumps(train))
    model = UNet(spatial_dims=dims, in_channels=1, out_channels=2, channels=[4, 8], strides=[2], num_res_units=0)
    torch.save(model.state_dict(), bundle / "models" / "model.pt")
    return bundle


def test_monaibundle_app_serves_and_trains_local_bundles(tmp_path: Path) -> None:
    app = tmp_path / "monaibundle"
    shutil.copytree(sample_apps() / "monaibundle", app)
    seg3d = write_bundle(app / "model", "organ_ct_segmentation", 3)
    write_bundle(app / "model", "organ_2d_segmentation", 2)
    studies = tmp_path / "studies"
    write_phantoms(studies, count=2, shape=(40, 40, 24), labeled=2)
    from PIL import Image

    Image.fromarray((np.arange(48 * 64).reshape(48, 64) % 251).astype(np.uint8)).save(studies / "slice_2d.png")
    conf = {"models": "organ_ct_segmentation,organ_2d_segmentation,absent_bundle", "sam2": "false"}
    running = serve(app, studies, conf)
    try:
        info = app_info(running)
        unavailable = _struct(info.info)["unavailable_models"]
        assert set(unavailable) == {"absent_bundle"} and "model/absent_bundle" in unavailable["absent_bundle"]
        models = {m.name: m for m in info.models}
        assert models["organ_2d_segmentation"].dimension == 2 and models["organ_ct_segmentation"].dimension == 3
        assert models["organ_ct_segmentation"].labels == {"organ": 1}
        with MonaiLabelClient(running.address, timeout=300) as client:
            out = client.infer("organ_ct_segmentation", image_id="phantom_001")
            array, _ = out.array_and_affine()
            assert array.shape == (40, 40, 24) and out.labels == {"organ": 1}
            flat = client.infer("organ_2d_segmentation", image_id="slice_2d")
            assert flat.header.file_extension == ".png" and flat.array().shape == (64, 48)  # (x, y) as MONAI reads it
            assert_status(grpc.StatusCode.FAILED_PRECONDITION,
                          lambda: client.infer("absent_bundle", image_id="phantom_001"), "absent_bundle")
        assert not (seg3d / "eval").exists()  # SaveImaged is filtered out: the server writes the mask
        assert "organ_ct_segmentation" in running.app.trainers()
        assert "organ_2d_segmentation" not in running.app.trainers()  # no train config
        before = (seg3d / "models" / "model.pt").stat().st_mtime_ns
        running.app.train({"model": "organ_ct_segmentation", "max_epochs": 1, "val_split": 0, "device": "cpu"})
        assert (seg3d / "models" / "model.pt").stat().st_mtime_ns > before
    finally:
        running.stop(grace=1)
