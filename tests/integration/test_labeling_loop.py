"""The whole labeling loop over gRPC, on a CPU, with the radiology template from random weights.

An annotator asks for the next image (StrategyService), gets an automatic segmentation (segmentation),
corrects it with clicks in an interactive session (deepgrow_3d), finishes the last voxels by hand and
saves the final label; then the segmentation model trains on what was labeled and segments held-out
volumes (streamed in, never in the datastore) better than before: mean Dice >= 0.85.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest

from monailabel.datasets import make_phantom
from monailabel_api.v1 import job_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .conftest import copy_template

pytestmark = pytest.mark.slow  # trains a model for twelve epochs

SHAPE = (48, 48, 48)
CASES = 8
HELD_OUT_SEEDS = (100, 101, 102)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("loop")
    copy_template(root / "app")
    (root / "studies").mkdir()
    config = ServerConfig(app_dir=root / "app", studies=str(root / "studies"), port=0,
                          conf={"models": "segmentation,deepgrow_3d", "roi_size": "48,48,48"})
    running = start(config)
    yield running
    running.stop(grace=1)


def _dice(pred: np.ndarray, label: np.ndarray) -> float:
    pred, label = pred > 0, label > 0
    return float(2.0 * (pred & label).sum() / max(pred.sum() + label.sum(), 1))


def _held_out_dice(client: MonaiLabelClient) -> List[float]:
    dice = []
    for seed in HELD_OUT_SEEDS:
        image, label, affine = make_phantom(SHAPE, seed)
        dice.append(_dice(client.infer_file("segmentation", image, affine=affine).array(), label))
    return dice


def _click(truth: np.ndarray, wrong: np.ndarray) -> List[List[int]]:
    """Where an annotator clicks: the wrong voxel deepest inside the region it should belong to."""
    if not wrong.any():
        return []
    points = np.argwhere(wrong)
    centre = points.mean(axis=0)
    return [points[np.argmin(((points - centre) ** 2).sum(axis=1))].tolist()]


def test_next_sample_infer_click_save_train_infer(server: RunningServer) -> None:
    started = time.monotonic()
    with MonaiLabelClient(server.address, timeout=60) as client:
        truths = {}
        for i in range(CASES):
            image, label, affine = make_phantom(SHAPE, i)
            client.upload_array(f"case_{i:03d}", image, affine)
            truths[f"case_{i:03d}"] = (label, affine)
        info = client.info()
        assert {m.name for m in info.models} == {"segmentation", "deepgrow_3d"}
        before = _held_out_dice(client)

        labeled, clicks_changed = [], 0
        for _ in range(CASES):
            sample = client.next_sample("first", client_id="annotator")
            assert sample.found and sample.image_id not in labeled
            image_id = sample.image_id
            label, affine = truths[image_id]

            auto = client.infer("segmentation", image_id=image_id).array()
            assert auto.shape == SHAPE and auto.dtype == np.uint8

            # the annotator clicks where the automatic answer is wrong, in a session (no re-upload per click)
            session = client.create_session(image_id=image_id)
            foreground = _click(label, (label > 0) & (auto == 0))
            background = _click(label, (label == 0) & (auto > 0))
            edited = client.infer("deepgrow_3d", session_id=session.session_id, foreground=foreground,
                                  background=background).array()
            assert edited.shape == SHAPE and set(np.unique(edited).tolist()) <= {0, 1}
            clicks_changed += int(not np.array_equal(edited, auto))
            client.delete_session(session.session_id)

            # what the clicks left wrong is painted by hand; that is the final label
            final = np.where((edited > 0) != (label > 0), label, edited).astype(np.uint8)
            assert np.array_equal(final > 0, label > 0)
            client.save_label(image_id, final, affine=affine)
            labeled.append(image_id)

        assert sorted(labeled) == sorted(truths) and clicks_changed >= CASES // 2
        assert not client.next_sample("first", client_id="annotator").found
        assert client.status().completed == CASES

        job = client.start_train("segmentation", max_epochs=12, val_split=0.25, device="cpu",
                                 extra={"pretrained": False, "seed": 0})
        list(client.watch_job(job.job_id, timeout=300))
        done = client.get_job(job.job_id)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (done.error, list(done.last_log_lines))

        after = _held_out_dice(client)
        weights = dict(client.info().info.items())["weights"]
    print(f"held-out Dice before {np.round(before, 3).tolist()} after {np.round(after, 3).tolist()}; "
          f"loop took {time.monotonic() - started:.0f} s")
    assert np.mean(after) > np.mean(before) and np.mean(after) >= 0.85, (before, after)
    assert weights["segmentation"].startswith("checkpoint") and weights["deepgrow_3d"].startswith("random")
    assert Path(weights["segmentation"].split(" ", 1)[1]).name == "segmentation.pt"
