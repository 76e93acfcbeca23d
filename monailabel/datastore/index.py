"""The SQLite index of the local datastore: images, labels and a few settings, in WAL mode.

Each thread gets its own connection (SQLite connections must not be shared across threads while in
use); WAL lets readers run while one writer commits. Writes go through :meth:`DatastoreIndex.write`,
a ``BEGIN IMMEDIATE`` transaction, so that a read-modify-write (an info merge) never loses an update,
not even against another process.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from monailabel.db import Migration, database_url, migrate, open_database

__all__ = ["DatastoreIndex", "FILTERS"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    ext TEXT NOT NULL,
    is_dir INTEGER NOT NULL DEFAULT 0,
    info TEXT NOT NULL DEFAULT '{}',
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    added_ts REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS labels (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    ext TEXT NOT NULL,
    is_dir INTEGER NOT NULL DEFAULT 0,
    info TEXT NOT NULL DEFAULT '{}',
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    added_ts REAL NOT NULL,
    PRIMARY KEY (image_id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS labels_by_tag ON labels (tag, image_id);
"""

_MIGRATIONS = [
    Migration(1, "images, labels and settings", [s for s in _SCHEMA.split(";") if s.strip()]),
]

FILTERS = ("all", "labeled", "unlabeled")
"""Image filters of :meth:`DatastoreIndex.page_images`."""

_FILTER_SQL = {
    "all": ("", False),
    "labeled": ("EXISTS (SELECT 1 FROM labels l WHERE l.image_id = images.id AND l.tag = ?)", True),
    "unlabeled": ("NOT EXISTS (SELECT 1 FROM labels l WHERE l.image_id = images.id AND l.tag = ?)", True),
}


def dumps(info: Dict[str, Any]) -> str:
    """Serialises an info dict; values JSON cannot hold are stored as strings (as MONAI Label does).

    Args:
        info: the dict.
    """
    return json.dumps(info, default=str, sort_keys=True)


