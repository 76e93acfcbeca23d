"""MONAI Label's REST capabilities over gRPC, on a real server: input labels, model weights and versions,
batch inference, train-all and score-all, the dataset, logs and GPUs, session images.

The app (``parity_app/main.py``, copied per module) has an infer task that uses MONAI Label's input
label (loaded with MONAI's ``LoadImaged``) and reads its threshold from its weights file, trainers
that publish new weights, and two scoring methods. Jobs run in worker processes, as in production.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Iterator, List

import grpc
import nibabel as nib
import numpy as np
import pytest
import torch

from monailabel.datasets import write_phantoms
from monailabel_api.v1 import common_pb2, infer_pb2, job_pb2, train_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .helpers import assert_status

APP = Path(__file__).resolve().parent / "parity_app"
SHAPE = (24, 24, 16)
LABELED = "phantom_000"
UNLABELED = ["phantom_001", "phantom_002"]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("parity")
    shutil.copytree(APP, root / "app", ignore=shutil.ignore_patterns("__pycache__", "model"))
    write_phantoms(root / "studies", count=3, shape=SHAPE, labeled=1)
    server = start(ServerConfig(app_dir=root / "app", studies=str(root / "studies"), port=0))
    yield server
    server.stop(grace=1)


@pytest.fixture()
def client(running: RunningServer) -> Iterator[MonaiLabelClient]:
    with MonaiLabelClient(running.address, timeout=60) as c:
        yield c


def _nifti(data: bytes) -> np.ndarray:
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return np.asarray(nib.Nifti1Image.from_bytes(raw).dataobj)


def _studies(running: RunningServer) -> Path:
    assert running.config is not None
    return Path(running.config.studies)


def _image(running: RunningServer, image_id: str) -> np.ndarray:
    return np.asarray(nib.load(str(_studies(running) / f"{image_id}.nii.gz")).dataobj)


def _weights(running: RunningServer, name: str = "edit") -> Path:
    assert running.config is not None
    return Path(running.config.app_dir) / "model" / f"{name}.pt"


def _threshold(data: bytes) -> float:
    return float(torch.load(io.BytesIO(data))["threshold"])


# -- input labels --------------------------------------------------------------------------------
def test_infer_volume_with_a_streamed_input_label(client: MonaiLabelClient, running: RunningServer,
                                                  tmp_path: Path) -> None:
    image = _image(running, UNLABELED[0])
    affine = nib.load(str(_studies(running) / f"{UNLABELED[0]}.nii.gz")).affine
    scribbles = np.zeros(SHAPE, np.uint8)
    scribbles[2:6, 3:9, 4:7] = 2
    nib.save(nib.Nifti1Image(scribbles, affine), str(tmp_path / "scribbles.nii.gz"))
    source = _studies(running) / f"{UNLABELED[0]}.nii.gz"

    out = client.infer_with_label("edit", source, tmp_path / "scribbles.nii.gz")
    expected = np.where(scribbles > 0, scribbles, (image > 100).astype(np.uint8))
    assert out.result["input_label_voxels"] == int((scribbles > 0).sum()) > 0
    np.testing.assert_array_equal(_nifti(out.data), expected)

    plain = client.infer_file("edit", source)  # the same task without an input label
    assert plain.result["input_label_voxels"] == 0
    np.testing.assert_array_equal(_nifti(plain.data), (image > 100).astype(np.uint8))

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), affine), str(tmp_path / "small.nii.gz"))
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  lambda: client.infer_with_label("edit", source, tmp_path / "small.nii.gz"), "label's shape")


def test_label_chunks_need_a_label_in_the_header(client: MonaiLabelClient, running: RunningServer) -> None:
    data = (_studies(running) / f"{UNLABELED[0]}.nii.gz").read_bytes()
    header = infer_pb2.InferVolumeHeader(model="edit", content=common_pb2.ContentHeader(
        encoding=common_pb2.ENCODING_NIFTI_GZ, total_size=len(data)))
    requests = [infer_pb2.InferVolumeRequest(header=header),
                infer_pb2.InferVolumeRequest(chunk=common_pb2.Chunk(offset=0, data=data)),
                infer_pb2.InferVolumeRequest(label_chunk=common_pb2.Chunk(offset=0, data=b"x"))]
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.infers.InferVolume(iter(requests)),
                  "label chunks need a label")


def test_infer_image_with_a_datastore_label_as_input(client: MonaiLabelClient, running: RunningServer) -> None:
    final = np.asarray(nib.load(str(_studies(running) / "labels" / "final" / f"{LABELED}.nii.gz")).dataobj)
    out = client.infer_image_with_label("edit", LABELED, "final")
    assert out.result["input_label_voxels"] == int((final > 0).sum()) > 0
    expected = np.where(final > 0, final, (_image(running, LABELED) > 100).astype(np.uint8))
    np.testing.assert_array_equal(_nifti(out.data), expected)
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.infer_image_with_label("edit", UNLABELED[0], "final"))


# -- sessions --------------------------------------------------------------------------------------
def test_download_session_image(client: MonaiLabelClient, running: RunningServer) -> None:
    session = client.create_session(image_id=UNLABELED[1])
    header, data = client.download_session_image(session.session_id)
    assert header.encoding == common_pb2.ENCODING_NIFTI_GZ and header.sha256 == hashlib.sha256(data).hexdigest()
    np.testing.assert_array_equal(_nifti(data), _image(running, UNLABELED[1]).astype(np.float32))
    raw_header, raw = client.download_session_image(session.session_id, common_pb2.ENCODING_RAW)
    assert list(raw_header.shape) == list(SHAPE) and raw_header.data_type == common_pb2.DATA_TYPE_FLOAT32
    volume = np.frombuffer(raw, np.float32).reshape(SHAPE, order="F")
    np.testing.assert_array_equal(volume, _image(running, UNLABELED[1]).astype(np.float32))
    assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                  lambda: client.download_session_image(session.session_id, common_pb2.ENCODING_NRRD), "encoding")
    client.delete_session(session.session_id)
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.download_session_image(session.session_id))


# -- dataset ---------------------------------------------------------------------------------------
def test_train_datalist_and_dataset_export(client: MonaiLabelClient, running: RunningServer) -> None:
    entries = client.train_datalist()
    assert [e.image_id for e in entries] == [LABELED]
    assert entries[0].image_sha256 == client.get_image(LABELED).sha256
    archive = zipfile.ZipFile(io.BytesIO(client.export_dataset()))  # size and SHA-256 checked by the client
    names = set(archive.namelist())
    assert names == {f"images/{LABELED}.nii.gz", f"labels/final/{LABELED}.nii.gz", "datalist.json"}
    assert archive.read(f"images/{LABELED}.nii.gz") == client.download_image(LABELED)
    assert archive.read(f"labels/final/{LABELED}.nii.gz") == client.download_label(LABELED)
    assert json.loads(archive.read("datalist.json")) == [  # archive names and ids, never server paths
        {"image": f"images/{LABELED}.nii.gz", "label": f"labels/final/{LABELED}.nii.gz", "image_id": LABELED}]
    assert not list((_studies(running)).rglob("export-*.zip")), "the archive's temporary file is removed"


# -- logs and GPUs ---------------------------------------------------------------------------------
def test_tail_logs_scrubs_secrets_and_paths(client: MonaiLabelClient) -> None:
    logging.getLogger("monailabel_server.parity_test").warning(
        "calling with Authorization: Bearer abcdefghijklmnop password=hunter2 from /srv/secret/place/file.txt")
    lines = list(client.tail_logs(lines=20, min_level="warning"))
    mine = [line for line in lines if line.logger == "monailabel_server.parity_test"]
    assert mine, [line.message for line in lines]
    text = mine[-1].message
    assert "abcdefghijklmnop" not in text and "hunter2" not in text and "/srv/secret" not in text, text
    assert "<redacted>" in text and "file.txt" in text
    assert all(line.level >= 3 for line in lines)  # LOG_LEVEL_WARNING and above only


def test_follow_logs_gets_new_lines_and_ends_when_idle(client: MonaiLabelClient) -> None:
    got: List[str] = []
    first = threading.Event()

    def follow() -> None:
        for line in client.tail_logs(lines=1, follow=True, idle_timeout_s=2, timeout=30):
            got.append(line.message)
            first.set()

    thread = threading.Thread(target=follow)
    thread.start()
    assert first.wait(10)  # the tail line arrived: the follow is open
    logging.getLogger("monailabel_server.parity_test").warning("a line logged while following")
    thread.join(20)
    assert not thread.is_alive(), "the follow ends by itself after its idle timeout"
    assert "a line logged while following" in got


def test_gpu_info_answers(client: MonaiLabelClient) -> None:
    info = client.gpu_info()
    assert info.cuda_available == torch.cuda.is_available()
    assert len(info.devices) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    for device in info.devices:
        assert device.total_memory_bytes > 0 and device.name


# -- model weights, train-all, score-all, batch inference --------------------------------------------
def test_model_file_versions_and_download(client: MonaiLabelClient, running: RunningServer) -> None:
    weights = _weights(running).read_bytes()
    listed = client.list_model_versions("edit")
    assert listed.current.sha256 == hashlib.sha256(weights).hexdigest()
    assert listed.current.file_name == "edit.pt" and listed.current.size == len(weights)
    assert listed.current.version == 0 and not listed.versions
    header, data = client.download_model("edit")
    assert data == weights and header.sha256 == hashlib.sha256(data).hexdigest()
    assert _threshold(data) == 100.0
    assert not client.list_model_versions("other").HasField("current")  # a trainer with nothing published
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.download_model("other"), "no weights file")
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.list_model_versions("nope"), "models: edit, other")


def test_train_all_publishes_versions(client: MonaiLabelClient, running: RunningServer) -> None:
    before = len(list(client.list_jobs(kind="train")))
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.start_train_jobs(["edit", "nope"]), "nope")
    # a trainer that is not a BasicTrainTask would train (and publish) on every node by itself
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.start_train("edit", nodes=2),
                  "PublishThreshold does not train across nodes")
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.start_train_jobs(nodes=2),
                  "does not train across nodes")
    assert len(list(client.list_jobs(kind="train"))) == before, "no job starts when one model is bad"

    assert_status(grpc.StatusCode.INVALID_ARGUMENT,  # an empty request never starts every training job
                  lambda: client.train.StartTrainJobs(train_pb2.StartTrainJobsRequest()), "all_models")
    jobs = client.start_train_jobs(extra={"threshold": 150.0})  # every trainer
    assert [j.model for j in jobs] == ["edit", "other"] and all(j.kind == job_pb2.JOB_KIND_TRAIN for j in jobs)
    done = [client.wait_job(j.job_id, timeout=120) for j in jobs]
    assert [j.state for j in done] == [job_pb2.JOB_STATE_SUCCEEDED] * 2, [j.error for j in done]

    listed = client.list_model_versions("edit")
    assert [v.version for v in listed.versions] == [1] and listed.versions[0].current
    assert listed.versions[0].job_id == jobs[0].job_id
    assert listed.current.version == 1 and listed.versions[0].sha256 == listed.current.sha256
    _, data = client.download_model("edit")
    assert _threshold(data) == 150.0 and hashlib.sha256(data).hexdigest() == listed.current.sha256
    assert client.list_model_versions("other").current.version == 1


def test_score_all(client: MonaiLabelClient) -> None:
    jobs = client.start_scoring_jobs(queue=True)  # the app's own scoring at start may still run
    assert sorted(j.model for j in jobs) == ["count", "labeled"]
    results = {j.model: client.wait_job(j.job_id, timeout=120) for j in jobs}
    assert all(j.state == job_pb2.JOB_STATE_SUCCEEDED for j in results.values())
    assert results["count"].result["count"] == 3 and results["labeled"].result["count"] == 1


def test_batch_infer_saves_original_labels(client: MonaiLabelClient, running: RunningServer) -> None:
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.start_batch_infer("edit", "ids", ["missing"]))
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.start_batch_infer("edit", "all", [LABELED]),
                  "image_ids")
    job = client.start_batch_infer("edit", "unlabeled")
    assert job.kind == job_pb2.JOB_KIND_BATCH_INFER
    events = list(client.watch_job(job.job_id, timeout=120))
    progress = [e.batch_progress for e in events if e.HasField("batch_progress")]
    assert [p.image_id for p in progress if p.image_id] == UNLABELED
    assert progress[-1].done == progress[-1].total == 2
    done = client.get_job(job.job_id)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    assert done.batch_progress.done == done.batch_progress.total == 2 and done.result["saved"] == 2
    threshold = _threshold(_weights(running).read_bytes())  # what the model's weights say now
    for image_id in UNLABELED:
        saved = _nifti(client.download_label(image_id, tag="original"))
        np.testing.assert_array_equal(saved, (_image(running, image_id) > threshold).astype(np.uint8))
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.download_label(LABELED, tag="original"))
    listed = [j.job_id for j in client.list_jobs(kind="batch_infer")]
    assert listed == [job.job_id]
