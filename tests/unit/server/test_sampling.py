"""NextSampler: leases per client, hidden from strategies, released on asking again, on final labels, on expiry."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, List

import pytest

from monailabel.datasets import write_phantoms
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel_server.sampling import ALL_LEASED, DEFAULT_CLIENT_ID, FOUND, NONE_LEFT, LeaseStore, NextSampler


class Always(Strategy):
    """Ignores get_unlabeled_images: always the same image (a strategy written against the rules)."""

    def __init__(self) -> None:
        super().__init__("always phantom_001")

    def __call__(self, request, datastore):
        return "phantom_001"


class App(MONAILabelApp):
    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First(), "always": Always()}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def app(tmp_path: Path):
    write_phantoms(tmp_path / "studies", count=5, shape=(8, 8, 8), labeled=1)
    a = App(str(tmp_path), str(tmp_path / "studies"), {"auto_update_scoring": "false"})
    yield a
    a.datastore().close()  # type: ignore[attr-defined]


def _sampler(app: App, tmp_path: Path, ttl: float = 60.0, clock: Clock = None) -> NextSampler:  # type: ignore[assignment]
    return NextSampler(app, tmp_path / "leases.db", ttl, clock=clock or Clock())


def test_many_threads_get_different_images(app: App, tmp_path: Path) -> None:
    sampler = _sampler(app, tmp_path)
    got: List[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def ask(n: int) -> None:
        barrier.wait()
        sample = sampler.next("random", f"c{n}", {})
        with lock:
            got.append(sample.image_id if sample.status == FOUND else sample.status)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # four unlabeled images for six clients: four different images, two told everything is taken
    assert sorted(got) == [ALL_LEASED, ALL_LEASED, "phantom_001", "phantom_002", "phantom_003", "phantom_004"]
    sampler.close()


def test_lease_ends_on_asking_again_on_release_and_on_expiry(app: App, tmp_path: Path) -> None:
    clock = Clock()
    sampler = _sampler(app, tmp_path, ttl=60, clock=clock)
    a = sampler.next("first", "a", {})
    assert (a.status, a.image_id, a.client_id, a.lease_expire_time) == (FOUND, "phantom_001", "a", clock.now + 60)
    assert a.unlabeled_count == 4 and a.path.endswith("phantom_001.nii.gz")
    assert sampler.next("first", "b", {}).image_id == "phantom_002"
    assert sampler.next("first", "a", {}).image_id == "phantom_001"  # a's own lease ended as it asked
    sampler.release_image("phantom_001")
    assert sampler.next("first", "c", {}).image_id == "phantom_001"

    clock.now += 61  # every lease has expired
    assert sampler.next("first", "d", {}).image_id == "phantom_001"
    assert sampler.leases.holder("phantom_001", clock.now) == "d"
    sampler.close()


def test_statuses_default_client_and_bad_requests(app: App, tmp_path: Path) -> None:
    sampler = _sampler(app, tmp_path)
    assert sampler.next("first", "c0", {}).image_id == "phantom_001"
    with pytest.raises(MONAILabelException) as info:
        sampler.next("always", "x", {})  # phantom_001 is c0's: never handed to another client
    assert info.value.error == MONAILabelError.CONFLICT
    for n in range(1, 4):
        assert sampler.next("first", f"c{n}", {}).status == FOUND
    assert sampler.next("", "", {}).status == ALL_LEASED  # "random" by default
    assert sampler.next("always", "x", {}).status == ALL_LEASED
    assert sampler.next("first", "", {}).client_id == DEFAULT_CLIENT_ID
    with pytest.raises(MONAILabelException) as info:
        sampler.next("nope", "x", {})
    assert info.value.error == MONAILabelError.NOT_FOUND and "first, random" in info.value.msg.replace("always, ", "")
    with pytest.raises(MONAILabelException) as info:
        sampler.next("first", "\x00", {})
    assert info.value.error == MONAILabelError.INVALID_INPUT

    ds = app.datastore()
    for image_id in ds.get_unlabeled_images():
        ds.save_label(image_id, ds.get_label_uri("phantom_000", "final"), "final", {})
    assert sampler.next("first", "c0", {}).status == NONE_LEFT
    sampler.close()


def test_lease_store_survives_reopen(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path / "leases.db")
    store.acquire("img", "a", "random", 100.0)
    store.acquire("other", "a", "random", 10.0)
    store.close()
    store = LeaseStore(tmp_path / "leases.db")
    assert store.live(50.0) == {"img": "a"}  # the expired one is gone
    assert store.release_client("a") == ["img"] and store.live(50.0) == {}
    assert not store.release_image("img")
    store.close()
