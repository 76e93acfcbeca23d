"""A PACS as the datastore: Orthanc (with its DICOMweb plugin) on 127.0.0.1, our server on its DICOMweb root.

The tests make CT and MR phantom series with real geometry (orientation, spacing, rescale slope and
intercept) and store them with STOW-RS; two CT series get a DICOM SEG made outside (as another viewer
would), which must read as their final labels. Over gRPC: list series, infer on a series (mask and DICOM
SEG output), save a final label and read it back from Orthanc as a SEG, train on PACS data, next sample,
delete without touching the PACS. The SDK tests cover the bad input (series that are not volumes, a SEG
of another series, a PACS that is down) and the DICOM series archives an upload may bring.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List

import grpc
import nibabel as nib
import numpy as np
import pydicom
import pytest

from monailabel.config import settings
from monailabel.datasets.dicom_phantoms import phantom_series, write_series
from monailabel.datastore.dicom import DICOMWebDatastore, series_archive_to_nifti
from monailabel.datastore.dicom_seg import label_to_seg
from monailabel.datastore.dicomweb import create_dicomweb_client
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.v1 import job_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .conftest import copy_template
from .helpers import assert_status
from .orthanc import Orthanc

pytestmark = pytest.mark.slow  # starts Orthanc and servers, and trains a model

SHAPE = (32, 32, 16)
CT_SEEDS = (0, 1, 2, 3, 4)
OUTSIDE_LABELED = (0, 1)  # series whose SEG another viewer made
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


class Pacs:
    """The module's Orthanc, its DICOMweb client and the series stored in it."""

    orthanc: Orthanc
    client: Any
    ct: Dict[int, List[Any]]
    truth: Dict[str, np.ndarray]
    values: Dict[str, np.ndarray]
    mr_uid: str


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    p = Pacs()
    p.orthanc = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    try:
        p.client = create_dicomweb_client(p.orthanc.dicomweb)
        p.ct, p.truth, p.values = {}, {}, {}
        for seed in CT_SEEDS:
            datasets, values, label = phantom_series(SHAPE, seed, patient_id=f"P{seed}", description=f"ct {seed}")
            p.client.store_instances(datasets)
            uid = str(datasets[0].SeriesInstanceUID)
            p.ct[seed], p.truth[uid], p.values[uid] = datasets, label, values
        for seed in OUTSIDE_LABELED:
            # another viewer's SEG: its own series, its own segment name for label value 1
            seg = label_to_seg(p.truth[str(p.ct[seed][0].SeriesInstanceUID)], p.ct[seed], {"organ": 1})
            seg.preamble = b"\0" * 128
            p.client.store_instances([seg])
        mr, _, _ = phantom_series(SHAPE, 9, modality="MR", orientation=(1, 0, 0, 0, 0, -1))
        p.client.store_instances(mr)
        p.mr_uid = str(mr[0].SeriesInstanceUID)
        yield p
    finally:
        p.orthanc.cleanup()


