"""Test projections, a settable clock and small helpers shared by the store tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec
from prometheus_client import CollectorRegistry

from somsd.store import Connection, EventStore, NewEvent, Projection, StoredEvent, verify_database
from somsd.store import rebuild_projections as rebuild_sqlite

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


class StreamStats:
    """Per stream: how many events, the last type and seq. Upserts, like real projections."""

    name = "stream_stats"
    ddl = (
        "CREATE TABLE stream_stats (stream TEXT PRIMARY KEY, events INTEGER NOT NULL, "
        "last_type TEXT NOT NULL, last_seq INTEGER NOT NULL)",
    )
    tables = ("stream_stats",)

    def apply(self, conn: Connection, event: StoredEvent) -> None:
        conn.execute(
            "INSERT INTO stream_stats VALUES (?, 1, ?, ?) ON CONFLICT (stream) DO UPDATE SET "
            "events = stream_stats.events + 1, last_type = excluded.last_type, "
            "last_seq = excluded.last_seq",
            (event.stream, event.type, event.seq),
        )


class TypeCounts:
    """Events per type; refuses type "Unprojectable" *after* writing, to prove the rollback."""

    name = "type_counts"
    ddl = ("CREATE TABLE type_counts (type TEXT PRIMARY KEY, n INTEGER NOT NULL)",)
    tables = ("type_counts",)

    def apply(self, conn: Connection, event: StoredEvent) -> None:
        conn.execute(
            "INSERT INTO type_counts VALUES (?, 1) "
            "ON CONFLICT (type) DO UPDATE SET n = type_counts.n + 1",
            (event.type,),
        )
        if event.type == "Unprojectable":
            raise ValueError(f"type_counts cannot project event {event.seq}")


class Clock:
    """A clock the test sets; the store reads it once per batch."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def event(type_: str = "Happened", **payload: object) -> NewEvent:
    return NewEvent(type_, msgspec.json.encode(payload))


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def query(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file the way an operator's sqlite3 shell would, outside the store."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def execute(path: Path, *statements: str) -> None:
    """Change the file behind the store's back (tampering, for verify tests)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection, as an admin shell could."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


class StoreBackend(Protocol):
    """Where a test's store lives, and how the test looks at it from outside the store."""

    name: str
    location: Path | str  # the SQLite file or the PostgreSQL DSN

    def store(self, projections: Sequence[Projection] = (), **options: Any) -> EventStore: ...

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str, params: Sequence[object] = ()) -> None: ...

    def verify(self, projections: Sequence[Projection] = ()) -> list[str]: ...

    def rebuild(self, projections: Sequence[Projection]) -> int: ...


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = path

    def store(self, projections: Sequence[Projection] = (), **options: Any) -> EventStore:
        return EventStore(self.path, projections, **options)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return query(self.path, sql, tuple(params))

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(sql, tuple(params))
        finally:
            conn.close()

    def verify(self, projections: Sequence[Projection] = ()) -> list[str]:
        return verify_database(self.path, projections)

    def rebuild(self, projections: Sequence[Projection]) -> int:
        return rebuild_sqlite(self.path, projections)
