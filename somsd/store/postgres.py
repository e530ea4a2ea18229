"""The PostgreSQL backend of the event store (`[store] backend = "postgres"`).

Imported only when configured, so a SQLite daemon and the CLI never load psycopg. The store is
`EventStore`'s actor with PostgreSQL connections (`_postgres_store.py`: several writers,
gapless numbers), the SQL translation is in `_postgres.py`, the admin commands in
`_postgres_admin.py`.
"""

from __future__ import annotations

from types import FunctionType as _FunctionType

from somsd.store._postgres import PG_SCHEMA_VERSION, PgConnection, connect, describe_dsn
from somsd.store._postgres_admin import (
    MigrationReport,
    backup_postgres,
    migrate_sqlite_to_postgres,
    pg_dump_command,
    rebuild_postgres,
    verify_postgres,
)
from somsd.store._postgres_store import PostgresEventStore

__all__ = [
    "PG_SCHEMA_VERSION",
    "MigrationReport",
    "PgConnection",
    "PostgresEventStore",
    "backup_postgres",
    "connect",
    "describe_dsn",
    "migrate_sqlite_to_postgres",
    "pg_dump_command",
    "rebuild_postgres",
    "verify_postgres",
]

for _value in list(globals().values()):
    if isinstance(_value, type | _FunctionType) and _value.__module__.startswith("somsd.store._"):
        _value.__module__ = __name__
del _value
