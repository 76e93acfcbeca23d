"""Disk reserved ahead of a staged upload: taken at open, given back when the stream stalls, and
invisible to the resume (which measures the file by its size)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash

from monailabel_api.files import release, reserve
from monailabel_server.transfer import StagedUpload
from tests.disk import reserves_ahead

MIB = 1 << 20
TOTAL = 16 * MIB
DATA = os.urandom(TOTAL)


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.fixture()
def staging(tmp_path: Path) -> Path:
    if not reserves_ahead(tmp_path):
        pytest.skip("this file system (or platform) cannot reserve space past a file's end")
    return tmp_path


def test_reserve_keeps_the_size_and_release_gives_the_space_back(staging: Path) -> None:
    path = staging / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"x" * 4096)
        assert reserve(fd, 4096, TOTAL)
        assert os.fstat(fd).st_size == 4096 and _allocated(path) >= TOTAL
        release(fd)
        assert os.fstat(fd).st_size == 4096 and _allocated(path) < MIB
    finally:
        os.close(fd)
    assert not reserve(-1, 0, MIB) and not reserve(0, 0, 0)


def test_a_staged_upload_reserves_its_total_and_a_stalled_one_gives_back_the_rest(staging: Path) -> None:
    digest = xxhash.xxh3_128_hexdigest(DATA)
    part = staging / "u.part"
    upload = StagedUpload(part, TOTAL, xxh3_128=digest, want_sha256=False).open()
    assert _allocated(part) >= TOTAL and part.stat().st_size == 0
    upload.write(0, DATA[: 3 * MIB])
    upload.suspend()
    assert part.stat().st_size == 3 * MIB
    assert 3 * MIB <= _allocated(part) < 4 * MIB
    resumed = StagedUpload(part, TOTAL, xxh3_128=digest, want_sha256=False).open()
    assert resumed.committed == 3 * MIB  # the reservation never looked like received bytes
    assert _allocated(part) >= TOTAL
    resumed.write(3 * MIB, DATA[3 * MIB:])
    assert resumed.finish()["xxh3_128"] == digest
    assert part.read_bytes() == DATA


def test_a_full_disk_is_resource_exhausted_not_an_internal_error() -> None:
    import errno

    import grpc

    from monailabel_server.errors import status_of

    code, message = status_of(OSError(errno.ENOSPC, "No space left on device"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "disk is full" in message
    wrapped = RuntimeError("writing the label failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert status_of(wrapped)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_of(OSError(errno.EACCES, "Permission denied"))[0] == grpc.StatusCode.INTERNAL
