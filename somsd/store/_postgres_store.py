"""`PostgresEventStore`: the same event-log actor, its log in PostgreSQL.

Everything a caller sees is `EventStore`'s: one writer task with a bounded mailbox, group
commit (a batch of requests in one transaction, each in its own SAVEPOINT, answered only after
COMMIT), reads on pooled connections in worker threads, restart after a broken connection.
Only the connections (psycopg 3's sync API on trio worker threads, no asyncio) and the batch
writer differ.

Several writers: unlike SQLite, other daemons may write the same database. Each batch takes
the log lock first (a transaction-level advisory lock, released by COMMIT or ROLLBACK), so
batches of all daemons commit one after another, each still holding up to `batch_limit`
requests. That keeps what SQLite's single writer guarantees:

- `seq` is max(seq) + 1, gapless and in commit order: a reader paging with `read_all(after_seq)`
  never sees seq n+1 before n has committed, whichever daemon wrote them.
- A stream's version is read under the lock, so optimistic concurrency (`expected_version`)
  compares with the latest committed version of any daemon.
- Gapless invoice numbers read their counter under the lock (and under their own, see
  `lock_for_transaction`), inside the appending transaction: gapless and unique across daemons.

`UNIQUE (stream, version)` and the idempotency key stay the last line: should a row race in
anyway (an admin session writing), the request is tried again from its savepoint and then
reports `VersionConflict` or `Duplicate`, as it would have seeing the row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
import psycopg.errors

from somsd.secrets import Secret
from somsd.store._errors import StoreError, StoreUnavailable, VersionConflict
from somsd.store._models import StoredEvent
from somsd.store._postgres import (
    PgConnection,
    connect,
    describe_dsn,
    install_pg_projections,
    migrate_pg,
)
from somsd.store._projection import Projection, Unbatchable
from somsd.store._schema import immediate_transaction
from somsd.store._sql import Connection
from somsd.store._store import EventStore
from somsd.store._time import to_text
from somsd.store._writer import (
    _EMPTY_METADATA,
    AppendRequest,
    BatchWriter,
    Outcome,
    WriteRequest,
    _duplicate_of,
    _encode_metadata,
    _failed,
)

__all__ = ["PostgresEventStore"]

T = TypeVar("T")

_INSERT_EVENT = (
    "INSERT INTO events (seq, stream, version, type, payload, metadata, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# The first event of an append reads the stream's version and inserts in one round trip.
_INSERT_FIRST_EVENT = (
    "INSERT INTO events (seq, stream, version, type, payload, metadata, recorded_at) "
    "SELECT ?, ?, coalesce(max(version), 0) + 1, ?, ?, ?, ? FROM events WHERE stream = ? "
    "RETURNING version"
)
# Round trips are what a PostgreSQL batch spends its time on (~50-250 us each on loopback),
# so the previous request's RELEASE travels with the next one's SAVEPOINT (one simple-protocol
# message; COMMIT releases the last one).
_NEXT_SAVEPOINT = "RELEASE request; SAVEPOINT request"
# The log lock: one batch of one daemon at a time appends (see the module docstring).
_LOG_LOCK = "somsd/events"
# Constraints whose violation means another writer got there first: try the request again.
_RACES = frozenset({"events_pkey", "events_stream_version", "idempotency_key"})
# A request that loses the race this often in a row is reported failed instead; with per-stream
# ownership (leases) a race is rare, five in a row means something else is wrong.
_RACE_ATTEMPTS = 5


class _LostRace(Exception):
    pass


class PgBatchWriter(BatchWriter):
    """`BatchWriter` on a `PgConnection`: one transaction per batch, a savepoint per request."""

    def __init__(self, conn: PgConnection, projections: Sequence[Projection]) -> None:
        # BatchWriter's constructor only takes a cursor and sorts the projections; PgConnection
        # provides the connection surface it and EventStore use (cursor, in_transaction, close).
        super().__init__(cast(sqlite3.Connection, conn), projections)
        self.pg = conn
        self._last_seq = 0  # the log's last seq inside the current batch

    def _write(self, batch: Sequence[WriteRequest], now: datetime) -> list[Outcome]:
        cursor = self.pg.cursor()
        now_text = to_text(now)
        outcomes: list[Outcome] = []
        with immediate_transaction(self.conn):
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (_LOG_LOCK,))
            (last_seq,) = cursor.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
            self._last_seq = int(last_seq)
            raw = self.pg.raw
            open_savepoint = False
            for request in batch:
                outcome: Outcome = None
                for attempt in range(1, _RACE_ATTEMPTS + 1):
                    before = self._last_seq
                    raw.execute(
                        _NEXT_SAVEPOINT if open_savepoint else "SAVEPOINT request", prepare=False
                    )
                    open_savepoint = True
                    try:
                        if isinstance(request, AppendRequest):
                            outcome = self._append_pg(request, now, now_text)
                        else:
                            self._change_outbox(request, now_text)
                            outcome = None
                    except (psycopg.OperationalError, Unbatchable):
                        raise  # the connection or server failed: the whole batch fails
                    except Exception as exc:
                        self._last_seq = before  # its seqs were rolled back with it
                        self.end_request(kept=False)  # and its queued rows
                        cursor.execute("ROLLBACK TO request")
                        if _lost_race(exc) and attempt < _RACE_ATTEMPTS:
                            continue
                        outcome = exc if isinstance(exc, StoreError) else _failed(request, exc)
                        break
                    break
                self.end_request(kept=True)  # a failed one's rows are gone already
                outcomes.append(outcome)
            self.flush_rows()
        return outcomes

    def _append_pg(self, request: AppendRequest, now: datetime, now_text: str) -> Outcome:
        conn = self.pg
        stream = request.stream
        key = request.idempotency
        if key is not None and (duplicate := _duplicate_of(conn, key)) is not None:
            return duplicate
        expected = request.expected_version
        events = request.events
        if self._stampers:
            # A stamper may take numbers: check the version first, so a conflicting append
            # does not take (and give back) numbers under the numbering lock.
            row = conn.execute(
                "SELECT max(version) FROM events WHERE stream = ?", (stream,)
            ).fetchone()
            if expected is not None and expected != (row[0] or 0):
                return VersionConflict(stream, expected, row[0] or 0)
            for stamper in self._stampers:
                events = stamper.stamp(conn, stream, events)
        stored_events: list[StoredEvent] = []
        first_seq = last_seq = version = 0
        for event in events:
            metadata = _encode_metadata(event.metadata) if event.metadata else _EMPTY_METADATA
            last_seq = self._last_seq = self._last_seq + 1
            if first_seq:
                version += 1
                conn.execute(
                    _INSERT_EVENT,
                    (last_seq, stream, version, event.type, event.payload, metadata, now_text),
                )
            else:
                first_seq = last_seq
                (version,) = conn.execute(
                    _INSERT_FIRST_EVENT,
                    (last_seq, stream, event.type, event.payload, metadata, now_text, stream),
                ).fetchone()
                if expected is not None and expected != version - 1:
                    # Inserted already: the savepoint takes it back (see write).
                    raise VersionConflict(stream, expected, version - 1)
            stored_events.append(
                StoredEvent(
                    last_seq, stream, version, event.type, event.payload, event.metadata, now
                )
            )
        appended = (first_seq, last_seq, version)
        return self._finish_append(
            conn, request, events, stored_events, appended, now_text=now_text
        )


def _lost_race(exc: Exception) -> bool:
    cause = exc
    return (
        isinstance(cause, psycopg.errors.UniqueViolation) and cause.diag.constraint_name in _RACES
    )


class PostgresEventStore(EventStore):
    """`EventStore` with its log, projections and outbox in a PostgreSQL database."""

    def __init__(
        self, dsn: Secret | str, projections: Sequence[Projection] = (), **options: Any
    ) -> None:
        self.dsn = dsn if isinstance(dsn, Secret) else Secret(dsn)
        self.where = describe_dsn(self.dsn)
        # `path` names the store in logs and errors; it is never opened.
        super().__init__(Path(self.where), projections, **options)

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.dsn)
        try:
            migrate_pg(conn, self.where)
            install_pg_projections(conn, self._projections)
        except psycopg.Error as exc:
            conn.close()
            raise StoreUnavailable(f"{self.where}: cannot open the event store: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cast(sqlite3.Connection, conn)

    def _batch_writer(self, conn: sqlite3.Connection) -> BatchWriter:
        return PgBatchWriter(cast(PgConnection, conn), self._projections)

    def _open_reader(self) -> sqlite3.Connection:
        return cast(sqlite3.Connection, connect(self.dsn, read_only=True))

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """`EventStore.read`; a connection the server dropped (restart, failover) is not
        reused: the pool is emptied and the caller hears `StoreUnavailable`, the next read
        connects afresh."""
        try:
            return await super().read(fn)
        except psycopg.OperationalError as exc:
            self._close_idle_readers()  # the broken one went back to the pool with them
            raise StoreUnavailable(f"{self.where}: read failed: {exc}") from exc

    @property
    def disk_full_reason(self) -> str:
        return f"the PostgreSQL server of the event store ({self.where}) is out of disk space"
