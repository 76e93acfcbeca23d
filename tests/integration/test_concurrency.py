"""Writers racing on one target, and stalled streams that must not starve the server.

* Two UploadImage streams for one new image id, both open at once: exactly one wins whole (the
  stored file is byte for byte one of the two uploads and the index agrees), the other gets a clear
  status (ABORTED, ALREADY_EXISTS or FAILED_PRECONDITION), ten times.
* The same for two SaveLabel streams on one image and tag.
* More stalled streams (a header, then nothing) than the server has RPC threads, while a health check
  and GetAppInfo still answer within a couple of seconds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import grpc
import nibabel as nib
import numpy as np
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2

from monailabel.datasets import make_phantom, write_phantoms
from monailabel_api.v1 import app_pb2, datastore_pb2, infer_pb2
from monailabel_server.config import ServerConfig
from monailabel_server.server import RunningServer, start

from .conftest import copy_template
from .hostile import (
    RPC_TIMEOUT_S,
    SHAPE,
    Stubs,
    agreement_problems,
    chunks_of,
    content_header,
    label_header,
    nifti_bytes,
    stream,
    upload_header,
)

RPC_THREADS = 8
STALLED = 20
REPEATS = 10
# how long a stream holds its last chunk for the other racer's call to end; both admitted at once (the
# bug these tests catch) wait it out, then both finish, and the test sees two winners
RACE_WAIT_S = 5.0
LOSER_CODES = {grpc.StatusCode.ABORTED, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION}
# a stalled stream outlives the checks but not the test
STALL_TIMEOUT_S = 60.0
ANSWER_WITHIN_S = 2.0

TTL_60 = duration_pb2.Duration(seconds=60)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[RunningServer, Path]]:
    root = tmp_path_factory.mktemp("concurrency")
    app_dir = copy_template(root / "app")
    studies = root / "studies"
    write_phantoms(studies, count=2, shape=SHAPE, labeled=0)
    config = ServerConfig(app_dir=app_dir, studies=str(studies), port=0, rpc_threads=RPC_THREADS,
                          conf={"roi_size": "16,16,16"})
    running = start(config)
    try:
        yield running, studies
    finally:
        running.stop(grace=1)


@pytest.fixture()
def stubs(served: Tuple[RunningServer, Path]) -> Iterator[Stubs]:
    with grpc.insecure_channel(served[0].address) as channel:
        yield Stubs.of(channel)


def _race(call: Callable[..., Any], streams: List[List[Any]]) -> List[Tuple[grpc.StatusCode, str, Any]]:
    """Runs the streams at once; each waits after its first chunk until all have sent one (or 5 s passed)."""
    barrier = threading.Barrier(len(streams), timeout=5)
    results: List[Any] = [None] * len(streams)

    ended = [threading.Event() for _ in streams]

    def requests(parts: List[Any], me: int) -> Iterator[Any]:
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                # the last chunk waits until the other call has ended: both headers have then reached
                # the server while this stream was open (on a loaded machine the other call's handler
                # may start late, and a stream that had ended by then was no race at all)
                ended[1 - me].wait(RACE_WAIT_S)
            yield part
            if i == 1:
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    pass  # the other stream ended early (refused at its header): go on alone

    def run(i: int) -> None:
        try:
            results[i] = (grpc.StatusCode.OK, "", call(requests(streams[i], i), timeout=RPC_TIMEOUT_S))
        except grpc.RpcError as exc:
            results[i] = (exc.code(), exc.details() or "", None)
        finally:
            ended[i].set()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=RPC_TIMEOUT_S + 10)
    assert all(r is not None for r in results), "a racing call did not finish within its deadline"
    return results


def _one_winner(results: List[Tuple[grpc.StatusCode, str, Any]]) -> int:
    winners = [i for i, (code, _, _) in enumerate(results) if code == grpc.StatusCode.OK]
    outcome = [(code.name, details[:120]) for code, details, _ in results]
    assert len(winners) == 1, f"exactly one writer must win: {outcome}"
    loser = results[1 - winners[0]]
    assert loser[0] in LOSER_CODES, f"the other writer needs a clear status: {outcome}"
    assert loser[1], "the refusal says why"
    return winners[0]


def _download(stubs: Stubs, image_id: str, tag: str = "") -> bytes:
    if tag:
        replies = stubs.datastore.DownloadLabel(datastore_pb2.DownloadLabelRequest(image_id=image_id, tag=tag),
                                                timeout=RPC_TIMEOUT_S)
    else:
        replies = stubs.datastore.DownloadImage(datastore_pb2.DownloadImageRequest(image_id=image_id),
                                                timeout=RPC_TIMEOUT_S)
    return b"".join(r.chunk.data for r in replies if r.HasField("chunk"))


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_two_uploads_of_one_image_id(served, stubs: Stubs, attempt: int) -> None:
    _, studies = served
    image_id = f"race_{attempt:02d}"
    volumes = [nifti_bytes(SHAPE, seed=2 * attempt + k) for k in range(2)]
    streams = [list(stream(datastore_pb2.UploadImageRequest,
                           [upload_header(image_id, content_header(v)), *chunks_of(v, 2048)])) for v in volumes]
    results = _race(stubs.datastore.UploadImage, streams)
    winner = _one_winner(results)
    stored = stubs.datastore.GetImage(datastore_pb2.GetImageRequest(image_id=image_id), timeout=RPC_TIMEOUT_S).image
    assert stored.sha256 == results[winner][2].image.sha256
    assert _download(stubs, image_id) == volumes[winner], "the stored file is the winner's, whole"
    assert not agreement_problems(studies)


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_two_label_saves_on_one_image_and_tag(served, stubs: Stubs, attempt: int) -> None:
    _, studies = served
    image_id, tag = f"phantom_{attempt % 2:03d}", f"race{attempt}"
    _, _, affine = make_phantom(SHAPE, attempt % 2)
    labels = []
    for k in range(2):
        mask = np.random.default_rng(100 * attempt + k).integers(0, 3, SHAPE, dtype=np.uint8)
        labels.append(nib.Nifti1Image(mask, affine).to_bytes())
    streams = [list(stream(datastore_pb2.SaveLabelRequest,
                           [label_header(image_id, tag, content_header(v)), *chunks_of(v, 512)])) for v in labels]
    results = _race(stubs.datastore.SaveLabel, streams)
    winner = _one_winner(results)
    stored = stubs.datastore.GetLabel(datastore_pb2.GetLabelRequest(image_id=image_id, tag=tag),
                                      timeout=RPC_TIMEOUT_S).label
    assert stored.sha256 == results[winner][2].label.sha256
    assert _download(stubs, image_id, tag) == labels[winner], "the stored label is the winner's, whole"
    assert not agreement_problems(studies)


def _answers(name: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except grpc.RpcError as exc:
        raise AssertionError(f"{name} with {STALLED} stalled streams open ({RPC_THREADS} RPC threads): "
                             f"{exc.code().name}: {exc.details()}") from exc


def test_stalled_streams_do_not_starve_the_server(served, stubs: Stubs) -> None:
    volume = nifti_bytes(SHAPE, seed=7)
    release = threading.Event()
    sent = [threading.Event() for _ in range(STALLED)]

    def stalled(i: int, header_message: Any) -> Iterator[Any]:
        yield header_message
        sent[i].set()  # grpc asks for the next message once the header went out
        release.wait(STALL_TIMEOUT_S)  # a client that sent its header and then nothing

    headers = [
        lambda i: datastore_pb2.UploadImageRequest(header=upload_header(f"stall_{i}", content_header(volume))),
        lambda i: datastore_pb2.SaveLabelRequest(header=label_header("phantom_000", f"stall{i}",
                                                                     content_header(volume))),
        lambda i: infer_pb2.InferVolumeRequest(header=infer_pb2.InferVolumeHeader(model="segmentation",
                                                                                  content=content_header(volume))),
        lambda i: infer_pb2.CreateSessionRequest(header=infer_pb2.CreateSessionHeader(ttl=TTL_60,
                                                                                      content=content_header(volume))),
    ]
    calls = [stubs.datastore.UploadImage.future, stubs.datastore.SaveLabel.future,
             lambda it, timeout: stubs.infer.InferVolume(it, timeout=timeout),
             stubs.infer.CreateSession.future]
    pending: List[Any] = []
    try:
        for i in range(STALLED):
            kind = i % len(headers)
            pending.append(calls[kind](stalled(i, headers[kind](i)), timeout=STALL_TIMEOUT_S))
        # each stream either holds a slot with its header sent, or is refused at once over the server's
        # stream cap (RESOURCE_EXHAUSTED with a retry delay): never queued behind the others
        deadline = time.monotonic() + RPC_TIMEOUT_S
        pairs = list(zip(sent, pending, strict=True))
        while not all(e.is_set() or c.done() for e, c in pairs) and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = [c for e, c in pairs if c.done() and not e.is_set()]
        assert all(c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for c in refused), [c.code() for c in refused]
        held = [c for c in pending if not c.done()]
        assert held and all(e.is_set() for e, c in pairs if not c.done()), "stalled streams hold slots"
        for _ in range(3):
            health = _answers("health Check", lambda: stubs.health.Check(health_pb2.HealthCheckRequest(),
                                                                          timeout=ANSWER_WITHIN_S))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            info = _answers("GetAppInfo", lambda: stubs.app.GetAppInfo(app_pb2.GetAppInfoRequest(),
                                                                       timeout=ANSWER_WITHIN_S))
            assert info.models, "GetAppInfo answers in full"
            listing = _answers("ListImages", lambda: stubs.datastore.ListImages(
                datastore_pb2.ListImagesRequest(page_size=5), timeout=ANSWER_WITHIN_S))
            assert listing.images
    finally:
        release.set()
        for call in pending:
            call.cancel()
