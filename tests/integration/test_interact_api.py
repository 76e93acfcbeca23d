"""InferService.Interact on a real server: deltas rebuild exactly the mask Infer gives, cancels, errors."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np
import pytest
import xxhash

from monailabel.datasets import write_phantoms
from monailabel_api.v1 import common_pb2, infer_pb2
from monailabel_client import MonaiLabelClient
from monailabel_client.interact import COMPRESSION_NONE, COMPRESSION_ZLIB
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start
from tests.integration.conftest import copy_template
from tests.integration.helpers import assert_status

SHAPE = (48, 40, 32)
MODELS = "segmentation,deepgrow_3d"


@pytest.fixture(scope="module")
def interact_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("interact")
    app_dir = copy_template(root / "app")
    write_phantoms(root / "studies", count=1, shape=SHAPE, labeled=0)
    config = ServerConfig(app_dir=Path(app_dir), studies=str(root / "studies"), port=0, max_volume_bytes=64 << 20,
                          conf={"roi_size": "32,32,32", "models": MODELS})
    running = start(config)
    yield running
    running.stop(grace=1)


@pytest.fixture()
def client(interact_server: RunningServer) -> Iterator[MonaiLabelClient]:
    with MonaiLabelClient(interact_server.address, timeout=120) as c:
        yield c


def _full_mask(client: MonaiLabelClient, model: str, session_id: str, fg, bg) -> np.ndarray:
    out = client.infer(model, session_id=session_id, foreground=fg, background=bg, encoding=common_pb2.ENCODING_RAW)
    return out.array()


CLICKS = [
    ([[10, 12, 8]], []),
    ([[10, 12, 8], [30, 20, 16]], []),
    ([[10, 12, 8], [30, 20, 16]], [[40, 30, 25]]),
    ([[24, 20, 16]], []),
]


@pytest.mark.parametrize("compression", [COMPRESSION_ZLIB, COMPRESSION_NONE])
@pytest.mark.parametrize("model", ["deepgrow_3d", "segmentation"])
def test_deltas_rebuild_exactly_the_full_mask(client: MonaiLabelClient, model: str, compression: int) -> None:
    """deepgrow_3d leaves a float mask (Activationsd + AsDiscreted); segmentation the template's integer one."""
    image_id = next(client.list_images()).image_id
    session = client.create_session(image_id=image_id)
    changed = 0
    with client.interact(session.session_id, model, compression=compression) as live:
        for fg, bg in CLICKS:
            before = np.zeros(SHAPE, np.uint8) if live.mask is None else live.mask.copy()
            click_id = live.click(foreground=fg, background=bg)
            answer = live.answer()
            assert answer.click_id == click_id and not answer.cancelled and not answer.full
            expected = _full_mask(client, model, session.session_id, fg, bg)
            assert live.mask is not None and live.mask.shape == SHAPE
            np.testing.assert_array_equal(live.mask, expected)
            if answer.box_size:
                changed += 1
                inside = tuple(slice(a, a + n) for a, n in zip(answer.box_start, answer.box_size, strict=True))
                outside = np.ones(SHAPE, bool)
                outside[inside] = False
                np.testing.assert_array_equal(expected[outside], before[outside])  # the box holds every change
                assert answer.wire_bytes > 0 and answer.latency["infer"] > 0
            else:
                np.testing.assert_array_equal(expected, before)
            assert answer.labels
        full_id = live.request_full()
        full = live.answer()
        assert full.full and full.click_id == full_id and full.box_size == SHAPE
        np.testing.assert_array_equal(live.mask, expected)
        assert live.affine is not None and live.affine.shape == (4, 4)
    assert changed >= 1  # the clicks changed the mask at least once: deltas were exercised