@pytest.fixture(scope="module")
def server(pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("dicomweb-server")
    copy_template(root / "app")
    cache = str(root / "cache")
    # the server reads the setting; its training workers (other processes) read the environment
    old_env, old_setting = os.environ.get("MONAI_LABEL_DICOMWEB_CACHE_PATH"), settings.MONAI_LABEL_DICOMWEB_CACHE_PATH
    os.environ["MONAI_LABEL_DICOMWEB_CACHE_PATH"] = settings.MONAI_LABEL_DICOMWEB_CACHE_PATH = cache
    config = ServerConfig(
        app_dir=root / "app",
        studies=pacs.orthanc.dicomweb,
        port=0,
        conf={"roi_size": "32,32,16", "train_roi_size": "32,32,16", "auto_update_scoring": "false"},
    )
    running = start(config)
    try:
        yield running
    finally:
        running.stop(grace=1)
        settings.MONAI_LABEL_DICOMWEB_CACHE_PATH = old_setting
        if old_env is None:
            os.environ.pop("MONAI_LABEL_DICOMWEB_CACHE_PATH", None)
        else:
            os.environ["MONAI_LABEL_DICOMWEB_CACHE_PATH"] = old_env


@pytest.fixture()
def client(server: RunningServer) -> Iterator[MonaiLabelClient]:
    with MonaiLabelClient(server.address, timeout=120) as c:
        yield c


def _uid(pacs: Pacs, seed: int) -> str:
    return str(pacs.ct[seed][0].SeriesInstanceUID)


def _seg_instances(pacs: Pacs, image_uid: str) -> List[pydicom.Dataset]:
    """The SEG instances in Orthanc that reference a series, read through WADO-RS."""
    found = []
    for series in pacs.client.search_for_series(search_filters={"Modality": "SEG"}):
        study, uid = series["0020000D"]["Value"][0], series["0020000E"]["Value"][0]
        for inst in pacs.client.retrieve_series(study, uid):
            refs = [str(r.SeriesInstanceUID) for r in inst.ReferencedSeriesSequence]
            if image_uid in refs:
                found.append(inst)
    return found


def _load(data: bytes) -> nib.Nifti1Image:
    """A downloaded NIfTI file (gzipped or not) as an image."""
    return nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


# ---- over gRPC ----------------------------------------------------------------------------------------


def test_lists_ct_series_with_outside_segs_as_labels(client: MonaiLabelClient, pacs: Pacs) -> None:
    images = {im.image_id: im for im in client.list_images()}
    # the CT series only: the MR series is outside the default search filter, SEG series are labels
    assert set(images) == {_uid(pacs, s) for s in CT_SEEDS}
    assert pacs.mr_uid not in images
    labeled = {im.image_id for im in client.list_images("labeled")}
    assert labeled == {_uid(pacs, s) for s in OUTSIDE_LABELED}
    info = dict(images[_uid(pacs, 2)].info)
    assert info["modality"] == "CT" and info["series_description"] == "ct 2"
    status = client.status()
    assert status.total == len(CT_SEEDS) and status.completed == len(OUTSIDE_LABELED)


def test_series_reads_as_volume_with_its_geometry(client: MonaiLabelClient, pacs: Pacs) -> None:
    uid = _uid(pacs, 2)
    img = _load(client.download_image(uid))
    assert img.shape == SHAPE
    np.testing.assert_array_equal(np.asarray(img.dataobj), pacs.values[uid])
    # RAS affine of LPS-axial slices 1.5 x 1.5 x 2 mm from (-24, -24, -12)
    np.testing.assert_allclose(np.diag(img.affine)[:3], [-1.5, -1.5, 2.0])
    np.testing.assert_allclose(img.affine[:3, 3], [24.0, 24.0, -12.0])


def test_outside_seg_reads_as_final_label(client: MonaiLabelClient, pacs: Pacs) -> None:
    uid = _uid(pacs, 0)
    label = _load(client.download_label(uid))
    np.testing.assert_array_equal(np.asarray(label.dataobj), pacs.truth[uid])
    np.testing.assert_allclose(label.affine, _load(client.download_image(uid)).affine)
    info = dict(client.get_image(uid).labels[0].info)
    assert dict(info["segments"]) == {"organ": 1}


def test_infer_on_series_gives_mask_and_dicom_seg(client: MonaiLabelClient, pacs: Pacs) -> None:
    uid = _uid(pacs, 3)
    out = client.infer("segmentation", image_id=uid)
    assert tuple(out.array().shape[:3]) == SHAPE
    seg_out = client.infer("segmentation", image_id=uid, params={"output": "dicom_seg"})
    seg = pydicom.dcmread(io.BytesIO(seg_out.data))
    assert seg.SOPClassUID == SEG_SOP_CLASS
    assert [str(r.SeriesInstanceUID) for r in seg.ReferencedSeriesSequence] == [uid]
    assert seg.SegmentSequence[0].SegmentLabel == "organ"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "segmentation"
    # a model's label (tag original) stays in the local cache: the PACS gets final labels only
    client.infer("segmentation", image_id=uid, save_label=True)
    assert {lb.tag for lb in client.get_image(uid).labels} == {"original"}
    assert _seg_instances(pacs, uid) == []


def test_final_label_goes_to_pacs_as_seg_and_versions(client: MonaiLabelClient, pacs: Pacs) -> None:
    uid = _uid(pacs, 2)
    affine = _load(client.download_image(uid)).affine
    truth = pacs.truth[uid]
    client.save_label(uid, truth, affine=affine)
    (seg,) = _seg_instances(pacs, uid)
    source = {str(ds.SOPInstanceUID): ds for ds in pacs.ct[2]}
    assert seg.SegmentSequence[0].SegmentLabel == "organ"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [1.5, 1.5]
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    frames = seg.pixel_array  # (frames, rows, columns)
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = pacs.ct[2].index(source[ref])
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert position == [float(v) for v in source[ref].ImagePositionPatient]
        np.testing.assert_array_equal(frames[i] > 0, truth[:, :, k].T > 0)
    assert uid in {im.image_id for im in client.list_images("labeled")}

    # saved again: the same SEG series, a new instance; the newest is the label
    changed = truth.copy()
    changed[:, :, :2] = 0
    client.save_label(uid, changed, affine=affine)
    segs = _seg_instances(pacs, uid)
    assert len(segs) == 2 and len({s.SeriesInstanceUID for s in segs}) == 1
    assert sorted(int(s.InstanceNumber) for s in segs) == [1, 2]
    np.testing.assert_array_equal(np.asarray(_load(client.download_label(uid)).dataobj), changed)


def test_train_on_pacs_data_and_next_sample(client: MonaiLabelClient, pacs: Pacs) -> None:
    # two SEGs from outside, and one saved through the API (here, unless an earlier test saved it)
    uid = _uid(pacs, 2)
    if uid not in {im.image_id for im in client.list_images("labeled")}:
        client.save_label(uid, pacs.truth[uid], affine=_load(client.download_image(uid)).affine)
    labeled: set = set()
    deadline = time.monotonic() + 10
    while len(labeled) < 3 and time.monotonic() < deadline:  # the PACS listing is reused for 2 s
        labeled = {im.image_id for im in client.list_images("labeled")}
    assert len(labeled) == 3 and uid in labeled, labeled
    job = client.start_train("segmentation", max_epochs=1, val_split=0.0, train_batch_size=1)
    events = list(client.watch_job(job.job_id, timeout=300))  # ends with the job
    iterations = [e.iteration for e in events if e.WhichOneof("event") == "iteration"]
    job = client.get_job(job.job_id)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job
    # the training worker (another process) read the PACS: one iteration per labeled series
    assert iterations and iterations[-1].epoch_length == len(labeled)
    assert job.published_version >= 1
    sample = client.next_sample("first", client_id="annotator")
    assert sample.found and sample.image_id not in labeled
    assert sample.image_id in {_uid(pacs, s) for s in CT_SEEDS}


def test_series_that_is_no_volume_is_listed_and_refused_with_reason(client: MonaiLabelClient, pacs: Pacs) -> None:
    localizer, _, _ = phantom_series((16, 16, 3), 8, description="scout")
    for ds in localizer:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    pacs.client.store_instances(localizer)
    uid = str(localizer[0].SeriesInstanceUID)
    deadline = time.monotonic() + 10
    listed: set = set()
    while uid not in listed and time.monotonic() < deadline:  # the PACS listing is reused for 2 s
        listed = {im.image_id for im in client.list_images()}
    assert uid in listed and {_uid(pacs, s) for s in CT_SEEDS} <= listed  # listing never fetches
    assert_status(grpc.StatusCode.FAILED_PRECONDITION, lambda: client.get_image(uid), "localizer")
    assert_status(grpc.StatusCode.FAILED_PRECONDITION, lambda: client.infer("segmentation", image_id=uid),
                  "not a volume")


def test_delete_label_leaves_the_pacs_alone(client: MonaiLabelClient, pacs: Pacs) -> None:
    uid = _uid(pacs, 1)
    before = pacs.orthanc.post("/tools/find", json.dumps({"Level": "Instance", "Query": {"Modality": "SEG"}}).encode())
    client.delete_label(uid)
    assert uid not in {im.image_id for im in client.list_images("labeled")}
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.download_label(uid))
    after = pacs.orthanc.post("/tools/find", json.dumps({"Level": "Instance", "Query": {"Modality": "SEG"}}).encode())
    assert sorted(after) == sorted(before)

    image = _uid(pacs, 3)
    client.delete_image(image)
    assert image not in {im.image_id for im in client.list_images()}
    assert_status(grpc.StatusCode.NOT_FOUND, lambda: client.get_image(image))
    query = {"Level": "Series", "Query": {"SeriesInstanceUID": image}}
    series = pacs.orthanc.post("/tools/find", json.dumps(query).encode())
    assert len(series) == 1  # still in the PACS


