"""Unary uploads (create, append chunks at offsets, commit) on the datastore core, called directly.

They are the same uploads a stream makes: the tests cross the two paths, restart the registry, and
check that nothing half-written is left.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from monailabel.datastore import LocalDatastore
from monailabel.interfaces.exception import MONAILabelError
from monailabel_api.v1 import common_pb2
from monailabel_server.core.datastore import MAX_APPEND_BYTES, DatastoreCore
from monailabel_server.core.uploads import Target, UploadRegistry

from .helpers import nifti, raises


def _content(data: bytes) -> common_pb2.ContentHeader:
    return common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data),
                                    sha256=hashlib.sha256(data).hexdigest())


def _core(root: Path) -> DatastoreCore:
    return DatastoreCore(LocalDatastore(root / "studies"), max_volume_bytes=1 << 20, chunk_size=4096,
                         upload_ttl_s=60, max_partial_uploads=4)


@pytest.fixture()
def core(tmp_path: Path) -> DatastoreCore:
    return _core(tmp_path)


def _append_all(core: DatastoreCore, upload_id: str, data: bytes, start: int = 0, size: int = 100) -> None:
    for offset in range(start, len(data), size):
        committed, total = core.append_upload(upload_id, offset, data[offset:offset + size])
        assert committed == min(offset + size, len(data)) and total == len(data)


def test_image_then_label_in_unary_calls(core: DatastoreCore) -> None:
    data = nifti()
    status = core.create_upload("image", _content(data), image_id="img", info={"by": "browser"})
    assert status.committed_size == 0 and status.total_size == len(data) and status.expire_time
    assert core.upload_status("", "img", "").upload_id == status.upload_id  # the stream's status call sees it
    _append_all(core, status.upload_id, data)
    image = core.commit_upload(status.upload_id)
    assert image.sha256 == hashlib.sha256(data).hexdigest() and image.info["by"] == "browser"
    assert len(core.uploads) == 0 and not list(core.store.staging_dir().iterdir())  # nothing left behind

    label = nifti(seed=1)
    status = core.create_upload("label", _content(label), image_id="img", tag="final")
    _append_all(core, status.upload_id, label)
    saved = core.commit_upload(status.upload_id)
    assert saved.tag == "final" and saved.sha256 == hashlib.sha256(label).hexdigest()


def test_offsets_sizes_and_incomplete_commits(core: DatastoreCore) -> None:
    data = nifti()
    upload_id = core.create_upload("image", _content(data), image_id="img").upload_id
    core.append_upload(upload_id, 0, data[:100])
    # a chunk sent again (its answer lost) and a gap: OUT_OF_RANGE telling the committed size
    for offset in (0, 150):
        err = raises(MONAILabelError.OUT_OF_RANGE, core.append_upload, upload_id, offset, data[offset:offset + 50])
        assert err.reason == "UPLOAD_OFFSET_MISMATCH" and err.metadata["committed_size"] == "100"
    err = raises(MONAILabelError.OUT_OF_RANGE, core.append_upload, upload_id, 100, data[100:] + b"extra")
    assert err.reason == "UPLOAD_SIZE_EXCEEDED"
    raises(MONAILabelError.INVALID_INPUT, core.append_upload, upload_id, 100, b"x" * (MAX_APPEND_BYTES + 1))
    err = raises(MONAILabelError.PRECONDITION_FAILED, core.commit_upload, upload_id)
    assert err.reason == "UPLOAD_INCOMPLETE" and err.metadata["committed_size"] == "100"
    assert core.upload_status(upload_id, "", "").committed_size == 100  # still there, resumable
    raises(MONAILabelError.INVALID_INPUT, core.append_upload, "", 0, b"x")
    raises(MONAILabelError.NOT_FOUND, core.append_upload, "0" * 32, 0, b"x")


def test_a_wrong_checksum_is_refused_at_commit_and_nothing_is_stored(core: DatastoreCore) -> None:
    data = nifti()
    content = _content(data)
    content.sha256 = hashlib.sha256(b"other").hexdigest()
    upload_id = core.create_upload("image", content, image_id="img").upload_id
    _append_all(core, upload_id, data)
    raises(MONAILabelError.INVALID_INPUT, core.commit_upload, upload_id)
    assert not core.store.exists("img")
    raises(MONAILabelError.NOT_FOUND, core.commit_upload, upload_id)  # discarded with its bytes
    assert not list(core.store.staging_dir().iterdir())


def test_header_checks_come_before_any_byte(core: DatastoreCore) -> None:
    data = nifti()
    raises(MONAILabelError.INVALID_INPUT, core.create_upload, "image", _content(data), image_id="../x")
    raises(MONAILabelError.NOT_FOUND, core.create_upload, "label", _content(data), image_id="missing")
    raises(MONAILabelError.RESOURCE_EXHAUSTED, core.create_upload, "volume",
            common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=2 << 20))
    core.upload_image("img", _content(data), [common_pb2.Chunk(offset=0, data=data)], info={}, overwrite=False)
    raises(MONAILabelError.ALREADY_EXISTS, core.create_upload, "image", _content(data), image_id="img")
    assert len(core.uploads) == 0


def test_a_stream_resumes_a_unary_upload_and_a_restart_keeps_it(tmp_path: Path) -> None:
    data = nifti()
    first = _core(tmp_path)
    upload_id = first.create_upload("image", _content(data), image_id="img", info={"k": 1}, overwrite=False).upload_id
    first.append_upload(upload_id, 0, data[:200])
    # a restart (a new registry on the same staging folder) keeps the upload and what it is for
    again = _core(tmp_path)
    assert again.upload_status(upload_id, "", "").committed_size == 200
    assert again.uploads.get(upload_id).spec["info"] == {"k": 1}
    _append_all(again, upload_id, data, start=200)
    assert again.commit_upload(upload_id).info["k"] == 1

    # and a stream finishes what unary calls began
    third = _core(tmp_path / "other")
    upload_id = third.create_upload("image", _content(data), image_id="img2").upload_id
    third.append_upload(upload_id, 0, data[:300])
    rest = [common_pb2.Chunk(offset=300, data=data[300:])]
    image = third.upload_image("img2", _content(data), rest, info={}, overwrite=False, upload_id=upload_id)
    assert image.sha256 == hashlib.sha256(data).hexdigest()


def test_volume_uploads_are_taken_once_not_committed(core: DatastoreCore) -> None:
    data = nifti(shape=(8, 8, 8))
    upload_id = core.create_upload("volume", _content(data)).upload_id
    assert core.uploads.get(upload_id).target.kind == "volume"
    _append_all(core, upload_id, data)
    err = raises(MONAILabelError.PRECONDITION_FAILED, core.commit_upload, upload_id)
    assert err.reason == "VOLUME_UPLOAD"
    received = core.take_volume(upload_id)
    try:
        assert tuple(received.volume.shape) == (8, 8, 8) and received.path.read_bytes() == data
    finally:
        received.discard()
    raises(MONAILabelError.NOT_FOUND, core.take_volume, upload_id)
    assert not list(core.store.staging_dir().iterdir())

    # an image upload is not a volume to take; a corrupt volume is refused and discarded
    image_upload = core.create_upload("image", _content(data), image_id="img").upload_id
    _append_all(core, image_upload, data)
    assert raises(MONAILabelError.PRECONDITION_FAILED, core.take_volume, image_upload).reason == "NOT_A_VOLUME_UPLOAD"
    junk = b"not a volume" * 10
    bad = core.create_upload("volume", _content(junk)).upload_id
    _append_all(core, bad, junk)
    raises(MONAILabelError.INVALID_INPUT, core.take_volume, bad)
    raises(MONAILabelError.NOT_FOUND, core.take_volume, bad)


def test_delete_discards_an_upload_and_its_files(core: DatastoreCore) -> None:
    data = nifti()
    upload_id = core.create_upload("image", _content(data), image_id="img").upload_id
    core.append_upload(upload_id, 0, data[:100])
    core.delete_upload(upload_id)
    raises(MONAILabelError.NOT_FOUND, core.delete_upload, upload_id)
    assert len(core.uploads) == 0 and not list(core.store.staging_dir().iterdir())
    target = core.uploads.get(core.create_upload("image", _content(data), image_id="img").upload_id).target
    with core.uploads.begin(target, "", len(data), "") as active:  # a stream writing to it now
        assert raises(MONAILabelError.CONFLICT, core.delete_upload, active.id).reason == "UPLOAD_IN_PROGRESS"


def test_registry_persists_volume_targets(tmp_path: Path) -> None:
    registry = UploadRegistry(tmp_path, ttl_s=60, max_uploads=4)
    with registry.begin(Target("k", volume=True), "", 10, "", {"content": {}}) as upload:
        registry.part_path(upload.id).write_bytes(b"x")
    reloaded = UploadRegistry(tmp_path, ttl_s=60, max_uploads=4).get(upload.id)
    assert reloaded.target.volume and reloaded.target.kind == "volume" and reloaded.spec == {"content": {}}
