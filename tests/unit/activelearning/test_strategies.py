"""The ready-made strategies on a real LocalDatastore: Random, First, Epistemic."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest

from monailabel.datasets import write_phantoms
from monailabel.datastore.local import LocalDatastore
from monailabel.tasks.activelearning.epistemic import Epistemic
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random


@pytest.fixture()
def datastore(tmp_path: Path):
    write_phantoms(tmp_path, count=5, shape=(8, 8, 8), labeled=1)  # phantom_000 labeled
    ds = LocalDatastore(tmp_path)
    yield ds
    ds.close()


def test_first_is_the_smallest_unlabeled_id_and_none_when_all_labeled(datastore: LocalDatastore, tmp_path: Path):
    assert First()({"strategy": "first"}, datastore) == {"id": "phantom_001"}
    for i in range(1, 5):
        datastore.save_label(f"phantom_{i:03d}", str(tmp_path / "labels" / "final" / "phantom_000.nii.gz"), "final", {})
    assert First()({"strategy": "first"}, datastore) is None
    assert Random()({"strategy": "random"}, datastore) is None
    assert Epistemic()({"strategy": "epistemic"}, datastore) is None


def test_random_favours_images_not_served_for_a_while(datastore: LocalDatastore) -> None:
    now = int(time.time())
    # phantom_001 was served just now, the others long ago (or never)
    datastore.update_image_info("phantom_001", {"strategy": {"random": {"ts": now}}})
    datastore.update_image_info("phantom_002", {"strategy": {"random": {"ts": now - 3600}}})
    random.seed(0)
    picks = Counter(Random()({"strategy": "random"}, datastore) for _ in range(300))
    assert "phantom_000" not in picks  # labeled
    assert picks["phantom_001"] == 0  # weight 1 against ~1.7e9: practically never
    assert picks["phantom_003"] > picks["phantom_002"] and picks["phantom_004"] > picks["phantom_002"]
    # the timestamps are per strategy name: under another name all are fresh again
    assert Random()({"strategy": "other"}, datastore) in {"phantom_001", "phantom_002", "phantom_003", "phantom_004"}


def test_epistemic_prefers_high_scores_among_the_least_recently_served(datastore: LocalDatastore) -> None:
    scores = {"phantom_001": 0.2, "phantom_002": 0.9, "phantom_003": 0.5, "phantom_004": 0.7}
    for image_id, score in scores.items():
        datastore.update_image_info(image_id, {"epistemic_entropy": score})
    strategy = Epistemic()
    assert strategy({"strategy": "epistemic"}, datastore) == {"id": "phantom_002", "epistemic_entropy": 0.9}

    # once served, the best image waits for the others (until `reset` seconds pass)
    now = int(time.time())
    datastore.update_image_info("phantom_002", {"strategy": {"epistemic": {"ts": now}}})
    assert strategy({"strategy": "epistemic"}, datastore)["id"] == "phantom_004"
    datastore.update_image_info("phantom_002", {"strategy": {"epistemic": {"ts": now - 2 * Epistemic.SECS_IN_DAY}}})
    assert strategy({"strategy": "epistemic"}, datastore)["id"] == "phantom_002"

    # k limits the candidates to the top-k scores; another key reads another score
    datastore.update_image_info("phantom_002", {"strategy": {"epistemic": {"ts": now}}})
    datastore.update_image_info("phantom_004", {"strategy": {"epistemic": {"ts": now}}})
    assert Epistemic(k=2)({"strategy": "epistemic"}, datastore)["id"] in {"phantom_002", "phantom_004"}
    assert Epistemic(k=3)({"strategy": "epistemic"}, datastore)["id"] == "phantom_003"
    datastore.update_image_info("phantom_001", {"my_key": 5})
    assert Epistemic(key="my_key")({"strategy": "e2"}, datastore) == {"id": "phantom_001", "my_key": 5.0}