def test_pacs_down_is_unavailable_with_retry_hint(tmp_path: Path) -> None:
    dead = Orthanc(tmp_path / "dead")  # a free port nobody listens on
    copy_template(tmp_path / "app")
    config = ServerConfig(app_dir=tmp_path / "app", studies=dead.dicomweb, port=0,
                          conf={"roi_size": "32,32,16", "auto_update_scoring": "false"})
    running = start(config)
    try:
        with MonaiLabelClient(running.address, timeout=30) as c:
            err = assert_status(grpc.StatusCode.UNAVAILABLE, lambda: list(c.list_images()), "not reachable")
            from google.rpc import error_details_pb2
            from grpc_status import rpc_status

            status = rpc_status.from_call(err)
            retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
            assert retry, status
            info = error_details_pb2.RetryInfo()
            retry[0].Unpack(info)
            assert info.retry_delay.seconds >= 1
    finally:
        running.stop(grace=1)


# ---- the SDK: bad input, fetch by frame, archives -----------------------------------------------------


def _store_of(pacs: Pacs, tmp_path: Path, **kwargs: Any) -> DICOMWebDatastore:
    return DICOMWebDatastore(pacs.client, kwargs.pop("search_filter", {"Modality": "CT"}),
                             cache_path=str(tmp_path / "cache"), label_names={"organ": 1}, **kwargs)


