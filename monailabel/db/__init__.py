"""The database layer shared state lives behind: embedded SQLite by default, PostgreSQL for replicas."""

from monailabel.db.engine import (
    DATABASE_URL_ENV,
    Database,
    DatabaseUnavailable,
    Row,
    database_url,
    open_database,
)
from monailabel.db.migrations import Migration, migrate

__all__ = [
    "DATABASE_URL_ENV", "Database", "DatabaseUnavailable", "Migration", "Row", "database_url", "migrate",
    "open_database",
]
