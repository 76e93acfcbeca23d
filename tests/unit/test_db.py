"""The database layer on SQLite: migrations applied once and refused when newer, transactions, shared handles,
SQL adapted for PostgreSQL, and the replica records the job store keeps."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from monailabel.db import Migration, Row, migrate, open_database
from monailabel.db.engine import _pg_ddl, _pg_sql, describe
from monailabel_server.jobs.store import JobStore, Replica

MIGRATIONS = [
    Migration(1, "notes", ["CREATE TABLE notes (id TEXT PRIMARY KEY, n INTEGER NOT NULL)"]),
    Migration(2, "notes get a time", ["ALTER TABLE notes ADD COLUMN t REAL NOT NULL DEFAULT 0"]),
]


def test_migrations_apply_once_in_order_and_a_newer_database_is_refused(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        assert migrate(db, "notes", MIGRATIONS[:1]) == [1]
        assert migrate(db, "notes", MIGRATIONS) == [2]
        assert migrate(db, "notes", MIGRATIONS) == []
        db.execute("INSERT INTO notes (id, n, t) VALUES (?, ?, ?)", ("a", 1, 2.5))
        rows = db.execute("SELECT component, version FROM schema_migrations ORDER BY version").fetchall()
        assert [tuple(r) for r in rows] == [("notes", 1), ("notes", 2)]
        with pytest.raises(RuntimeError, match="newer than this server knows"):
            migrate(db, "notes", MIGRATIONS[:1])
    finally:
        db.close()


def test_a_failed_write_leaves_nothing_and_writers_do_not_lose_updates(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        migrate(db, "notes", MIGRATIONS)
        with pytest.raises(ValueError), db.write() as c:
            c.execute("INSERT INTO notes (id, n) VALUES ('x', 0)")
            raise ValueError("half-way")
        assert db.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0
        db.execute("INSERT INTO notes (id, n) VALUES ('counter', 0)")

        def bump() -> None:
            for _ in range(20):
                with db.write(lock="notes") as c:  # read-modify-write
                    (n,) = c.execute("SELECT n FROM notes WHERE id = 'counter'").fetchone()
                    c.execute("UPDATE notes SET n = ? WHERE id = 'counter'", (n + 1,))

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert db.execute("SELECT n FROM notes WHERE id = 'counter'").fetchone()[0] == 80
    finally:
        db.close()


def test_handles_of_one_url_share_one_database_until_the_last_closes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first, second = open_database(url), open_database(url)
    migrate(first, "notes", MIGRATIONS)
    first.close()
    first.close()  # a second close of one handle does not drop the other's reference
    assert second.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0
    second.close()
    with pytest.raises(ValueError, match="unsupported database URL"):
        open_database("mysql://someone:secret@db/x")


def test_sql_is_adapted_for_postgresql_and_rows_read_by_name() -> None:
    assert _pg_sql("SELECT * FROM t WHERE a = ? AND b LIKE 'x%'") == "SELECT * FROM t WHERE a = %s AND b LIKE 'x%%'"
    ddl = _pg_ddl("CREATE TABLE t (id TEXT PRIMARY KEY, size INTEGER, ts REAL) WITHOUT ROWID")
    assert ddl == "CREATE TABLE t (id TEXT PRIMARY KEY, size BIGINT, ts DOUBLE PRECISION)"
    row = Row(("a", 3), {"id": 0, "n": 1})
    assert row["n"] == 3 and row[0] == "a" and row.keys() == ["id", "n"]
    assert describe("postgresql://ml:secret@db:5432/x") == "postgresql://ml:***@db:5432/x"


def test_replicas_are_alive_while_they_beat_and_their_process_runs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    try:
        store.register_replica("me")
        (me,) = store.replicas()
        assert me.pid == os.getpid() and JobStore.replica_alive(me, timeout_s=5)
        assert not JobStore.replica_alive(me, timeout_s=5, now=time.time() + 10)  # no heartbeat for too long
        gone = Replica("gone", me.host, me.pid, me.pid_start + 1, time.time())  # this host, but not that process
        assert not JobStore.replica_alive(gone, timeout_s=5)
        elsewhere = Replica("far", "another-host", 1, 1, time.time())
        assert JobStore.replica_alive(elsewhere, timeout_s=5) and not JobStore.replica_alive(None, timeout_s=5)
        store.unregister_replica("me")
        store.heartbeat("me")  # declared dead meanwhile: the heartbeat registers it again
        assert [r.replica_id for r in store.replicas()] == ["me"]
    finally:
        store.close()
