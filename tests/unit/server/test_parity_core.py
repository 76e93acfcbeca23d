"""The log buffer (redaction, tail, follow and its endings), batch inference request checks, GPU info."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import List

import pytest
import torch

from monailabel.datasets import write_phantoms
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_server.core.gpu import gpu_info
from monailabel_server.core.logs import MAX_LINE_CHARS, LogBuffer, redact
from monailabel_server.jobs.params import validate_batch_infer


@pytest.mark.parametrize("text, secret", [
    ("Authorization: Bearer eyJhbGciOi.eyJzdWIiOiJ4.c2lnbmF0dXJl", "eyJzdWIiOiJ4"),
    ("password=hunter2 next", "hunter2"),
    ("client_secret: 's3cr3t value'", "s3cr3t"),
    ("MONAI_LABEL_AUTH_TOKEN=abcdef123456", "abcdef123456"),
    ("dial https://alice:pa55word@pacs.example/dicom-web", "pa55word"),
    ("api-key = XYZ123", "XYZ123"),
])
def test_redact_removes_credentials(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "<redacted>" in out, out


def test_redact_keeps_ordinary_text() -> None:
    assert redact("epoch 3: loss 0.25, 12 images") == "epoch 3: loss 0.25, 12 images"


def _record(buffer: LogBuffer, message: str, level: int = logging.INFO) -> None:
    buffer.handle(logging.LogRecord("t", level, __file__, 1, message, None, None))


def test_tail_numbers_bounds_and_scrubs_lines() -> None:
    buffer = LogBuffer(capacity=3)
    for i in range(5):
        _record(buffer, f"line {i} of /home/someone/data/file{i}.nii.gz")
    _record(buffer, "x" * (MAX_LINE_CHARS * 2), logging.ERROR)
    lines, last = buffer.tail(10)
    assert last == 6 and [r.sequence for r in lines] == [4, 5, 6]
    assert lines[0].message == "line 3 of file3.nii.gz"
    assert len(lines[-1].message) <= MAX_LINE_CHARS
    errors, _ = buffer.tail(10, logging.ERROR)
    assert [r.sequence for r in errors] == [6]


def test_follow_yields_new_lines_and_ends_when_idle_inactive_or_closed() -> None:
    buffer = LogBuffer()
    _record(buffer, "before")
    _, last = buffer.tail(1)
    got: List[str] = []
    started = threading.Event()

    def follow() -> None:
        started.set()
        for r in buffer.follow(last, logging.INFO, idle_timeout_s=30, active=lambda: True, poll_s=0.05):
            got.append(r.message)

    thread = threading.Thread(target=follow)
    thread.start()
    started.wait(5)
    _record(buffer, "after")
    _record(buffer, "debug is below the level", logging.DEBUG)  # below the follow's level
    _record(buffer, "last")
    buffer.close()
    thread.join(5)
    assert not thread.is_alive() and got == ["after", "last"], "lines logged before the close are sent"

    idle = LogBuffer()
    assert list(idle.follow(0, 0, idle_timeout_s=0.1, active=lambda: True, poll_s=0.05)) == []
    gone = LogBuffer()
    assert list(gone.follow(0, 0, idle_timeout_s=30, active=lambda: False)) == []


@pytest.fixture()
def datastore(tmp_path: Path) -> LocalDatastore:
    write_phantoms(tmp_path, count=2, shape=(8, 8, 8), labeled=1)
    return LocalDatastore(str(tmp_path))


def test_batch_infer_params(datastore: LocalDatastore) -> None:
    params: dict = {}
    validate_batch_infer(datastore, params)
    assert params == {"images": "all"}
    params = {"image_ids": ["phantom_001"]}
    validate_batch_infer(datastore, params)
    assert params["images"] == "ids"
    for bad, field in (({"images": "some"}, "images"), ({"images": "ids"}, "image_ids"),
                       ({"images": "unlabeled", "image_ids": ["phantom_000"]}, "image_ids"),
                       ({"image_ids": ["phantom_000", "phantom_000"]}, "image_ids"),
                       ({"image_ids": ["../x"]}, "image_ids[0]"), ({"model_path": "/x"}, "model_path"),
                       ({"device": "tpu"}, "device")):
        with pytest.raises(MONAILabelException) as info:
            validate_batch_infer(datastore, dict(bad))
        assert info.value.error == MONAILabelError.INVALID_INPUT, (bad, info.value)
        assert info.value.violations[0][0] == field, (bad, info.value)
    with pytest.raises(MONAILabelException) as info:
        validate_batch_infer(datastore, {"image_ids": ["phantom_009"]})
    assert info.value.error == MONAILabelError.NOT_FOUND


def test_gpu_info_matches_torch() -> None:
    available, devices = gpu_info()
    assert available == torch.cuda.is_available()
    assert len(devices) == (torch.cuda.device_count() if available else 0)
