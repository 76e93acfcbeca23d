"""Versioned schema migrations in a small table, ``schema_migrations (component, version, ...)``.

Why a migration table rather than Alembic: the schemas are a handful of tables written as plain SQL
that runs on both SQLite and PostgreSQL (no ORM, so Alembic would bring SQLAlchemy for its
bookkeeping alone); each component (datastore index, jobs, leases, uploads, replicas) owns its tables
and migrates them on open, independently, so they can live in one shared database or in separate
embedded files; and a migration must be applied once even when several replicas start together. So
each component lists numbered :class:`Migration` steps; :func:`migrate` applies the missing ones and
records them in the same write transaction, under a lock that replicas share (DDL is transactional on
both engines, so a failed step leaves nothing half-applied). A database written by a newer server
(a version this code does not know) is refused rather than misread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, List, Sequence, Union

__all__ = ["Migration", "migrate"]

Step = Union[str, Callable[[Any, Any], None]]


@dataclass(frozen=True)
class Migration:
    """One schema version of a component.

    Attributes:
        version: its number (1, 2, ...).
        description: what it changes.
        steps: SQL statements written for SQLite (adapted with ``Database.ddl``), or callables
            ``(database, conn)`` for changes that depend on what is there.
    """

    version: int
    description: str
    steps: Sequence[Step]


_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, "
    "description TEXT NOT NULL, applied_at REAL NOT NULL, PRIMARY KEY (component, version))"
)


def migrate(db: Any, component: str, migrations: Sequence[Migration]) -> List[int]:
    """Brings a component's tables to the latest version.

    Args:
        db: the :class:`~monailabel.db.engine.Database`.
        component: the component's name.
        migrations: its migrations, in version order.

    Returns:
        the versions applied now (empty when it was up to date).

    Raises:
        RuntimeError: when the database holds a version this code does not know.
    """
    applied: List[int] = []
    with db.write(lock="schema_migrations") as c:
        c.execute(db.ddl(_TABLE))
        done = {int(r[0]) for r in c.execute("SELECT version FROM schema_migrations WHERE component = ?",
                                              (component,))}
        known = {m.version for m in migrations}
        if done - known:
            raise RuntimeError(
                f"the database holds {component} schema version {max(done)}, newer than this server knows "
                f"({max(known)}); upgrade the server"
            )
        for m in migrations:
            if m.version in done:
                continue
            for step in m.steps:
                if callable(step):
                    step(db, c)
                else:
                    c.execute(db.ddl(step))
            c.execute(
                "INSERT INTO schema_migrations (component, version, description, applied_at) VALUES (?, ?, ?, ?)",
                (component, m.version, m.description, time.time()),
            )
            applied.append(m.version)
    return applied
