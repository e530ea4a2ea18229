"""The PostgreSQL side of the store tests' `backend` fixture (imports psycopg)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from somsd.store import EventStore, Projection
from somsd.store.postgres import PostgresEventStore, connect, rebuild_postgres, verify_postgres


class PostgresBackend:
    name = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.location = dsn

    def store(self, projections: Sequence[Projection] = (), **options: Any) -> EventStore:
        return PostgresEventStore(self.dsn, projections, **options)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        conn = connect(self.dsn)
        try:
            return [tuple(row) for row in conn.execute(sql, tuple(params)).fetchall()]
        finally:
            conn.close()

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        conn = connect(self.dsn)
        try:
            conn.execute(sql, tuple(params))
        finally:
            conn.close()

    def verify(self, projections: Sequence[Projection] = ()) -> list[str]:
        return verify_postgres(self.dsn, projections)

    def rebuild(self, projections: Sequence[Projection]) -> int:
        return rebuild_postgres(self.dsn, projections)
