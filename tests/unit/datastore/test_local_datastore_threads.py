"""Many threads at once: no lost update, counts consistent."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, List

from monailabel.datastore import LocalDatastore

from .conftest import make_nifti

THREADS = 6
PER_THREAD = 8


def run_all(targets: List[Callable[[], None]]) -> None:
    errors: List[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            try:
                fn()
            except BaseException as e:  # surfaced below
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_concurrent_adds_labels_and_info_updates(ds: LocalDatastore, src: Path, studies: Path) -> None:
    f = make_nifti(src / "a.nii.gz", 1.0)
    ds.add_image("shared", str(f), {})
    ds.save_label("shared", str(f), "final", {})

    def worker(n: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(PER_THREAD):
                image_id = f"t{n}_{i}"
                ds.add_image(image_id, str(f), {"n": n})
                if i % 2:
                    ds.save_label(image_id, str(f), "final", {})
                ds.update_image_info("shared", {f"{n}_{i}": i})
                ds.update_label_info("shared", "final", {f"{n}_{i}": i})
                ds.list_image_records("labeled", page_size=5)
                ds.status()

        return run

    def scanner() -> None:
        for _ in range(5):
            ds.refresh()

    run_all([worker(n) for n in range(THREADS)] + [scanner])

    total = THREADS * PER_THREAD + 1
    status = ds.status()
    assert status["total"] == total == len(ds.list_images())
    assert status["completed"] == THREADS * PER_THREAD // 2 + 1
    assert status["label_tags"] == {"final": status["completed"]}
    expected = {f"{n}_{i}": i for n in range(THREADS) for i in range(PER_THREAD)}
    assert expected.items() <= ds.get_image_info("shared").items()  # no update lost
    assert expected.items() <= ds.get_label_info("shared", "final").items()
    assert len(list(studies.glob("*.nii.gz"))) == total


def test_two_datastores_on_one_folder(studies: Path, src: Path) -> None:
    """Two instances (as two server processes would) share the folder and its index."""
    f = make_nifti(src / "a.nii.gz", 1.0)
    with LocalDatastore(str(studies)) as one, LocalDatastore(str(studies)) as two:

        def adder(store: LocalDatastore, prefix: str) -> Callable[[], None]:
            def run() -> None:
                for i in range(10):
                    store.add_image(f"{prefix}{i}", str(f), {})
                    store.refresh()

            return run

        run_all([adder(one, "one"), adder(two, "two")])
        assert one.list_images() == two.list_images()
        assert len(one.list_images()) == 20 and two.status()["total"] == 20
