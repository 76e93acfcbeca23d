"""The job store: per-job sequence numbers, paging, persistence across reopen, unfinished jobs on restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel_server.jobs.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore


@pytest.fixture()
def store(tmp_path: Path):
    s = JobStore(tmp_path / ".monailabel" / "jobs.db")
    yield s
    s.close()


def test_create_get_and_events_numbered_per_job(store: JobStore) -> None:
    a = store.create("seg", {"max_epochs": 3}, QUEUED, max_epochs=3)
    b = store.create("seg", {}, QUEUED)
    assert (a.state, a.params, a.max_epochs, a.last_sequence) == (QUEUED, {"max_epochs": 3}, 3, 1)
    store.set_state(a.job_id, RUNNING, "started")
    assert store.append(a.job_id, [{"type": "log", "text": "x"}, {"type": "iteration", "loss": 0.5}]) == 4
    store.set_state(a.job_id, SUCCEEDED, "done", last_log_lines=["x"], best_metric=0.9)

    events = store.events(a.job_id)
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    assert [e.payload["type"] for e in events] == ["state", "state", "log", "iteration", "state"]
    assert [e.sequence for e in store.events(a.job_id, after=3)] == [4, 5]
    assert [e.sequence for e in store.events(b.job_id)] == [1]

    job = store.get(a.job_id)
    assert job.terminal and job.start_time and job.end_time and job.end_time >= job.start_time
    assert (job.last_log_lines, job.best_metric) == (["x"], 0.9)


def test_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(MONAILabelException) as info:
        store.get("nope")
    assert info.value.error == MONAILabelError.NOT_FOUND


def test_list_is_newest_first_paged_and_filtered(store: JobStore) -> None:
    ids = [store.create("a" if i % 2 else "b", {}, QUEUED).job_id for i in range(5)]
    assert [j.job_id for j in store.list(0, 10)] == ids[::-1]
    assert [j.job_id for j in store.list(1, 2)] == ids[::-1][1:3]
    assert [j.job_id for j in store.list(0, 10, model="a")] == [ids[3], ids[1]]
    assert [j.job_id for j in store.active("b")] == [ids[0], ids[2], ids[4]]


def test_list_filters_by_kind_and_state_across_kinds(store: JobStore) -> None:
    train = store.create("seg", {}, QUEUED)
    scoring = store.create("seg", {}, QUEUED, kind="scoring")
    store.set_state(train.job_id, RUNNING, "started", pid=4242, pid_start=17)
    assert [j.job_id for j in store.list()] == [scoring.job_id, train.job_id]  # every kind by default
    assert [j.job_id for j in store.list(kind="scoring")] == [scoring.job_id]
    assert [j.job_id for j in store.list(state=RUNNING)] == [train.job_id]
    assert store.list(kind="scoring", state=RUNNING) == []
    assert (store.get(train.job_id).pid, store.get(train.job_id).pid_start) == (4242, 17)


def test_history_survives_reopen_and_unfinished_jobs_fail(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = JobStore(path)
    done = first.create("seg", {}, QUEUED)
    first.set_state(done.job_id, CANCELLED, "cancelled by client")
    running = first.create("seg", {}, QUEUED)
    first.set_state(running.job_id, RUNNING)
    queued = first.create("seg", {}, QUEUED)
    first.close()

    second = JobStore(path)
    assert sorted(j.job_id for j in second.fail_unfinished("server restarted")) == sorted(
        [running.job_id, queued.job_id])
    assert second.get(done.job_id).state == CANCELLED
    failed = second.get(running.job_id)
    assert failed.state == FAILED and failed.error == "server restarted"
    assert second.events(running.job_id)[-1].payload == {"type": "state", "state": FAILED,
                                                         "message": "server restarted"}
    assert second.next_version("seg") == 1
    second.update(done.job_id, published_version=3)
    assert second.next_version("seg") == 4
    second.close()


def test_wait_wakes_on_append(store: JobStore) -> None:
    job = store.create("seg", {}, QUEUED)
    timer = threading.Timer(0.1, lambda: store.append(job.job_id, [{"type": "log", "text": "hi"}]))
    timer.start()
    t0 = time.monotonic()
    store.wait(5.0)
    timer.join()
    assert time.monotonic() - t0 < 4.0
    assert store.events(job.job_id, after=1)[0].payload["text"] == "hi"


def test_kinds_are_apart_and_old_databases_gain_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(str(path))  # the first release's schema: no kind, result or trigger
    old.executescript(
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL,"
        " create_time REAL NOT NULL, start_time REAL, end_time REAL, error TEXT NOT NULL DEFAULT '',"
        " last_log_lines TEXT NOT NULL DEFAULT '[]', best_metric REAL, best_metric_epoch INTEGER NOT NULL DEFAULT 0,"
        " epoch INTEGER NOT NULL DEFAULT 0, max_epochs INTEGER NOT NULL DEFAULT 0,"
        " published_version INTEGER NOT NULL DEFAULT 0, published_path TEXT NOT NULL DEFAULT '',"
        " last_sequence INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO jobs (job_id, model, state, params, create_time) VALUES ('old', 'seg', 'SUCCEEDED', '{}', 1.0);"
    )
    old.commit()
    old.close()

    store = JobStore(path)
    assert store.get("old").kind == "train" and store.get("old").result == {}
    scoring = store.create("seg", {"x": 1}, QUEUED, kind="scoring", trigger="auto: test")
    assert (scoring.kind, scoring.trigger) == ("scoring", "auto: test")
    store.set_state(scoring.job_id, SUCCEEDED, "done", result={"a": {"score": 0.5}})
    assert store.get(scoring.job_id, "scoring").result == {"a": {"score": 0.5}}
    with pytest.raises(MONAILabelException, match="no train job"):
        store.get(scoring.job_id, "train")
    assert [j.job_id for j in store.list(kind="train")] == ["old"]
    assert [j.job_id for j in store.list(kind="scoring")] == [scoring.job_id]
    assert store.active("seg", "train") == [] and store.active("seg", "scoring") == []
    assert store.next_version("seg") == 1
    store.close()
