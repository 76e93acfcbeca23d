"""The GPU path: CUDA inference in each template app, Interact on CUDA, training with AMP (and DDP with
NCCL on several devices), memory released after a cancelled inference, a published model reloaded onto
the GPU. ``scripts/gpu-check`` runs these; without a CUDA device every test is skipped, visibly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import pytest
import torch

from monailabel.datasets import write_phantoms
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.v1 import common_pb2

try:  # job states live in the JobService's messages once it exists, in TrainService's before
    from monailabel_api.v1 import job_pb2 as _job_states
except ImportError:
    from monailabel_api.v1 import train_pb2 as _job_states  # type: ignore[no-redef]
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start
from tests.integration.conftest import copy_template

CUDA = torch.cuda.is_available()
DEVICES = torch.cuda.device_count() if CUDA else 0
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA, reason="needs a CUDA device: run scripts/gpu-check on a machine with a GPU"),
]
SHAPE = (64, 64, 48)
RADIOLOGY_MODELS = ("segmentation", "deepgrow_3d", "deepedit")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("gpu")
    app_dir = copy_template(root / "app")
    write_phantoms(root / "studies", count=6, shape=SHAPE, labeled=6)
    config = ServerConfig(app_dir=Path(app_dir), studies=str(root / "studies"), port=0, max_volume_bytes=256 << 20,
                          conf={"roi_size": "64,64,48", "models": ",".join(RADIOLOGY_MODELS)})
    running = start(config)
    yield running
    running.stop(grace=1)


@pytest.fixture()
def client(server: RunningServer) -> Iterator[MonaiLabelClient]:
    with MonaiLabelClient(server.address, timeout=600) as c:
        yield c


def _clicks(model: str) -> dict:
    return {"foreground": [[s // 2 for s in SHAPE]]} if model != "segmentation" else {}


@pytest.mark.parametrize("model", RADIOLOGY_MODELS)
def test_cuda_inference_matches_cpu(client: MonaiLabelClient, model: str) -> None:
    image_id = next(client.list_images()).image_id
    cpu = client.infer(model, image_id=image_id, device="cpu", encoding=common_pb2.ENCODING_RAW, **_clicks(model))
    gpu = client.infer(model, image_id=image_id, device="cuda", encoding=common_pb2.ENCODING_RAW, **_clicks(model))
    a, b = cpu.array(), gpu.array()
    assert a.shape == b.shape == SHAPE
    assert np.mean(a == b) > 0.999  # kernels differ in the last bits: a voxel or so may flip at a boundary


def test_pathology_cuda_inference(tmp_path: Path) -> None:
    from monailabel_server.app_loader import load_app

    app_dir = Path(__file__).resolve().parents[2] / "monailabel" / "apps" / "pathology"
    studies = tmp_path / "slides"
    studies.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    Image.fromarray(rng.integers(0, 255, size=(256, 256, 3), dtype=np.uint8)).save(studies / "slide.png")
    app = load_app(str(app_dir), str(studies), {})
    name = next(iter(app.infer_tasks()))
    outcome = app.infer_in_memory({"model": name, "image": str(studies / "slide.png"), "device": "cuda"})
    assert outcome.mask is not None or outcome.file or outcome.result


def test_interact_on_cuda_rebuilds_the_mask(client: MonaiLabelClient) -> None:
    image_id = next(client.list_images()).image_id
    session = client.create_session(image_id=image_id)
    fg = [[s // 2 for s in SHAPE]]
    with client.interact(session.session_id, "deepgrow_3d") as live:
        live.click(foreground=fg, device="cuda")
        live.answer()
    full = client.infer("deepgrow_3d", session_id=session.session_id, foreground=fg, device="cuda",
                        encoding=common_pb2.ENCODING_RAW).array()
    np.testing.assert_array_equal(live.mask, full)


def test_memory_is_released_after_a_cancelled_inference(tmp_path: Path) -> None:
    from monailabel_server.app_loader import load_app
    from monailabel_server.core.infer import InferCore
    from monailabel_server.core.infer_request import InferParams, OutputSpec
    from monailabel_server.workers import ModelWorkers

    app_dir = copy_template(tmp_path / "app")
    write_phantoms(tmp_path / "studies", count=1, shape=(192, 192, 160), labeled=0)
    config = ServerConfig(app_dir=Path(app_dir), studies=str(tmp_path / "studies"), port=0,
                          max_volume_bytes=1 << 30, conf={"roi_size": "96,96,96"})
    workers = ModelWorkers(1, 2)
    core = InferCore(load_app(config.app_dir, config.studies, config.conf), config, workers)
    try:
        image_id = "phantom_000"
        core.infer_image("segmentation", image_id, InferParams(device="cuda"), OutputSpec(skip_mask=True), _never)
        torch.cuda.synchronize()
        warm = torch.cuda.memory_allocated()  # the network's weights, cached on the device
        calls = {"n": 0}

        def cancel() -> bool:  # lets the pipeline reach the model on the GPU, then cancels it mid-way
            calls["n"] += 1
            return calls["n"] > 4

        with pytest.raises(MONAILabelException) as info:
            core.infer_image("segmentation", image_id, InferParams(device="cuda"), OutputSpec(), cancel)
        assert info.value.error == MONAILabelError.CANCELLED and calls["n"] > 4
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() <= warm + (1 << 20)  # no input, activation or output left behind
    finally:
        workers.shutdown()
        core.sessions.close()


def _never() -> bool:
    return False


def test_training_on_cuda_with_amp_then_the_published_model_is_reloaded_on_the_gpu(client: MonaiLabelClient) -> None:
    image_id = next(client.list_images()).image_id
    before = client.infer("segmentation", image_id=image_id, device="cuda", encoding=common_pb2.ENCODING_RAW).array()
    job = client.start_train("segmentation", max_epochs=2, val_split=0.34, device="cuda",
                             extra={"pretrained": False, "seed": 0, "amp": True})
    list(client.watch_job(job.job_id, timeout=600))
    done = client.get_job(job.job_id)
    assert done.state == _job_states.JOB_STATE_SUCCEEDED, (done.error, list(done.last_log_lines))
    after = client.infer("segmentation", image_id=image_id, device="cuda", encoding=common_pb2.ENCODING_RAW).array()
    assert not np.array_equal(before, after)  # the new checkpoint, not the cached random weights


@pytest.mark.skipif(DEVICES < 2, reason="DDP with NCCL needs more than one CUDA device")
def test_ddp_training_with_nccl(client: MonaiLabelClient) -> None:
    job = client.start_train("segmentation", max_epochs=1, val_split=0.34, device="cuda", multi_gpu=True,
                             extra={"pretrained": False, "seed": 0})
    list(client.watch_job(job.job_id, timeout=600))
    done = client.get_job(job.job_id)
    assert done.state == _job_states.JOB_STATE_SUCCEEDED, (done.error, list(done.last_log_lines))


# -- the GPU path: pinned copies, AMP, sessions on the device (issue #14) ------------------------------------------
def test_host_to_device_copies_through_pinned_memory() -> None:
    from monai.data.meta_tensor import MetaTensor

    from monailabel.tasks.infer._device import host_to_device

    host = MetaTensor(torch.randn(1, 1, *SHAPE), meta={"filename_or_obj": "x.nii.gz"})
    before = torch.cuda.host_memory_stats().get("allocations.current", 0)
    moved, pinned = host_to_device(host, "cuda")
    assert pinned and moved.device.type == "cuda" and isinstance(moved, MetaTensor)
    assert torch.cuda.host_memory_stats().get("allocations.current", 0) >= before  # the caching host allocator's
    np.testing.assert_array_equal(moved.cpu().numpy(), host.numpy())  # .cpu() waits for the copy
    staged = host.pin_memory()
    assert staged.is_pinned()
    again, pinned = host_to_device(staged, "cuda:0")
    assert pinned
    np.testing.assert_array_equal(again.cpu().numpy(), host.numpy())


def test_inference_on_cuda_copies_its_input_through_pinned_memory(client: MonaiLabelClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from monailabel.tasks.infer import _device

    copies: List[Tuple[str, bool]] = []
    real = _device.host_to_device

    def watched(tensor: torch.Tensor, device: object) -> Tuple[torch.Tensor, bool]:
        moved, pinned = real(tensor, device)
        copies.append((str(device), pinned))
        return moved, pinned

    monkeypatch.setattr("monailabel.tasks.infer.basic_infer.host_to_device", watched)
    image_id = next(client.list_images()).image_id
    client.infer("segmentation", image_id=image_id, device="cuda", encoding=common_pb2.ENCODING_RAW)
    assert copies and all(pinned for device, pinned in copies if device.startswith("cuda"))


def test_amp_on_cuda_runs_float16_and_keeps_the_mask(server: RunningServer, client: MonaiLabelClient) -> None:
    task = server.app.infer_tasks()["segmentation"]
    network = task._get_network("cuda", None)  # type: ignore[attr-defined]
    seen: List[Tuple[bool, torch.dtype, torch.dtype]] = []
    handle = network.register_forward_hook(
        lambda m, a, out: seen.append((torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"), out.dtype)))
    image_id = next(client.list_images()).image_id
    try:
        fp32 = client.infer("segmentation", image_id=image_id, device="cuda", encoding=common_pb2.ENCODING_RAW)
        seen.clear()
        amp = client.infer("segmentation", image_id=image_id, device="cuda", params={"amp": True},
                           encoding=common_pb2.ENCODING_RAW)
    finally:
        handle.remove()
    assert seen and all(on and dtype == torch.float16 and out == torch.float16 for on, dtype, out in seen)
    a, b = fp32.array(), amp.array()
    assert a.dtype == b.dtype and np.mean(a == b) >= 0.99


def test_session_on_cuda_matches_the_file_and_stays_unchanged(server: RunningServer,
                                                              client: MonaiLabelClient) -> None:
    image_id = next(client.list_images()).image_id
    session = client.create_session(image_id=image_id)  # auto: on the GPU (it has the room)
    try:
        assert server.metrics is not None
        placed = server.metrics.registry.get_sample_value("monailabel_session_device_bytes",
                                                          {"device": f"cuda:{torch.cuda.current_device()}"})
        assert placed and placed > 0, "the session's volume should live on the GPU"
        _, before = client.download_session_image(session.session_id, encoding=common_pb2.ENCODING_RAW)
        on_session = client.infer("segmentation", session_id=session.session_id, device="cuda",
                                  encoding=common_pb2.ENCODING_RAW).array()
        on_file = client.infer("segmentation", image_id=image_id, device="cuda",
                               encoding=common_pb2.ENCODING_RAW).array()
        on_cpu = client.infer("segmentation", session_id=session.session_id, device="cpu",
                              encoding=common_pb2.ENCODING_RAW).array()
        _, after = client.download_session_image(session.session_id, encoding=common_pb2.ENCODING_RAW)
    finally:
        client.delete_session(session.session_id)
    assert on_session.shape == on_file.shape == SHAPE
    # NormalizeIntensityd ran on the GPU for the session, on the CPU for the file: last bits may differ
    assert np.mean(on_session == on_file) > 0.999 and np.mean(on_cpu == on_file) > 0.999
    assert before == after  # the calls' in-place transforms wrote into their own copies
