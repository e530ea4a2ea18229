"""The connection seam: what projections and queries may use of a database connection.

Projections, stampers and read queries are plain functions of a connection. On SQLite that is
a `sqlite3.Connection`; on PostgreSQL it is `somsd.store._postgres.PgConnection`, which takes
the same SQL (SQLite's `?`, `?1` and `:name` placeholders, `BLOB`/`INTEGER` in DDL) and
translates it for psycopg. `Connection` is the part of `sqlite3.Connection` both provide, so
the same projection code runs on either backend, and nothing outside `somsd/store/` needs to
know which one it is.

Portable SQL is the shared subset: standard `SELECT`/`INSERT`/`UPDATE`/`DELETE`, `ON CONFLICT
(...) DO UPDATE SET col = excluded.col` (qualify a column of the target table with the table's
name when the SET reads it, `SET n = t.n + 1`: PostgreSQL calls a bare `n` ambiguous), and
`? IS NULL` only for text parameters. Where the dialects really differ, a query asks
`dialect(conn)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol

__all__ = ["Connection", "Cursor", "Dialect", "dialect", "lock_for_transaction"]

Dialect = Literal["sqlite", "postgres"]


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    @property
    def lastrowid(self) -> int | None: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A database connection as projections and queries use it (`sqlite3.Connection` is one)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...


def dialect(conn: Connection) -> Dialect:
    """Which SQL the connection speaks underneath (its translation aside)."""
    found: Dialect = getattr(conn, "dialect", "sqlite")
    return found


def lock_for_transaction(conn: Connection, resource: str) -> None:
    """Hold `resource` for the rest of the caller's transaction, against every other writer.

    On SQLite the single writer and BEGIN IMMEDIATE already serialize all writes: nothing to do.
    On PostgreSQL several writers (daemons) may append at once; a transaction-level advisory
    lock makes the next one wait until this transaction commits or rolls back, then it reads
    what this one committed. Gapless invoice numbers take it before reading their counter.
    """
    if dialect(conn) == "postgres":
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (resource,))
