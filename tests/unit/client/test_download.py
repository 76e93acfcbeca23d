"""The client's download into memory: received in place into the bytes it returns, and checked.

``FilledBytes`` is tested directly; the client's handling of a peer that sends more or fewer bytes
than it announced, or a different file on resume, is tested against a real grpc server whose
``DownloadImage`` misbehaves on purpose (a hostile or broken peer, which the real server never is).
"""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path
from typing import Callable, Iterator, List

import grpc
import pytest

from monailabel_api.buffers import HUGE_PAGE_MIN, FilledBytes
from monailabel_api.digests import XXH3_128, Digests
from monailabel_api.v1 import common_pb2, datastore_pb2, datastore_pb2_grpc
from monailabel_client import MonaiLabelClient
from monailabel_client.client import UploadError
from tests.disk import past_the_disk, reserves_ahead

MIB = 1 << 20


# -- FilledBytes ----------------------------------------------------------------------------------


def test_filled_bytes_hands_over_the_object_it_was_written_into() -> None:
    sink = FilledBytes(10)
    assert sink.in_place
    sink.write(b"abcd")
    assert sink.getvalue() == b"abcd"  # a copy of the part written so far
    sink.write(memoryview(b"efghij"))
    value = sink.getvalue()
    assert type(value) is bytes and value == b"abcdefghij"
    assert hash(value) == hash(b"abcdefghij") and {value: 1}[b"abcdefghij"] == 1
    assert sink.getvalue() is value


def test_filled_bytes_refuses_more_than_its_size_and_keeps_what_it_has() -> None:
    sink = FilledBytes(4)
    sink.write(b"abc")
    with pytest.raises(ValueError, match="5 bytes written to a buffer of 4"):
        sink.write(b"de")
    sink.write(b"d")
    assert sink.getvalue() == b"abcd"
    with pytest.raises(ValueError, match="negative"):
        FilledBytes(-1)


def test_filled_bytes_of_nothing() -> None:
    sink = FilledBytes(0)
    assert sink.getvalue() == b""
    with pytest.raises(ValueError):
        sink.write(b"x")


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "absent"
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else "absent"


def _vm_flags_of(address: int) -> List[str]:
    flags: List[str] = []
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("VmFlags:"):
            flags = line.split()[1:]
    return flags


