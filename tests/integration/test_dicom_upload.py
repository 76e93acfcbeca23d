"""UploadImage of a DICOM series (a zip or tar of its instances): stored as a checked volume, over a real port."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator

import grpc
import nibabel as nib
import numpy as np
import pytest

from monailabel.datasets.dicom_phantoms import phantom_series, write_series
from monailabel_api.v1 import common_pb2
from monailabel_client import MonaiLabelClient
from monailabel_server.server import RunningServer

from .test_datastore_trust import _start

SHAPE = (24, 20, 6)  # columns, rows, slices


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = _start(tmp_path_factory.mktemp("dicom_upload"), max_volume_bytes=8 << 20)
    yield running
    running.stop(grace=1)


@pytest.fixture()
def client(server: RunningServer) -> Iterator[MonaiLabelClient]:
    with MonaiLabelClient(server.address, timeout=60) as c:
        yield c


def _series_files(tmp_path: Path, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    datasets, values, _ = phantom_series(SHAPE, seed=seed)
    return write_series(datasets, tmp_path / f"series{seed}"), values


def _zip(files: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in files:
            z.write(f, f.name)
    return buf.getvalue()


def _tar(files: list[Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for f in files:
            t.add(f, f.name)
    return buf.getvalue()


@pytest.mark.parametrize("pack", [_zip, _tar], ids=["zip", "tar.gz"])
def test_a_series_archive_is_stored_as_a_volume(client: MonaiLabelClient, tmp_path: Path, pack: object) -> None:
    files, values = _series_files(tmp_path)
    image_id = f"ct_series_{pack.__name__.strip('_')}"  # type: ignore[attr-defined]
    image = client.upload_image(image_id, pack(files), encoding=common_pb2.ENCODING_DICOM_ZIP)  # type: ignore[operator]
    assert image.file_extension == ".nii.gz"
    out = tmp_path / "back.nii.gz"
    client.download_image(image_id, out)
    vol = nib.load(str(out))
    assert vol.shape[:3] == SHAPE
    # the voxels are the series' (rescaled) values on its grid, slice spacing 2 mm from the positions
    assert np.allclose(np.asarray(vol.dataobj, dtype=np.float64), values, atol=1.0)
    assert np.allclose(nib.affines.voxel_sizes(vol.affine), (1.5, 1.5, 2.0), atol=1e-3)


def test_an_archive_that_is_not_a_series_is_refused_and_nothing_is_stored(client: MonaiLabelClient,
                                                                          tmp_path: Path) -> None:
    before = {i.image_id for i in client.list_images()}
    for data, code in (
        (b"not an archive at all" * 10, grpc.StatusCode.INVALID_ARGUMENT),
        (_zip([_write(tmp_path / "notes.txt", b"hello")]), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.RpcError) as err:
            client.upload_image("broken_series", data, encoding=common_pb2.ENCODING_DICOM_ZIP)
        assert err.value.code() in (code, grpc.StatusCode.FAILED_PRECONDITION), err.value.details()
        assert "/" + "tmp" not in err.value.details()
    assert {i.image_id for i in client.list_images()} == before


def test_an_archive_that_unpacks_past_the_limit_is_refused(client: MonaiLabelClient, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.dcm", b"\0" * (16 << 20))  # 16 MiB of zeros: a few KiB compressed
    with pytest.raises(grpc.RpcError) as err:
        client.upload_image("bomb_series", buf.getvalue(), encoding=common_pb2.ENCODING_DICOM_ZIP)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
    assert "bomb_series" not in {i.image_id for i in client.list_images()}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
