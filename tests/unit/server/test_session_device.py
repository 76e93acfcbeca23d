"""Where a session's volume lives (--session-device): the decision, and the device path run on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, NormalizeIntensityd

from monailabel.datasets import write_phantoms
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferOutcome
from monailabel_server.app_loader import load_app
from monailabel_server.config import ServerConfig
from monailabel_server.core import sessions as sessions_module
from monailabel_server.core.infer import InferCore
from monailabel_server.core.sessions import SessionStore
from monailabel_server.core.volume import DEVICE_MARGIN_BYTES, CowVolume, DeviceVolume, choose_session_device
from monailabel_server.workers import ModelWorkers
from tests.integration.conftest import copy_template

GIB = 1 << 30


@pytest.mark.parametrize(("setting", "nbytes", "free", "expected"), [
    ("cpu", 1 << 20, 80 * GIB, "cpu"),  # always host memory
    ("auto", 1 << 20, None, "cpu"),  # no CUDA
    ("cuda", 1 << 20, None, "cpu"),  # (the server refuses to start like this)
    ("auto", GIB, 80 * GIB, "cuda"),
    ("auto", GIB, 2 * GIB + DEVICE_MARGIN_BYTES, "cuda"),  # the volume, a call's copy, the margin: just fits
    ("auto", GIB, 2 * GIB + DEVICE_MARGIN_BYTES - 1, "cpu"),
    ("auto", 0, DEVICE_MARGIN_BYTES - 1, "cpu"),  # no room for the model beside it
    ("cuda", GIB, 2 * GIB, "cuda"),  # cuda asks for no margin
    ("cuda", GIB, 2 * GIB - 1, "cpu"),  # not even a call's copy fits
])
def test_choose_session_device(setting: str, nbytes: int, free: Optional[int], expected: str) -> None:
    assert choose_session_device(setting, nbytes, free) == expected


def _image() -> MetaTensor:
    data = np.asfortranarray(np.random.default_rng(0).random((8, 8, 4), dtype=np.float32) * 100)
    return MetaTensor(torch.from_numpy(data), affine=torch.diag(torch.tensor([1.0, 2.0, 3.0, 1.0])),
                      meta={"filename_or_obj": "a.nii.gz"})


def test_device_volume_gives_each_call_its_own_copy() -> None:
    image = _image()
    volume = DeviceVolume(image, "cpu")
    assert volume.device == "cpu" and volume.nbytes == image.numel() * 4
    assert volume.tensor.data_ptr() != image.data_ptr()  # its own memory, not the decoder's
    view = volume.view()
    assert isinstance(view, MetaTensor) and view.stride() == image.stride()
    assert torch.equal(view.as_tensor(), image.as_tensor()) and torch.equal(view.affine, image.affine)
    NormalizeIntensityd(keys="image", nonzero=True)(EnsureChannelFirstd(keys="image", channel_dim="no_channel")(
        {"image": view}))  # writes into its input
    view.affine[0, 0] = 9.0
    assert torch.equal(volume.image().as_tensor(), image.as_tensor())
    assert float(volume.view().affine[0, 0]) == 1.0


def test_store_without_cuda_keeps_volumes_in_the_memfd() -> None:
    for setting in ("auto", "cpu"):
        store = SessionStore(4, 1 << 30, 60, sweep_interval_s=0, device=setting)
        session = store.add(_image(), store.reserve(1024), 60)
        assert isinstance(session.volume, CowVolume) and session.device == "cpu"
        assert store.bytes_by_device() == {"cpu": 1024}


def test_store_on_the_device_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` with room on the 'GPU' (faked: the device path runs on the CPU here) keeps the volume there."""
    monkeypatch.setattr(sessions_module, "free_cuda_bytes", lambda: 80 * GIB)
    monkeypatch.setattr(SessionStore, "_cuda_device", staticmethod(lambda: "cpu"))
    store = SessionStore(4, 1 << 30, 60, sweep_interval_s=0, device="auto")
    image = _image()
    session = store.add(image, store.reserve(image.numel() * 4), 60)
    assert isinstance(session.volume, DeviceVolume) and session.device == "cpu"
    first = session.shared()
    first.as_tensor()[...] = -1.0  # a call writing into its own copy
    np.testing.assert_array_equal(session.shared().numpy(), image.numpy())
    np.testing.assert_array_equal(session.image.numpy(), image.numpy())
    assert session.shared("cpu").device.type == "cpu"

    monkeypatch.setattr(sessions_module, "free_cuda_bytes", lambda: GIB)  # no room left: host memory
    other = store.add(image, store.reserve(image.numel() * 4), 60)
    assert isinstance(other.volume, CowVolume)


def test_a_model_whose_transforms_refuse_the_device_copy_runs_on_host_copies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An app transform that takes numpy only fails on a GPU copy: the call runs again on a host copy, and
    that model's later calls take host copies straight away (the 'GPU' is faked: the copies are on the CPU)."""
    write_phantoms(tmp_path / "studies", count=1, shape=(16, 16, 8), labeled=0)
    config = ServerConfig(app_dir=copy_template(tmp_path / "app"), studies=str(tmp_path / "studies"), port=0)
    workers = ModelWorkers(1, 2)
    core = InferCore(load_app(config.app_dir, config.studies, config.conf), config, workers)
    try:
        session = core.sessions.add(_image(), core.sessions.reserve(8 * 8 * 4 * 4), 60)
        session.volume = DeviceVolume(_image(), "cpu")
        session.volume.device = "cuda:0"
        asked: List[str] = []
        real_shared = session.shared

        def shared(device: str = "") -> Any:
            asked.append(device)
            return real_shared(device)

        def infer_in_memory(request: Dict[str, Any], cancel: Any = None) -> InferOutcome:
            if asked[-1] != "cpu":
                raise MONAILabelException(MONAILabelError.TRANSFORM_ERROR, "Transform 'NumpyOnly' failed")
            return InferOutcome(result={"ok": True})

        monkeypatch.setattr(session, "shared", shared)
        monkeypatch.setattr(core.app, "infer_in_memory", infer_in_memory)
        outcome, _ = core._infer({"model": "segmentation", "device": "cuda"}, _never, session)
        assert outcome.result == {"ok": True} and asked == ["cuda", "cpu"]
        core._infer({"model": "segmentation", "device": "cuda"}, _never, session)
        assert asked == ["cuda", "cpu", "cpu"]  # straight to a host copy
        with pytest.raises(MONAILabelException):  # another model still tries the device copy first
            monkeypatch.setattr(core.app, "infer_in_memory", _fails)
            core._infer({"model": "deepedit", "device": "cuda"}, _never, session)
        assert asked[3:] == ["cuda", "cpu"]
    finally:
        workers.shutdown()
        core.sessions.close()


def _never() -> bool:
    return False


def _fails(request: Dict[str, Any], cancel: Any = None) -> InferOutcome:
    raise MONAILabelException(MONAILabelError.TRANSFORM_ERROR, "Transform 'Broken' failed")