def test_a_click_that_changes_nothing_sends_no_voxels(client: MonaiLabelClient) -> None:
    image_id = next(client.list_images()).image_id
    session = client.create_session(image_id=image_id)
    with client.interact(session.session_id, "segmentation") as live:
        live.click()
        first = live.answer()
        live.click()  # the automatic model gives the same mask again
        second = live.answer()
    assert first.wire_bytes > 0 or not first.box_size
    assert second.box_size == () and second.wire_bytes == 0


def test_superseded_clicks_are_cancelled(client: MonaiLabelClient) -> None:
    """A click cancelled while queued, or while it runs, is answered ``cancelled``; the mask stays the last one."""
    image_id = next(client.list_images()).image_id
    session = client.create_session(image_id=image_id)
    fg1, fg2, fg3 = [[10, 12, 8]], [[30, 20, 16]], [[24, 20, 16]]
    with client.interact(session.session_id, "deepgrow_3d") as live:
        c1 = live.click(foreground=fg1)
        live.cancel(c1)  # reaches the server long before a model run ends: c1 is queued or running
        c2 = live.click(foreground=fg2)
        c3 = live.click(foreground=fg3)
        live.cancel(c2)  # arrives while c2 waits (or runs): a model run takes far longer than two messages
        answers = [live.answer() for _ in range(3)]
    assert [a.click_id for a in answers] == [c1, c2, c3]
    assert answers[0].cancelled and answers[1].cancelled and not answers[2].cancelled
    np.testing.assert_array_equal(live.mask, _full_mask(client, "deepgrow_3d", session.session_id, fg3, []))


def test_bad_streams_get_clear_statuses(client: MonaiLabelClient, interact_server: RunningServer) -> None:
    image_id = next(client.list_images()).image_id
    session = client.create_session(image_id=image_id)
    with grpc.insecure_channel(interact_server.address) as channel:
        stub = channel.stream_stream("/monailabel.v1.InferService/Interact",
                                     infer_pb2.InteractRequest.SerializeToString, infer_pb2.InteractResponse.FromString)

        def run(*messages: infer_pb2.InteractRequest):
            return lambda: list(stub(iter(messages), timeout=60))

        click = infer_pb2.InteractRequest(click=infer_pb2.Click(click_id=1))
        assert_status(grpc.StatusCode.INVALID_ARGUMENT, run(click), "first message of Interact must be start")
        start = infer_pb2.InteractStart(session_id=session.session_id, model="nope")
        assert_status(grpc.StatusCode.NOT_FOUND, run(infer_pb2.InteractRequest(start=start)), "does not exist")
        start = infer_pb2.InteractStart(session_id="f" * 32, model="deepgrow_3d")
        assert_status(grpc.StatusCode.NOT_FOUND, run(infer_pb2.InteractRequest(start=start)), "session")
        start = infer_pb2.InteractStart(session_id=session.session_id, model="deepgrow_3d", compression=7)
        assert_status(grpc.StatusCode.INVALID_ARGUMENT, run(infer_pb2.InteractRequest(start=start)),
                      "start.compression")
        start = infer_pb2.InteractStart(session_id=session.session_id, model="deepgrow_3d")
        outside = infer_pb2.Click(click_id=1, params=infer_pb2.InferParams(
            foreground=[infer_pb2.Point(coordinates=[500, 1, 1])]))
        assert_status(grpc.StatusCode.INVALID_ARGUMENT,
                      run(infer_pb2.InteractRequest(start=start), infer_pb2.InteractRequest(click=outside)),
                      "outside the volume")


def test_a_dropped_stream_leaves_the_server_serving(client: MonaiLabelClient) -> None:
    """Clicks queued on a stream the client drops are not run; the next stream on the session works."""
    image_id = next(client.list_images()).image_id
    session = client.create_session(image_id=image_id)
    live = client.interact(session.session_id, "deepgrow_3d")
    for i in range(8):
        live.click(foreground=[[10 + i, 12, 8]])
    first = live.answer()
    assert first.click_id == 1 and not first.cancelled
    live.cancel_stream()
    with pytest.raises(grpc.RpcError) as info:
        for _ in range(8):
            live.answer()
    assert info.value.code() == grpc.StatusCode.CANCELLED
    with client.interact(session.session_id, "deepgrow_3d") as again:
        again.click(foreground=[[24, 20, 16]])
        answer = again.answer()
    assert answer.click_id == 1 and not answer.cancelled
    np.testing.assert_array_equal(again.mask, _full_mask(client, "deepgrow_3d", session.session_id, [[24, 20, 16]], []))


