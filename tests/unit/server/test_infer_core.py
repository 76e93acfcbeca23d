"""InferCore in-process (no server, no port) with the radiology template: masks in memory with their
checksum, save_label only as ``original``, cancellation as an argument, sessions paid for up front."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pytest
import xxhash

from monailabel.datasets import write_phantoms
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.v1 import common_pb2
from monailabel_server.app_loader import load_app
from monailabel_server.config import ServerConfig
from monailabel_server.core.infer import InferCore
from monailabel_server.core.infer_request import InferParams, OutputSpec
from monailabel_server.workers import ModelWorkers
from tests.integration.conftest import copy_template


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferCore]:
    root = tmp_path_factory.mktemp("core")
    app_dir = copy_template(root / "app")
    write_phantoms(root / "studies", count=2, shape=(32, 32, 24), labeled=1)
    config = ServerConfig(app_dir=app_dir, studies=str(root / "studies"), port=0, max_volume_bytes=16 << 20,
                          max_session_bytes=200_000, max_session_ttl_s=60, conf={"roi_size": "32,32,32"})
    app = load_app(config.app_dir, config.studies, config.conf)
    workers = ModelWorkers(1, 2)
    yield InferCore(app, config, workers)
    workers.shutdown()


def _never() -> bool:
    return False


def _nifti(data: bytes) -> nib.Nifti1Image:
    holder = nib.FileHolder(fileobj=io.BytesIO(data))
    return nib.Nifti1Image.from_file_map({"header": holder, "image": holder})


def test_mask_in_memory_with_checksum_and_geometry(core: InferCore) -> None:
    output = OutputSpec(encoding=common_pb2.ENCODING_NIFTI)
    answer = core.infer_image("segmentation", "phantom_000", InferParams(), output, _never)
    mask = answer.mask
    assert mask is not None and mask.encoding == common_pb2.ENCODING_NIFTI and mask.extension == ".nii"
    # checksums are the answer header's: both by default, or the one the request names
    from monailabel_server.infer_servicer import content_header

    both = content_header(mask)
    assert both.sha256 == hashlib.sha256(mask.data).hexdigest()
    assert both.xxh3_128 == xxhash.xxh3_128_hexdigest(mask.data)
    assert (content_header(mask, "xxh3_128").sha256, content_header(mask, "sha256").xxh3_128) == ("", "")
    img = _nifti(mask.data)
    assert img.shape == mask.shape == (32, 32, 24) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, mask.affine)
    image_affine = nib.load(core.store.image("phantom_000").path).affine
    np.testing.assert_allclose(mask.affine, image_affine, atol=1e-5)
    assert answer.labels == {"organ": 1} and answer.latency["infer"] > 0 and answer.latency["write"] > 0


def test_save_label_is_always_original(core: InferCore) -> None:
    image_id = "phantom_000"
    labels = {lv.tag: lv.sha256 for lv in core.store.image(image_id).labels}
    final_before = labels.get("final")
    answer = core.infer_image("segmentation", image_id, InferParams(), OutputSpec(save_label=True, skip_mask=True),
                              _never)
    assert answer.mask is None and answer.saved_label is not None and answer.saved_label.tag == "original"
    after = {lv.tag: lv.sha256 for lv in core.store.image(image_id).labels}
    assert after.get("final") == final_before
    saved = nib.load(core.store.label(image_id, "original").path)
    assert saved.shape == (32, 32, 24)


def test_cancel_is_passed_as_an_argument(core: InferCore) -> None:
    with pytest.raises(MONAILabelException) as info:
        core.infer_image("segmentation", "phantom_001", InferParams(), OutputSpec(), lambda: True)
    assert info.value.error == MONAILabelError.CANCELLED


def test_session_memory_is_reserved_before_decoding_and_freed(core: InferCore) -> None:
    session = core.create_session(0, None, "phantom_001", iter(()))
    assert session.nbytes == 32 * 32 * 24 * 4 and core.sessions.held_bytes == session.nbytes
    with pytest.raises(MONAILabelException) as info:  # 2 x 73,728 bytes fit in 200,000; 3 do not
        core.create_session(0, None, "phantom_001", iter(()))
        core.create_session(0, None, "phantom_001", iter(()))
    assert info.value.error == MONAILabelError.RESOURCE_EXHAUSTED
    for s in list(core.sessions):
        core.sessions.delete(s.session_id)
    assert core.sessions.held_bytes == 0


def test_concurrent_creates_never_pass_the_budget(core: InferCore) -> None:
    results: list = []

    def create() -> None:
        try:
            results.append(core.create_session(0, None, "phantom_001", iter(())))
        except MONAILabelException as exc:
            results.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    made = [r for r in results if not isinstance(r, MONAILabelException)]
    assert len(results) == 6 and len(made) == 2, results
    assert core.sessions.held_bytes <= core.sessions.max_bytes
    for s in made:
        core.sessions.delete(s.session_id)


def test_session_infer_checks_clicks_against_the_session(core: InferCore, tmp_path: Path) -> None:
    session = core.create_session(0, None, "phantom_001", iter(()))
    try:
        with pytest.raises(MONAILabelException) as info:
            core.infer_session("segmentation", session.session_id, InferParams(foreground=[[0, 0, 24]]), OutputSpec(),
                               _never)
        assert info.value.violations[0][0] == "params.foreground[0]"
        answer = core.infer_session("segmentation", session.session_id, InferParams(foreground=[[0, 0, 23]]),
                                    OutputSpec(encoding=common_pb2.ENCODING_RAW), _never)
        assert answer.mask is not None and len(answer.mask.data) == 32 * 32 * 24
    finally:
        core.sessions.delete(session.session_id)
