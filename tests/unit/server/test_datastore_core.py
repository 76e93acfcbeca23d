"""The datastore core and its upload registry, called directly (no port): the rules without the transport."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import List

import pytest

from monailabel.datastore import LocalDatastore
from monailabel.interfaces.exception import MONAILabelError
from monailabel.interfaces.records import PlainRecords, RecordDatastore, records_of
from monailabel_api.v1 import common_pb2
from monailabel_server.core.datastore import DatastoreCore
from monailabel_server.core.uploads import Target, UploadRegistry

from .helpers import nifti, raises


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _chunks(data: bytes, size: int = 1024, start: int = 0) -> List[common_pb2.Chunk]:
    return [common_pb2.Chunk(offset=o, data=data[o:o + size]) for o in range(start, len(data), size)]


def _content(data: bytes) -> common_pb2.ContentHeader:
    return common_pb2.ContentHeader(encoding=common_pb2.ENCODING_NIFTI, total_size=len(data),
                                    sha256=hashlib.sha256(data).hexdigest())


# -- the registry ---------------------------------------------------------------------------------

def test_one_writer_per_target_and_resume_by_id(tmp_path: Path) -> None:
    registry = UploadRegistry(tmp_path, ttl_s=60, max_uploads=4, clock=Clock())
    with registry.begin(Target("a"), "", 100, "") as upload:
        registry.part_path(upload.id).write_bytes(b"x" * 10)
        err = raises(MONAILabelError.CONFLICT, registry.begin(Target("a"), "", 100, "").__enter__)
        assert err.resource == ("image_upload", "a")
        # another target is free meanwhile
        with registry.begin(Target("a", "final"), "", 5, ""):
            pass
    kept = registry.of_target(Target("a"))
    assert kept is not None and kept.id == upload.id and not kept.active
    raises(MONAILabelError.INVALID_INPUT, registry.begin(Target("b"), upload.id, 100, "").__enter__)
    raises(MONAILabelError.INVALID_INPUT, registry.begin(Target("a"), upload.id, 101, "").__enter__)
    with registry.begin(Target("a"), upload.id, 100, "") as again:
        assert again.id == upload.id
        registry.part_path(upload.id).unlink()  # finished: the staging file was taken
    assert registry.of_target(Target("a")) is None
    raises(MONAILabelError.NOT_FOUND, registry.get, upload.id)


def test_new_upload_replaces_an_idle_partial_one(tmp_path: Path) -> None:
    registry = UploadRegistry(tmp_path, ttl_s=60, max_uploads=4, clock=Clock())
    with registry.begin(Target("a"), "", 100, "") as first:
        registry.part_path(first.id).write_bytes(b"x")
    with registry.begin(Target("a"), "", 100, "") as second:
        assert second.id != first.id
        assert not registry.part_path(first.id).exists()
        registry.part_path(second.id).write_bytes(b"y")
    raises(MONAILabelError.NOT_FOUND, registry.get, first.id)


def test_expiry_cap_and_startup_cleanup(tmp_path: Path) -> None:
    clock = Clock()
    registry = UploadRegistry(tmp_path, ttl_s=60, max_uploads=2, clock=clock)
    ids = []
    for name in ("a", "b"):
        with registry.begin(Target(name), "", 10, "") as upload:
            registry.part_path(upload.id).write_bytes(b"x")
            ids.append(upload.id)
    err = raises(MONAILabelError.RESOURCE_EXHAUSTED, registry.begin(Target("c"), "", 10, "").__enter__)
    assert err.retry_after_s is not None
    assert registry.get(ids[0]).expire_at == clock.now + 60
    # debris: a file of no upload; a restart keeps the live uploads and removes the rest
    (tmp_path / "stray.part").write_bytes(b"z")
    restarted = UploadRegistry(tmp_path, ttl_s=60, max_uploads=2, clock=clock)
    assert len(restarted) == 2 and not (tmp_path / "stray.part").exists()
    clock.now += 61
    assert restarted.sweep() == 2
    assert list(tmp_path.iterdir()) == []
    with restarted.begin(Target("c"), "", 10, ""):  # the cap has room again
        pass


def test_expired_uploads_are_dropped_at_startup(tmp_path: Path) -> None:
    clock = Clock()
    registry = UploadRegistry(tmp_path, ttl_s=10, max_uploads=2, clock=clock)
    with registry.begin(Target("a"), "", 10, "") as upload:
        registry.part_path(upload.id).write_bytes(b"x")
    clock.now += 11
    assert len(UploadRegistry(tmp_path, ttl_s=10, max_uploads=2, clock=clock)) == 0
    assert list(tmp_path.iterdir()) == []


# -- the core -------------------------------------------------------------------------------------

@pytest.fixture()
def core(tmp_path: Path) -> DatastoreCore:
    return DatastoreCore(LocalDatastore(tmp_path / "studies"), max_volume_bytes=1 << 20, chunk_size=4096,
                         upload_ttl_s=60, max_partial_uploads=4)


def test_core_upload_label_and_info_rules(core: DatastoreCore) -> None:
    data = nifti()
    image = core.upload_image("img", _content(data), _chunks(data), info={"a": 1}, overwrite=False)
    assert image.sha256 == hashlib.sha256(data).hexdigest() and image.info["a"] == 1
    raises(MONAILabelError.ALREADY_EXISTS, core.upload_image, "img", _content(data), _chunks(data), info={},
            overwrite=False)
    label = nifti(seed=1)
    core.save_label("img", "final", _content(label), _chunks(label), info={})
    wrong = nifti(shape=(3, 3, 3))
    raises(MONAILabelError.INVALID_INPUT, core.save_label, "img", "final", _content(wrong), _chunks(wrong), info={})
    assert core.get_label("img", "final").sha256 == hashlib.sha256(label).hexdigest()
    # an overwrite of another shape would orphan the label: refused
    raises(MONAILabelError.PRECONDITION_FAILED, core.upload_image, "img", _content(wrong), _chunks(wrong), info={},
            overwrite=True)
    assert core.update_image_info("img", {"a": None, "b": 2}).info.get("a") is None
    raises(MONAILabelError.RESOURCE_EXHAUSTED, core.update_image_info, "img", {"big": "x" * 20000})
    raises(MONAILabelError.INVALID_INPUT, core.update_image_info, "img", {"nan": float("nan")})
    assert core.status()["total"] == 1


def test_core_partial_upload_status_and_offsets(core: DatastoreCore) -> None:
    data = nifti(shape=(16, 16, 16))
    err = raises(MONAILabelError.INVALID_INPUT, core.upload_image, "part", _content(data), _chunks(data)[:2], info={},
                  overwrite=False)
    assert "resume from offset 2048" in err.msg
    status = core.upload_status("", "part", "")
    assert status.committed_size == 2048 and status.total_size == len(data) and not status.active
    err = raises(MONAILabelError.OUT_OF_RANGE, core.upload_image, "part", _content(data), _chunks(data, start=4096),
                  info={}, overwrite=False, upload_id=status.upload_id)
    assert err.reason == "UPLOAD_OFFSET_MISMATCH"
    assert err.metadata == {"committed_size": "2048", "upload_id": status.upload_id}
    image = core.upload_image("part", _content(data), _chunks(data, start=2048), info={}, overwrite=False,
                              upload_id=status.upload_id)
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert core.upload_status("", "part", "").upload_id == ""
    raises(MONAILabelError.NOT_FOUND, core.upload_status, status.upload_id, "", "")


def test_core_conflict_while_a_stream_writes(core: DatastoreCore) -> None:
    data = nifti(shape=(16, 16, 16))
    gate, started = threading.Event(), threading.Event()

    def slow():
        chunks = _chunks(data)
        yield chunks[0]
        started.set()
        assert gate.wait(10)
        yield from chunks[1:]

    worker = threading.Thread(target=lambda: core.upload_image("busy", _content(data), slow(), info={},
                                                               overwrite=False))
    worker.start()
    try:
        assert started.wait(10)
        other = nifti(shape=(16, 16, 16), seed=3)
        raises(MONAILabelError.CONFLICT, core.upload_image, "busy", _content(other), _chunks(other), info={},
                overwrite=True)
    finally:
        gate.set()
        worker.join(10)
    assert core.get_image("busy").sha256 == hashlib.sha256(data).hexdigest()


def test_records_interface_of_local_and_plain_datastores(tmp_path: Path) -> None:
    local = LocalDatastore(tmp_path / "studies")
    assert records_of(local) is local and isinstance(local, RecordDatastore)
    plain = PlainRecords(local)  # any MONAI Label datastore, seen through its generic methods only
    src = tmp_path / "x.nii"
    src.write_bytes(nifti())
    plain.add_image("x", src, {"k": 1})
    record = plain.image_record("x")
    assert record.sha256 == hashlib.sha256(src.read_bytes()).hexdigest() and record.size == src.stat().st_size
    raises(MONAILabelError.ALREADY_EXISTS, plain.add_image, "x", src, {})
    records, total = plain.list_image_records(page_size=10)
    assert total == 1 and [r.id for r in records] == ["x"]
    assert plain.staging_dir().is_dir() and plain.staging_dir() != local.staging_dir()