def test_fetch_by_frame_and_mr_series(pacs: Pacs, tmp_path: Path) -> None:
    store = _store_of(pacs, tmp_path, search_filter={"Modality": "MR"}, fetch_by_frame=True)
    assert store.list_images() == [pacs.mr_uid]
    img = nib.load(store.get_image_uri(pacs.mr_uid))
    assert img.shape == SHAPE
    # rows along -z, slices along +y (LPS) -> RAS columns (-1.5,0,0), (0,0,-1.5), (0,-2,0)
    np.testing.assert_allclose(img.affine[:3, :3], [[-1.5, 0, 0], [0, 0, -2.0], [0, -1.5, 0]])
    ref = nib.load(_store_of(pacs, tmp_path / "whole", search_filter={"Modality": "MR"}).get_image_uri(pacs.mr_uid))
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(ref.dataobj))


def _bad_series(kind: str) -> List[Any]:
    datasets, _, _ = phantom_series((16, 16, 6), 7, description=f"bad {kind}")
    if kind == "localizer":
        for ds in datasets:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    elif kind == "missing":
        del datasets[3]
    elif kind == "mixed":
        datasets[2].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    elif kind == "single":
        datasets = datasets[:1]
    return datasets


@pytest.mark.parametrize(
    "kind, reason",
    [("localizer", "DICOM_LOCALIZER"), ("missing", "DICOM_MISSING_SLICES"), ("mixed", "DICOM_MIXED_ORIENTATION"),
     ("single", "DICOM_TOO_FEW_SLICES")],
)
def test_series_that_is_no_volume_is_failed_precondition(pacs: Pacs, tmp_path: Path, kind: str, reason: str) -> None:
    datasets = _bad_series(kind)
    pacs.client.store_instances(datasets)
    uid = str(datasets[0].SeriesInstanceUID)
    store = _store_of(pacs, tmp_path, search_filter={"SeriesInstanceUID": uid})
    assert store.list_images() == [uid]
    with pytest.raises(MONAILabelException) as info:
        store.get_image_uri(uid)
    assert info.value.error == MONAILabelError.PRECONDITION_FAILED
    assert info.value.reason == reason and "not a volume" in info.value.msg
    assert not list((Path(store.cache_path()) / "images").glob("*.nii.gz"))  # nothing half-written


