"""Checksums of streams: the shared digest helpers, the staged upload's verification, and the remembered
XXH3-128 of stored files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import xxhash

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_api.digests import SHA256, XXH3_128, Digests, fastest, is_hex_digest, mismatch
from monailabel_api.v1 import common_pb2
from monailabel_server.file_digests import FileDigests
from monailabel_server.transfer import StagedUpload, announced_checksums, check_header_size

DATA = os.urandom(300_000)


def test_digests_match_the_reference_implementations() -> None:
    d = Digests([SHA256, XXH3_128])
    for i in range(0, len(DATA), 65536):
        d.update(memoryview(DATA)[i:i + 65536])
    assert d.hexdigest(SHA256) == hashlib.sha256(DATA).hexdigest()
    assert d.hexdigest(XXH3_128) == xxhash.xxh3_128_hexdigest(DATA)
    assert Digests([XXH3_128]).hexdigest(SHA256) is None
    assert Digests.of(b"", XXH3_128) == "99aa06d3014798d86001c324468d497f"  # XXH3-128 of nothing (xxhsum -H2)
    with pytest.raises(ValueError):
        Digests(["md5"])
    assert is_hex_digest("ab" * 16, XXH3_128) and not is_hex_digest("AB" * 16, XXH3_128)
    assert not is_hex_digest("ab" * 32, XXH3_128) and is_hex_digest("ab" * 32, SHA256)


def test_a_header_is_checked_by_its_fastest_checksum() -> None:
    right_x, right_s = xxhash.xxh3_128_hexdigest(DATA), hashlib.sha256(DATA).hexdigest()
    header = common_pb2.ContentHeader(sha256=right_s, xxh3_128=right_x)
    assert fastest(header) == XXH3_128 and mismatch(header, DATA) is None
    header.xxh3_128 = xxhash.xxh3_128_hexdigest(b"x")
    assert "xxh3_128" in (mismatch(header, DATA) or "")
    header.xxh3_128 = ""
    assert fastest(header) == SHA256 and mismatch(header, DATA) is None
    assert "sha256" in (mismatch(header, DATA[1:]) or "")
    assert fastest(common_pb2.ContentHeader()) is None and mismatch(common_pb2.ContentHeader(), DATA) is None


def _write(upload: StagedUpload, data: bytes = DATA) -> None:
    for i in range(0, len(data), 65536):
        upload.write(i, data[i:i + 65536])


def test_a_staged_upload_verifies_xxh3_and_hashes_sha256_only_when_asked(tmp_path: Path) -> None:
    x = xxhash.xxh3_128_hexdigest(DATA)
    upload = StagedUpload(tmp_path / "a.part", len(DATA), xxh3_128=x, want_sha256=False).open()
    _write(upload)
    digests = upload.finish()
    assert digests == {XXH3_128: x}
    assert (tmp_path / "a.part").read_bytes() == DATA

    both = StagedUpload(tmp_path / "b.part", len(DATA), xxh3_128=x, want_sha256=True).open()
    _write(both)
    assert both.finish() == {XXH3_128: x, SHA256: hashlib.sha256(DATA).hexdigest()}

    wrong = StagedUpload(tmp_path / "c.part", len(DATA), xxh3_128=xxhash.xxh3_128_hexdigest(b"x"),
                         want_sha256=False).open()
    _write(wrong)
    with pytest.raises(MONAILabelException) as err:
        wrong.finish()
    assert err.value.error == MONAILabelError.INVALID_INPUT and "xxh3_128" in err.value.msg
    assert not (tmp_path / "c.part").exists() and not (tmp_path / "c.part.json").exists()


def test_a_resumed_upload_keeps_its_xxh3_and_a_different_one_starts_over(tmp_path: Path) -> None:
    x = xxhash.xxh3_128_hexdigest(DATA)
    part = tmp_path / "r.part"
    first = StagedUpload(part, len(DATA), xxh3_128=x, want_sha256=False).open()
    _write(first, DATA[:131072])
    first.suspend()
    assert json.loads((tmp_path / "r.part.json").read_text())["xxh3_128"] == x
    resumed = StagedUpload(part, len(DATA), xxh3_128=x, want_sha256=False).open()
    assert resumed.committed == 131072
    for i in range(131072, len(DATA), 65536):
        resumed.write(i, DATA[i:i + 65536])
    assert resumed.finish()[XXH3_128] == x  # the held bytes were hashed again on resume

    other = StagedUpload(part, len(DATA), xxh3_128=x, want_sha256=False).open()
    _write(other, DATA[:65536])
    other.suspend()
    assert StagedUpload(part, len(DATA), xxh3_128=xxhash.xxh3_128_hexdigest(b"x")).open().committed == 0


def test_header_checks_and_the_announced_checksums() -> None:
    header = common_pb2.ContentHeader(total_size=10, xxh3_128="AB" * 16)
    with pytest.raises(MONAILabelException, match="32 lower-case hex"):
        check_header_size(header, 100)
    header.xxh3_128 = "ab" * 16
    check_header_size(header, 100)
    assert announced_checksums(header) != announced_checksums(common_pb2.ContentHeader(total_size=10))
    assert announced_checksums(common_pb2.ContentHeader(sha256="cd" * 32)) == "cd" * 32  # as before


def test_file_digests_are_remembered_per_file_identity_and_never_stale(tmp_path: Path) -> None:
    cache = FileDigests(max_entries=2)
    f = tmp_path / "f.bin"
    f.write_bytes(DATA)
    cache.remember(f, "00" * 16)  # what an upload computed: trusted for this very file
    assert cache.xxh3_128(f) == "00" * 16
    moved = tmp_path / "g.bin"
    os.replace(f, moved)  # a rename keeps the identity
    assert cache.xxh3_128(moved) == "00" * 16
    moved.write_bytes(DATA[:-1])  # rewritten: computed again
    assert cache.xxh3_128(moved) == xxhash.xxh3_128_hexdigest(DATA[:-1])
    others = [tmp_path / f"o{i}" for i in range(3)]
    for i, o in enumerate(others):
        o.write_bytes(DATA[i:])
        assert cache.xxh3_128(o) == xxhash.xxh3_128_hexdigest(DATA[i:])
    assert len(cache._entries) == 2
    with pytest.raises(FileNotFoundError):
        cache.xxh3_128(tmp_path / "missing")