@pytest.mark.skipif(_thp_mode() not in ("madvise", "always"), reason="the kernel offers no transparent huge pages")
def test_a_large_buffer_is_advised_to_use_huge_pages() -> None:
    size = HUGE_PAGE_MIN * 2
    sink = FilledBytes(size)
    piece = bytes(range(256)) * 4096  # 1 MiB
    for _ in range(size // MIB):
        sink.write(piece)
    value = sink.getvalue()
    middle = id(value) + size // 2
    assert "hg" in _vm_flags_of(middle), "the buffer's mapping lacks MADV_HUGEPAGE"
    assert value[size // 2:size // 2 + 256] == bytes(range(256)) and len(value) == size


# -- the client against a misbehaving peer --------------------------------------------------------

Sender = Callable[
    [datastore_pb2.DownloadImageRequest, grpc.ServicerContext], Iterator[datastore_pb2.DownloadImageResponse]
]


class _Peer(datastore_pb2_grpc.DatastoreServiceServicer):
    def __init__(self) -> None:
        self.send: Sender = lambda request, context: iter(())
        self.offsets: List[int] = []

    def DownloadImage(self, request, context):  # noqa: N802 (grpc's name)
        self.offsets.append(request.offset)
        yield from self.send(request, context)


@pytest.fixture()
def peer() -> Iterator[tuple[_Peer, MonaiLabelClient]]:
    servicer = _Peer()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    datastore_pb2_grpc.add_DatastoreServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = MonaiLabelClient(f"127.0.0.1:{port}", timeout=30, retries=2)
    try:
        yield servicer, client
    finally:
        client.close()
        server.stop(0).wait()


def _header(data: bytes, total: int | None = None) -> datastore_pb2.DownloadImageResponse:
    return datastore_pb2.DownloadImageResponse(header=common_pb2.ContentHeader(
        encoding=common_pb2.ENCODING_NIFTI, total_size=len(data) if total is None else total,
        xxh3_128=Digests.of(data, XXH3_128)))


def _chunks(data: bytes, offset: int = 0, size: int = MIB) -> Iterator[datastore_pb2.DownloadImageResponse]:
    for at in range(offset, len(data), size):
        yield datastore_pb2.DownloadImageResponse(chunk=common_pb2.Chunk(offset=at, data=data[at:at + size]))


DATA = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit


def test_a_whole_download_is_returned(peer) -> None:
    servicer, client = peer
    servicer.send = lambda request, context: iter([_header(DATA), *_chunks(DATA)])
    assert client.download_image("x") == DATA


def test_more_bytes_than_announced_are_refused(peer) -> None:
    servicer, client = peer
    servicer.send = lambda request, context: iter([_header(DATA, len(DATA) - 10), *_chunks(DATA)])
    with pytest.raises(UploadError, match="more than the .* bytes it announced"):
        client.download_image("x")


def test_a_stream_that_ends_short_is_refused(peer, tmp_path: Path) -> None:
    servicer, client = peer
    servicer.send = lambda request, context: iter([_header(DATA), *_chunks(DATA[:MIB])])
    with pytest.raises(UploadError, match=f"ended after {MIB} of the {len(DATA)} bytes"):
        client.download_image("x")
    with pytest.raises(UploadError, match="ended after"):
        client.download_image("x", tmp_path / "x.nii")
    assert not (tmp_path / "x.nii").exists()


def test_a_stream_without_a_header_is_refused(peer) -> None:
    servicer, client = peer
    servicer.send = lambda request, context: iter(list(_chunks(DATA)))
    with pytest.raises(UploadError, match="before their header"):
        client.download_image("x")


def test_a_broken_stream_resumes_where_it_broke(peer) -> None:
    servicer, client = peer
    broke = threading.Event()

    def send(request, context):
        yield _header(DATA)
        for message in _chunks(DATA, request.offset):
            if message.chunk.offset == 2 * MIB and not broke.is_set():
                broke.set()
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection lost")
            yield message

    servicer.send = send
    assert client.download_image("x") == DATA
    assert servicer.offsets == [0, 2 * MIB]


def test_a_file_that_changed_before_the_resume_is_refused(peer) -> None:
    servicer, client = peer

    def send(request, context):
        if request.offset:
            yield _header(DATA + b"more")
            return
        yield _header(DATA)
        yield next(_chunks(DATA))
        context.abort(grpc.StatusCode.UNAVAILABLE, "connection lost")

    servicer.send = send
    with pytest.raises(UploadError, match="changed during the download"):
        client.download_image("x")


def test_corrupt_bytes_fail_the_checksum(peer) -> None:
    servicer, client = peer
    bad = DATA[:100] + bytes([DATA[100] ^ 1]) + DATA[101:]
    servicer.send = lambda request, context: iter([_header(DATA), *_chunks(bad)])
    with pytest.raises(UploadError, match="do not match the server's checksum"):
        client.download_image("x")


def test_a_failed_download_to_a_file_leaves_no_part_file(peer, tmp_path: Path) -> None:
    servicer, client = peer
    servicer.send = lambda request, context: iter([_header(DATA, len(DATA) - 10), *_chunks(DATA)])
    with pytest.raises(UploadError, match="more than"):
        client.download_image("x", tmp_path / "x.nii")
    servicer.send = lambda request, context: iter([_header(DATA), *_chunks(DATA[:MIB])])
    with pytest.raises(UploadError, match="ended after"):
        client.download_image("x", tmp_path / "x.nii")
    assert list(tmp_path.iterdir()) == []
    servicer.send = lambda request, context: iter([_header(DATA), *_chunks(DATA)])
    assert client.download_image("x", tmp_path / "x.nii") == tmp_path / "x.nii"
    assert (tmp_path / "x.nii").read_bytes() == DATA and list(tmp_path.iterdir()) == [tmp_path / "x.nii"]


def test_a_download_larger_than_the_disk_fails_before_its_bytes(peer, tmp_path: Path) -> None:
    if not reserves_ahead(tmp_path):
        pytest.skip("this file system cannot reserve space ahead (no fallocate)")
    servicer, client = peer
    servicer.send = lambda request, context: iter([_header(DATA, past_the_disk(tmp_path)), *_chunks(DATA)])
    with pytest.raises(OSError, match="no room"):
        client.download_image("x", tmp_path / "x.nii")
    assert list(tmp_path.iterdir()) == []