def test_clicks_share_the_sessions_volume_without_a_copy(tmp_path: Path) -> None:
    """A stream holds no copy of the volume: with room for two sessions, a second fits while the first streams."""
    app_dir = copy_template(tmp_path / "app")
    write_phantoms(tmp_path / "studies", count=1, shape=SHAPE, labeled=0)
    volume = int(np.prod(SHAPE)) * 4  # decoded as float32
    config = ServerConfig(app_dir=Path(app_dir), studies=str(tmp_path / "studies"), port=0,
                          max_volume_bytes=64 << 20, max_session_bytes=2 * volume,
                          conf={"roi_size": "32,32,32", "models": MODELS})
    running = start(config)
    try:
        with MonaiLabelClient(running.address, timeout=120) as c:
            image_id = next(c.list_images()).image_id
            first = c.create_session(image_id=image_id)
            with c.interact(first.session_id, "deepgrow_3d") as live:
                live.click(foreground=[[10, 12, 8]])
                assert not live.answer().cancelled
                second = c.create_session(image_id=image_id)
                assert_status(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: c.create_session(image_id=image_id),
                              "sessions hold")
                live.click(foreground=[[24, 20, 16]])
                assert not live.answer().cancelled
            expected = _full_mask(c, "deepgrow_3d", first.session_id, [[24, 20, 16]], [])
            np.testing.assert_array_equal(live.mask, expected)
            c.delete_session(second.session_id)
    finally:
        running.stop(grace=1)


def test_interact_deltas_carry_the_checksum_the_start_asks_for(client: MonaiLabelClient) -> None:
    session = client.create_session(image_id=next(client.list_images()).image_id)
    centre = [[24, 20, 16]]
    with client.interact(session.session_id, "deepgrow_3d") as fast:  # the client asks for xxh3_128
        fast.click(foreground=centre)
        answer = fast.answer()  # checked by its checksum
        assert answer.box_size and fast.mask is not None
    for checksum in ("", "sha256", "xxh3_128"):
        start = infer_pb2.InteractStart(session_id=session.session_id, model="deepgrow_3d", checksum=checksum,
                                        compression=infer_pb2.VOXEL_COMPRESSION_NONE)
        click = infer_pb2.Click(click_id=1, params=infer_pb2.InferParams(
            foreground=[infer_pb2.Point(coordinates=centre[0])]))
        read = threading.Event()

        def requests(start=start, click=click, read=read):  # held open until the answer is read
            yield infer_pb2.InteractRequest(start=start)
            yield infer_pb2.InteractRequest(click=click)
            read.wait(120)

        responses = client.infers.Interact(requests(), timeout=120)
        delta = next(responses).delta
        data = b"".join(bytes(next(responses).chunk.data) for _ in range(-(-delta.compressed_size // (1 << 20))))
        read.set()
        responses.cancel()
        if checksum == "xxh3_128":
            assert delta.xxh3_128 == xxhash.xxh3_128_hexdigest(data) and delta.sha256 == ""
        else:
            assert delta.sha256 == hashlib.sha256(data).hexdigest() and delta.xxh3_128 == ""
    bad = infer_pb2.InteractStart(session_id=session.session_id, model="deepgrow_3d", checksum="crc32")
    assert_status(grpc.StatusCode.INVALID_ARGUMENT, lambda: list(client.infers.Interact(
        iter([infer_pb2.InteractRequest(start=bad)]), timeout=60)), "start.checksum")
