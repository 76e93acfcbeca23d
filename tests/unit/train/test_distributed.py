"""Multi-process training: two CPU ranks on Gloo, DDP-synchronised, each on its share of the data.

Across machines: two "nodes" (processes here) meet through a c10d rendezvous, each started by torchrun's agent.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from typing import Any

import pytest
import torch

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

from .helpers import MemoryDatastore, SegTask, small_unet, write_phantoms

pytestmark = pytest.mark.slow  # trains in several processes


@pytest.mark.timeout(120)
def test_two_gloo_ranks_share_the_data_and_rank_zero_publishes(tmp_path):
    records = write_phantoms(str(tmp_path / "data"), 6)
    published = str(tmp_path / "published.pt")
    task = SegTask(str(tmp_path / "model"), network=small_unet(), publish_path=published)
    events = []
    request = {
        "max_epochs": 2,
        "val_split": 1 / 3,
        "dataset": "Dataset",
        "multi_gpu": True,
        "world_size": 2,
        "progress_callback": events.append,
    }
    stats = task(request, MemoryDatastore(records))

    # both ranks trained: each on half of the 4 training records, 2 iterations per epoch
    assert stats["world_size"] == 2
    assert stats["ranks"] == [
        {"rank": 0, "iterations": 4, "samples": 4, "train_records": 2},
        {"rank": 1, "iterations": 4, "samples": 4, "train_records": 2},
    ]
    assert stats["total_iterations"] == 2 and stats["epoch"] == 2

    # only rank 0 wrote, and what it wrote is what __call__ returned
    with open(tmp_path / "model" / "train_stats.json") as f:
        assert json.load(f) == stats == task.stats()
    assert [h["epoch"] for h in stats["history"]] == [1, 2]
    state = torch.load(published, map_location="cpu", weights_only=True)
    assert set(state) == set(small_unet().state_dict())  # DDP's "module." prefix is not in the checkpoint
    assert os.path.isfile(tmp_path / "model" / "train_01" / "checkpoint_final.pt")

    # rank 0's progress reached this process's callback
    assert [e["iteration"] for e in events if e["type"] == "iteration"] == [1, 2, 3, 4]
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2]


@pytest.mark.timeout(120)
def test_cancel_stops_every_rank(tmp_path):
    records = write_phantoms(str(tmp_path / "data"), 4)
    task = SegTask(str(tmp_path / "model"), network=small_unet())
    events = []
    request = {
        "max_epochs": 500,  # far more than it gets to run
        "val_split": 0.0,
        "dataset": "Dataset",
        "world_size": 2,
        "progress_callback": events.append,
        "cancel_check": lambda: len(events) >= 1,
    }
    with pytest.raises(MONAILabelException) as raised:
        task(request, MemoryDatastore(records))
    assert raised.value.error == MONAILabelError.CANCELLED
    assert task.stats()["cancelled"] is True
    assert task.stats()["epoch"] < 500
    assert {r["iterations"] for r in task.stats()["ranks"]} == {task.stats()["current_iteration"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node(folder: str, request: dict, host: bool, out: Any) -> None:
    """One "node": trains its part of a run across nodes and reports what it returned (or raised)."""
    records = write_phantoms(os.path.join(folder, "data"), 6)
    task = SegTask(os.path.join(folder, "model"), network=small_unet(),
                   publish_path=os.path.join(folder, "published.pt"))
    events: list = []
    try:
        stats = task(dict(request, rdzv_host=host, node_addr="127.0.0.1", progress_callback=events.append),
                     MemoryDatastore(records))
        out.put({"host": host, "stats": stats, "iterations": [e["iteration"] for e in events
                                                              if e["type"] == "iteration"]})
    except MONAILabelException as e:
        out.put({"host": host, "error": e.error.value, "msg": e.msg})


@pytest.mark.timeout(240)
def test_two_nodes_meet_through_c10d_both_train_and_rank_zero_alone_publishes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    shared = str(tmp_path / "shared")  # the app folder both nodes see (a shared volume on a cluster)
    request = {"max_epochs": 2, "val_split": 1 / 3, "dataset": "Dataset", "nodes": 2, "world_size": 1,
               "device": "cpu", "rdzv_endpoint": f"127.0.0.1:{_free_port()}", "rdzv_id": "job-1",
               "join_timeout": 60}
    procs = [ctx.Process(target=_node, args=(shared, request, host, out)) for host in (True, False)]
    for p in procs:
        p.start()
    results = [out.get(timeout=200) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all("error" not in r for r in results), results
    # rank 0 ran on one of the two nodes: that node returned the stats and forwarded the progress
    with_stats = [r for r in results if r["stats"]]
    assert len(with_stats) == 1 and with_stats[0]["iterations"] == [1, 2, 3, 4]
    stats = with_stats[0]["stats"]
    assert stats["world_size"] == 2
    assert stats["ranks"] == [
        {"rank": 0, "iterations": 4, "samples": 4, "train_records": 2},
        {"rank": 1, "iterations": 4, "samples": 4, "train_records": 2},
    ]
    with open(os.path.join(shared, "model", "train_stats.json")) as f:
        assert json.load(f) == stats
    assert set(torch.load(os.path.join(shared, "published.pt"), weights_only=True)) == set(small_unet().state_dict())


@pytest.mark.timeout(120)
def test_a_node_whose_peers_never_come_fails_with_the_rendezvous_named(tmp_path):
    records = write_phantoms(str(tmp_path / "data"), 4)
    task = SegTask(str(tmp_path / "model"), network=small_unet())
    endpoint = f"127.0.0.1:{_free_port()}"
    request = {"max_epochs": 1, "val_split": 0.0, "dataset": "Dataset", "nodes": 2, "world_size": 1, "device": "cpu",
               "rdzv_endpoint": endpoint, "rdzv_host": True, "node_addr": "127.0.0.1", "join_timeout": 3}
    with pytest.raises(MONAILabelException) as raised:
        task(request, MemoryDatastore(records))
    assert raised.value.error == MONAILabelError.UNAVAILABLE
    assert f"the 2 nodes did not meet at {endpoint}" in raised.value.msg