def test_seg_of_another_series_is_refused(pacs: Pacs, tmp_path: Path) -> None:
    store = _store_of(pacs, tmp_path)
    other = label_to_seg(pacs.truth[_uid(pacs, 4)], pacs.ct[4], {"organ": 1})
    path = tmp_path / "other.dcm"
    other.save_as(path, enforce_file_format=True)
    before = len(_seg_instances(pacs, _uid(pacs, 3)))
    with pytest.raises(MONAILabelException) as info:
        store.save_label(_uid(pacs, 3), str(path), "final", {})
    assert info.value.error == MONAILabelError.PRECONDITION_FAILED and info.value.reason == "SEG_OTHER_SERIES"
    assert len(_seg_instances(pacs, _uid(pacs, 3))) == before


def test_label_of_wrong_grid_is_invalid(pacs: Pacs, tmp_path: Path) -> None:
    store = _store_of(pacs, tmp_path)
    path = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), str(path))
    with pytest.raises(MONAILabelException) as info:
        store.save_label(_uid(pacs, 4), str(path), "final", {})
    assert info.value.error == MONAILabelError.INVALID_INPUT and "does not match" in info.value.msg


def test_pacs_down_in_sdk(tmp_path: Path) -> None:
    dead = Orthanc(tmp_path / "dead")
    store = DICOMWebDatastore(create_dicomweb_client(dead.dicomweb, timeout_s=2), {}, cache_path=str(tmp_path))
    with pytest.raises(MONAILabelException) as info:
        store.list_images()
    assert info.value.error == MONAILabelError.UNAVAILABLE
    assert info.value.retry_after_s and info.value.retry_after_s > 0 and info.value.reason == "PACS_UNAVAILABLE"


def test_basic_auth_to_the_pacs(tmp_path: Path) -> None:
    guarded = Orthanc(tmp_path / "guarded", users={"alice": "s3cret"}).start()
    try:
        datasets, _, _ = phantom_series((8, 8, 3), 12)
        good = create_dicomweb_client(guarded.dicomweb, username="alice", password="s3cret")
        good.store_instances(datasets)
        store = DICOMWebDatastore(good, {}, cache_path=str(tmp_path / "good"))
        assert store.list_images() == [str(datasets[0].SeriesInstanceUID)]
        assert nib.load(store.get_image_uri(str(datasets[0].SeriesInstanceUID))).shape == (8, 8, 3)
        bad = create_dicomweb_client(guarded.dicomweb, username="alice", password="wrong")
        with pytest.raises(MONAILabelException) as info:
            DICOMWebDatastore(bad, {}, cache_path=str(tmp_path / "bad")).list_images()
        assert info.value.error == MONAILabelError.PRECONDITION_FAILED and info.value.reason == "PACS_AUTH_FAILED"
        assert "s3cret" not in info.value.msg and "wrong" not in info.value.msg
    finally:
        guarded.cleanup()


def test_concurrent_reads_of_a_series_build_one_volume(pacs: Pacs, tmp_path: Path) -> None:
    store = _store_of(pacs, tmp_path)
    uid = _uid(pacs, 4)
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: store.get_image_uri(uid), range(8)))
    assert len(set(paths)) == 1
    np.testing.assert_array_equal(np.asarray(nib.load(paths[0]).dataobj), pacs.values[uid])
    folder = Path(store.cache_path()) / "images"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [f"{uid}.json", f"{uid}.nii.gz"]
    assert not list(folder.glob(".tmp-*"))