class DatastoreIndex:
    """The index, in the database ``MONAI_LABEL_DATABASE_URL`` names, or in the SQLite file ``db_path``.

    Args:
        db_path: the embedded database file (created with its folder when missing).
        timeout_s: how long to wait for another writer (process) before failing.
        url: the database; empty for ``MONAI_LABEL_DATABASE_URL`` or else ``db_path``.
    """

    def __init__(self, db_path: Path, timeout_s: float = 30.0, url: str = "") -> None:
        self.db_path = db_path
        self._timeout_s = timeout_s
        self.url = url or database_url(db_path)
        self.db = open_database(self.url)
        migrate(self.db, "datastore", _MIGRATIONS)

    def conn(self) -> Any:
        """Returns what runs this thread's statements: its open transaction, else autocommit."""
        return self.db

    def close(self) -> None:
        """Closes the index (its reference to the database); it cannot be used afterwards."""
        self.db.close()

    @contextmanager
    def write(self) -> Iterator[Any]:
        """A write transaction, serialised with every other writer of the index (any replica's)."""
        with self.db.write(lock="datastore") as c:
            yield c

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A read transaction: every query inside sees one snapshot."""
        with self.db.read() as c:
            yield c

    # settings ---------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str = "") -> str:
        """Returns a setting.

        Args:
            key: its name.
            default: returned when it was never set.
        """
        row = self.conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row["value"]) if row else default

    @staticmethod
    def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        """Sets a setting inside a write transaction.

        Args:
            conn: the transaction's connection.
            key: its name.
            value: its value.
        """
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # images -----------------------------------------------------------------------------------

    def image_row(self, image_id: str, conn: Optional[sqlite3.Connection] = None) -> Optional[sqlite3.Row]:
        """Returns an image's row, or None.

        Args:
            image_id: the image id.
            conn: a transaction's connection, or None for this thread's.
        """
        c = conn or self.conn()
        row: Optional[sqlite3.Row] = c.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        return row

    def image_ids(self, tag: Optional[str] = None, labeled: Optional[bool] = None) -> List[str]:
        """Returns image ids in id order, all of them or those with (or without) a label of a tag.

        Args:
            tag: the tag ``labeled`` refers to.
            labeled: True for labeled, False for unlabeled, None for all.
        """
        name = "all" if labeled is None else ("labeled" if labeled else "unlabeled")
        where, takes_tag = _FILTER_SQL[name]
        sql = "SELECT id FROM images" + (f" WHERE {where}" if where else "") + " ORDER BY id"
        return [r["id"] for r in self.conn().execute(sql, (tag,) if takes_tag else ())]

    def page_images(self, filter: str, tag: str, after_id: str, limit: int) -> Tuple[List[sqlite3.Row], int]:
        """Returns one page of image rows in id order after ``after_id`` (keyset paging), and the total.

        Args:
            filter: one of :data:`FILTERS`.
            tag: the tag ``labeled`` and ``unlabeled`` refer to.
            after_id: the last id of the previous page, ``""`` for the first page.
            limit: the page size.

        Returns:
            ``(rows, total)``, where ``total`` counts every image that passes the filter.
        """
        where, takes_tag = _FILTER_SQL[filter]
        args: Tuple[Any, ...] = (tag,) if takes_tag else ()
        with self.read() as c:
            total = c.execute("SELECT COUNT(*) FROM images" + (f" WHERE {where}" if where else ""), args).fetchone()[0]
            cond = f"{where} AND id > ?" if where else "id > ?"
            rows = c.execute(f"SELECT * FROM images WHERE {cond} ORDER BY id LIMIT ?", (*args, after_id, limit))
            return rows.fetchall(), int(total)

    def all_images(self, conn: Optional[sqlite3.Connection] = None) -> List[sqlite3.Row]:
        """Returns every image row in id order.

        Args:
            conn: a transaction's connection, or None for this thread's.
        """
        return (conn or self.conn()).execute("SELECT * FROM images ORDER BY id").fetchall()

    @staticmethod
    def upsert_image(
        conn: sqlite3.Connection,
        image_id: str,
        ext: str,
        is_dir: bool,
        info: Dict[str, Any],
        size: int,
        mtime_ns: int,
        sha256: Optional[str],
        added_ts: float,
    ) -> None:
        """Inserts or replaces an image's row (its labels stay) inside a write transaction.

        Args:
            conn: the transaction's connection.
            image_id: the image id.
            ext: the file extension.
            is_dir: whether it is a series folder.
            info: its info dict.
            size: size in bytes.
            mtime_ns: modification time of the file.
            sha256: its digest, or None when not computed yet.
            added_ts: when it was added.
        """
        conn.execute(
            "INSERT INTO images (id, ext, is_dir, info, size, mtime_ns, sha256, added_ts) VALUES (?,?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET ext=excluded.ext, is_dir=excluded.is_dir, info=excluded.info, "
            "size=excluded.size, mtime_ns=excluded.mtime_ns, sha256=excluded.sha256, added_ts=excluded.added_ts",
            (image_id, ext, int(is_dir), dumps(info), size, mtime_ns, sha256, added_ts),
        )

    # labels -----------------------------------------------------------------------------------

    def label_row(self, image_id: str, tag: str, conn: Optional[sqlite3.Connection] = None) -> Optional[sqlite3.Row]:
        """Returns a label's row, or None.

        Args:
            image_id: the image id.
            tag: the tag.
            conn: a transaction's connection, or None for this thread's.
        """
        c = conn or self.conn()
        row: Optional[sqlite3.Row] = c.execute(
            "SELECT * FROM labels WHERE image_id = ? AND tag = ?", (image_id, tag)
        ).fetchone()
        return row

    def label_rows(self, image_ids: Sequence[str]) -> Dict[str, List[sqlite3.Row]]:
        """Returns the label rows of several images, by image id, each list in tag order.

        Args:
            image_ids: the image ids.
        """
        out: Dict[str, List[sqlite3.Row]] = {i: [] for i in image_ids}
        ids = list(image_ids)
        for start in range(0, len(ids), 500):  # stay below SQLite's bound-parameter limit
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            sql = f"SELECT * FROM labels WHERE image_id IN ({marks}) ORDER BY image_id, tag"
            for row in self.conn().execute(sql, part):
                out[row["image_id"]].append(row)
        return out

    def all_labels(self, conn: Optional[sqlite3.Connection] = None, tag: Optional[str] = None) -> List[sqlite3.Row]:
        """Returns every label row (of one tag, when given), in image id then tag order.

        Args:
            conn: a transaction's connection, or None for this thread's.
            tag: only this tag.
        """
        c = conn or self.conn()
        if tag is None:
            return c.execute("SELECT * FROM labels ORDER BY image_id, tag").fetchall()
        return c.execute("SELECT * FROM labels WHERE tag = ? ORDER BY image_id", (tag,)).fetchall()

    @staticmethod
    def upsert_label(
        conn: sqlite3.Connection,
        image_id: str,
        tag: str,
        ext: str,
        is_dir: bool,
        info: Dict[str, Any],
        size: int,
        mtime_ns: int,
        sha256: Optional[str],
        added_ts: float,
    ) -> None:
        """Inserts or replaces a label's row inside a write transaction.

        Args:
            conn: the transaction's connection.
            image_id: the image id.
            tag: the tag.
            ext: the file extension.
            is_dir: whether it is a folder.
            info: its info dict.
            size: size in bytes.
            mtime_ns: modification time of the file.
            sha256: its digest, or None when not computed yet.
            added_ts: when it was added.
        """
        conn.execute(
            "INSERT INTO labels (image_id, tag, ext, is_dir, info, size, mtime_ns, sha256, added_ts) "
            "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(image_id, tag) DO UPDATE SET ext=excluded.ext, "
            "is_dir=excluded.is_dir, info=excluded.info, size=excluded.size, mtime_ns=excluded.mtime_ns, "
            "sha256=excluded.sha256, added_ts=excluded.added_ts",
            (image_id, tag, ext, int(is_dir), dumps(info), size, mtime_ns, sha256, added_ts),
        )

    def tag_counts(self) -> Dict[str, int]:
        """Returns how many labels each tag has."""
        rows = self.conn().execute("SELECT tag, COUNT(*) AS n FROM labels GROUP BY tag ORDER BY tag")
        return {r["tag"]: int(r["n"]) for r in rows}

    def count_images(self, conn: Optional[sqlite3.Connection] = None) -> int:
        """Returns the number of images.

        Args:
            conn: a transaction's connection, or None for this thread's.
        """
        return int((conn or self.conn()).execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def store_sha256(self, table: str, key: Tuple[str, ...], sha256: str, size: int, mtime_ns: int) -> None:
        """Stores a lazily computed digest, unless the file changed (or was hashed) meanwhile.

        Args:
            table: ``images`` or ``labels``.
            key: ``(image_id,)`` or ``(image_id, tag)``.
            sha256: the digest.
            size: the size the digest was computed for.
            mtime_ns: the modification time the digest was computed for.
        """
        where = "id = ?" if table == "images" else "image_id = ? AND tag = ?"
        with self.write() as c:
            c.execute(
                f"UPDATE {table} SET sha256 = ? WHERE {where} AND size = ? AND mtime_ns = ? AND sha256 IS NULL",
                (sha256, *key, size, mtime_ns),
            )
