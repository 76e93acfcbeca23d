"""One database API over embedded SQLite (the default) and PostgreSQL (shared by several server replicas).

Callers write SQL once, with ``?`` placeholders and portable types; :class:`Database` runs it on either
engine. Writes go through :meth:`Database.write`, a transaction that is serialised with every other
writer holding the same lock name: on SQLite ``BEGIN IMMEDIATE`` (one writer per file, across
processes), on PostgreSQL a transaction-scoped advisory lock (``pg_advisory_xact_lock``), so a
read-modify-write (an info merge, a lease pick, "one job per model") never interleaves with another
replica's. Reads outside a transaction run in autocommit; :meth:`Database.read` gives one snapshot.

SQLite connections are per thread (they must not be shared while in use); PostgreSQL connections come
from a ``psycopg_pool`` pool. A process opens each URL once (:func:`open_database` counts references), so
the components of a server (and several in-process servers) share one pool.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
import weakref
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = ["DATABASE_URL_ENV", "Database", "DatabaseUnavailable", "Row", "database_url", "open_database"]

logger = logging.getLogger(__name__)

#: the environment variable that names the shared database (``--database`` sets it)
DATABASE_URL_ENV = "MONAI_LABEL_DATABASE_URL"
SQLITE, POSTGRESQL = "sqlite", "postgresql"


def database_url(default_path: Path) -> str:
    """Returns the database to use: ``MONAI_LABEL_DATABASE_URL`` when set, else SQLite at ``default_path``.

    Args:
        default_path: the embedded database file of the component asking.
    """
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    return url or f"sqlite:///{Path(default_path)}"


def describe(url: str) -> str:
    """Returns the URL without its password, for logs and messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (or refuses the credentials)."""


class Row(tuple):
    """A PostgreSQL row that reads like ``sqlite3.Row``: by position and by column name."""

    _names: Dict[str, int]

    def __new__(cls, values: Sequence[Any], names: Dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> List[str]:
        """The column names, in order."""
        return list(self._names)


def _row_factory(cursor: Any) -> Any:
    names = {c.name: i for i, c in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    # psycopg takes %s placeholders, so a literal % must be doubled
    return sql.replace("%", "%%").replace("?", "%s")


@lru_cache(maxsize=256)
def _pg_ddl(sql: str) -> str:
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)  # PostgreSQL's REAL is 4 bytes: too coarse for times
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)  # sizes and nanosecond times need 8 bytes
    return re.sub(r"\)\s*WITHOUT ROWID", ")", sql)


def lock_key(name: str) -> int:
    """The advisory lock number of a lock name (stable across processes and machines)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class _Result:
    """The buffered result of an autocommit statement."""

    def __init__(self, rows: List[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> List[Any]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class Conn:
    """A connection inside a transaction (or SQLite's thread connection): ``execute`` takes ``?`` SQL."""

    def __init__(self, raw: Any, dialect: str) -> None:
        self.raw = raw
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Runs one statement; returns its cursor (``fetchone``, ``fetchall``, iteration, ``rowcount``)."""
        if self.dialect == SQLITE:
            return self.raw.execute(sql, tuple(params))
        return self.raw.execute(_pg_sql(sql), tuple(params))

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open."""
        if self.dialect == SQLITE:
            return bool(self.raw.in_transaction)
        return True


class _Holder:
    """One thread's SQLite connection, closed when the thread's locals go away."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    def __del__(self) -> None:
        self.close()


class Database:
    """A database by URL: ``sqlite:///path/file.db`` or ``postgresql://user@host:port/name``.

    Args:
        url: where it is.
        timeout_s: how long a writer waits for another (SQLite's busy timeout; PostgreSQL's lock timeout
            does not apply: advisory locks are waited for).
        pool_size: most PostgreSQL connections this process holds.
    """

    def __init__(self, url: str, timeout_s: float = 30.0, pool_size: int = 16) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._closed = False
        if url.startswith("sqlite:///"):
            self.dialect = SQLITE
            self.path: Optional[Path] = Path(url[len("sqlite:///") :])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._holders: weakref.WeakSet[_Holder] = weakref.WeakSet()
            self._thread_conn().execute("PRAGMA journal_mode=WAL")
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = POSTGRESQL
            self.path = None
            import psycopg
            from psycopg_pool import ConnectionPool

            try:  # one direct connection first: a wrong address or password fails now, and says why
                psycopg.connect(url, connect_timeout=int(timeout_s)).close()
            except psycopg.Error as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise DatabaseUnavailable(f"cannot reach the database {describe(url)}: {reason}") from None
            self._pool = ConnectionPool(
                url, min_size=1, max_size=pool_size, open=True, name="monailabel",
                kwargs={"autocommit": True, "row_factory": _row_factory},
            )
            self._pool.wait(timeout=timeout_s)
        else:
            raise ValueError(f"unsupported database URL {describe(url)!r}: use sqlite:///FILE or postgresql://...")

    @property
    def shared(self) -> bool:
        """Whether several servers may share it (PostgreSQL)."""
        return self.dialect == POSTGRESQL

    def ddl(self, sql: str) -> str:
        """Adapts a ``CREATE``/``ALTER`` statement written for SQLite to this engine."""
        return _pg_ddl(sql) if self.dialect == POSTGRESQL else sql

    # -- connections ------------------------------------------------------------------------------
    def _thread_conn(self) -> sqlite3.Connection:
        holder: Optional[_Holder] = getattr(self._local, "holder", None)
        if holder is None:
            if self._closed:
                raise sqlite3.ProgrammingError("the database is closed")
            # check_same_thread=False only so that close() may close it from another thread
            conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=FULL")
            holder = _Holder(conn)
            self._local.holder = holder
            self._holders.add(holder)
        return holder.conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Runs one statement in the current transaction of this thread, or else in autocommit.

        Returns:
            a cursor-like result: ``fetchone``, ``fetchall``, iteration, ``rowcount``.
        """
        current: Optional[Conn] = getattr(self._local, "tx", None)
        if current is not None:
            return current.execute(sql, params)
        if self.dialect == SQLITE:
            return self._thread_conn().execute(sql, tuple(params))
        with self._pool.connection() as raw:
            cur = raw.execute(_pg_sql(sql), tuple(params))
            rows = cur.fetchall() if cur.description else []
            return _Result(rows, cur.rowcount)

    @contextmanager
    def write(self, lock: str = "") -> Iterator[Conn]:
        """A write transaction, committed on success and rolled back on any error.

        A nested call joins the thread's open transaction.

        Args:
            lock: the name of the writers it excludes (PostgreSQL: an advisory lock; "" takes none and
                relies on row locks). SQLite always excludes every other writer of the file.
        """
        current: Optional[Conn] = getattr(self._local, "tx", None)
        if current is not None:
            if lock and self.dialect == POSTGRESQL:
                current.raw.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(lock),))
            yield current
            return
        if self.dialect == SQLITE:
            conn = Conn(self._thread_conn(), SQLITE)
            conn.raw.execute("BEGIN IMMEDIATE")
            self._local.tx = conn
            try:
                yield conn
                conn.raw.execute("COMMIT")
            except BaseException:
                if conn.raw.in_transaction:
                    conn.raw.execute("ROLLBACK")
                raise
            finally:
                self._local.tx = None
            return
        with self._pool.connection() as raw, raw.transaction():
            if lock:
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(lock),))
            conn = Conn(raw, POSTGRESQL)
            self._local.tx = conn
            try:
                yield conn
            finally:
                self._local.tx = None

    @contextmanager
    def read(self) -> Iterator[Conn]:
        """A read transaction: every query inside sees one snapshot (or joins the open transaction)."""
        current: Optional[Conn] = getattr(self._local, "tx", None)
        if current is not None:
            yield current
            return
        if self.dialect == SQLITE:
            conn = Conn(self._thread_conn(), SQLITE)
            conn.raw.execute("BEGIN")
            self._local.tx = conn
            try:
                yield conn
            finally:
                self._local.tx = None
                if conn.raw.in_transaction:
                    conn.raw.execute("COMMIT")
            return
        with self._pool.connection() as raw:
            raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn = Conn(raw, POSTGRESQL)
            self._local.tx = conn
            try:
                yield conn
            finally:
                self._local.tx = None
                raw.execute("COMMIT")

    # -- notifications (PostgreSQL's LISTEN/NOTIFY) ----------------------------------------------------
    def notify(self, conn: Conn, channel: str, payload: str = "") -> None:
        """Tells every listener of ``channel`` (in any process) when ``conn``'s transaction commits.

        A no-op on SQLite, whose single process wakes its own waiters.
        """
        if self.dialect == POSTGRESQL:
            conn.execute("SELECT pg_notify(?, ?)", (channel, payload))

    def listen(self, channel: str, callback: Callable[[str], None]) -> Optional[Callable[[], None]]:
        """Calls ``callback(payload)`` on a thread for each notification on ``channel``; PostgreSQL only.

        The listener holds its own connection (outside the pool) and reconnects after a failure; on
        each (re)connection it calls ``callback("")``, since notifications sent while it was away are
        lost and the caller should look again.

        Returns:
            a function that stops the listener, or None on SQLite (nothing to listen to).
        """
        if self.dialect != POSTGRESQL:
            return None
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", channel):
            raise ValueError(f"not a channel name: {channel!r}")
        stop = threading.Event()

        def run() -> None:
            import psycopg

            while not stop.is_set():
                try:
                    with psycopg.connect(self.url, autocommit=True, connect_timeout=int(self.timeout_s)) as conn:
                        conn.execute(f"LISTEN {channel}")
                        callback("")
                        while not stop.is_set():
                            for note in conn.notifies(timeout=0.5):
                                callback(note.payload)
                except Exception as e:  # noqa: BLE001 - the database restarted or the network broke: retry
                    if not stop.is_set():
                        logger.warning("listening on %s failed (%s); retrying", channel, type(e).__name__)
                        stop.wait(1.0)

        threading.Thread(target=run, name=f"db-listen-{channel}", daemon=True).start()
        return stop.set

    def close(self) -> None:
        """Closes every connection; the database cannot be used afterwards."""
        self._closed = True
        if self.dialect == SQLITE:
            for holder in list(self._holders):
                holder.close()
            self._local = threading.local()
        else:
            self._pool.close()


_open: Dict[str, Tuple[Database, int]] = {}
_open_lock = threading.Lock()


class SharedDatabase:
    """A reference to a process-wide :class:`Database`; :meth:`close` drops the reference."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(_open[self.url][0], name)

    def close(self) -> None:
        """Drops this reference; the last one closes the database."""
        with _open_lock:
            if self._closed:
                return
            self._closed = True
            db, refs = _open[self.url]
            if refs <= 1:
                del _open[self.url]
                db.close()
            else:
                _open[self.url] = (db, refs - 1)


def open_database(url: str) -> Database:
    """Opens a database, sharing one :class:`Database` (one pool) per URL in this process.

    Args:
        url: ``sqlite:///FILE`` or ``postgresql://...``.

    Returns:
        a handle; its ``close()`` releases this reference only.
    """
    with _open_lock:
        db, refs = _open.get(url, (None, 0))
        if db is None:
            db = Database(url)
        _open[url] = (db, refs + 1)
    return SharedDatabase(url)  # type: ignore[return-value]