def test_cache_rebuilds_when_series_changes_and_keeps_its_limit(pacs: Pacs, tmp_path: Path) -> None:
    datasets, values, _ = phantom_series((16, 16, 6), 11, description="growing")
    pacs.client.store_instances(datasets[:5])
    uid = str(datasets[0].SeriesInstanceUID)
    store = _store_of(pacs, tmp_path, search_filter={"SeriesInstanceUID": uid}, refresh_interval_s=0.0)
    assert nib.load(store.get_image_uri(uid)).shape == (16, 16, 5)
    pacs.client.store_instances(datasets[5:])  # the series changed in the PACS
    assert nib.load(store.get_image_uri(uid)).shape == (16, 16, 6)

    small = _store_of(pacs, tmp_path / "small", cache_size_mb=0, refresh_interval_s=0.0)
    small._images.max_bytes = 1  # room for one volume only: the least recently used goes
    first, second = _uid(pacs, 3), _uid(pacs, 4)
    small.get_image_uri(first)
    small.get_image_uri(second)
    names = [p.name for p in (Path(small.cache_path()) / "images").glob("*.nii.gz")]
    assert names == [f"{second}.nii.gz"]


def test_add_image_stores_a_series_archive_with_stow(pacs: Pacs, tmp_path: Path) -> None:
    datasets, values, _ = phantom_series((12, 12, 4), 13, description="uploaded")
    uid = str(datasets[0].SeriesInstanceUID)
    archive = tmp_path / "series.tar"
    with tarfile.open(archive, "w") as t:
        for f in write_series(datasets, tmp_path / "files"):
            t.add(f, f.name)
    store = _store_of(pacs, tmp_path, search_filter={"SeriesDescription": "uploaded"})
    with pytest.raises(MONAILabelException) as info:
        store.add_image("another_id", str(archive), {})
    assert info.value.error == MONAILabelError.INVALID_INPUT and info.value.violations[0][0] == "image_id"
    assert store.add_image(uid, str(archive), {"site": "upload"}) == uid
    assert store.list_images() == [uid] and store.get_image_info(uid)["site"] == "upload"
    np.testing.assert_array_equal(np.asarray(nib.load(store.get_image_uri(uid)).dataobj), values)

    broken, _, _ = phantom_series((12, 12, 5), 14, description="uploaded")
    del broken[2]
    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as z:
        for f in write_series(broken, tmp_path / "broken"):
            z.write(f, f.name)
    with pytest.raises(MONAILabelException) as info:
        store.add_image(str(broken[0].SeriesInstanceUID), str(tmp_path / "broken.zip"), {})
    assert info.value.reason == "DICOM_MISSING_SLICES"
    store.refresh()
    assert store.list_images() == [uid]  # the PACS never saw the broken series
    nifti = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(values, np.eye(4)), str(nifti))
    with pytest.raises(MONAILabelException) as info:
        store.add_image("x", str(nifti), {})
    assert info.value.error == MONAILabelError.UNIMPLEMENTED


def test_series_archive_to_nifti(tmp_path: Path) -> None:
    datasets, values, _ = phantom_series((16, 12, 5), 3)
    files = write_series(datasets, tmp_path / "series")
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in reversed(files):
            z.write(f, f"dicom/{f.name}")
        z.writestr("README.txt", "not DICOM")
    uid, info = series_archive_to_nifti(archive, tmp_path / "out" / "ct.nii.gz")
    img = nib.load(tmp_path / "out" / "ct.nii.gz")
    assert uid == str(datasets[0].SeriesInstanceUID) and info["slices"] == 5 and info["modality"] == "CT"
    np.testing.assert_array_equal(np.asarray(img.dataobj), values)

    tar = tmp_path / "series.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        for f in files[:2] + files[3:]:
            t.add(f, f.name)
    with pytest.raises(MONAILabelException) as info:
        series_archive_to_nifti(tar, tmp_path / "out" / "gap.nii.gz")
    assert info.value.error == MONAILabelError.PRECONDITION_FAILED and info.value.reason == "DICOM_MISSING_SLICES"
    assert not (tmp_path / "out" / "gap.nii.gz").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ct.nii.gz"]  # no temporary left

    (tmp_path / "plain.zip").write_bytes(b"not an archive")
    with pytest.raises(MONAILabelException) as info:
        series_archive_to_nifti(tmp_path / "plain.zip", tmp_path / "out" / "x.nii")
    assert info.value.error == MONAILabelError.INVALID_INPUT
