"""The writer's side of the store: the requests it accepts and how one batch is written.

Everything here runs in the writer's worker thread and touches only the writer connection; it
never touches trio. `BatchWriter.write` turns a batch of requests into one transaction and
returns one outcome per request; the trio side answers the replies after it returns, i.e. after
COMMIT, so nothing is acknowledged that a crash could still take back.

Each request runs in its own SAVEPOINT. A request that fails (version conflict, a projection
raising, an outbox key already used) is rolled back to its savepoint and reported on its own;
the rest of the batch commits. If SQLite itself gives up on the transaction (I/O error, disk
full, lock not obtained) the whole batch is rolled back and `write` raises.

New rows of `BatchedProjection`s (a new order's row, its documents) are queued in a `RowBatch`
and inserted with one `executemany` per statement just before COMMIT. Should that insert fail,
or a projection find it needs a row still queued (`Unbatchable`), the whole transaction is
rolled back and the batch written again with every row inserted in its own request's
savepoint: a bad row then fails only its own request, as without batching.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import cast

import msgspec

from somsd.actor import Reply
from somsd.store._errors import (
    OutboxTransitionError,
    RequestFailed,
    StoreError,
    VersionConflict,
    is_disk_full,
)
from somsd.store._models import (
    Appended,
    Duplicate,
    IdempotencyKey,
    NewEvent,
    OutboxItem,
    StoredEvent,
    blob_key,
)
from somsd.store._projection import (
    AppendProjection,
    BatchedProjection,
    EventStamper,
    Projection,
    RowBatch,
    Unbatchable,
)
from somsd.store._schema import immediate_transaction
from somsd.store._sql import Connection
from somsd.store._time import to_text

__all__ = ["AppendRequest", "BatchWriter", "OutboxAction", "OutboxChange", "WriteRequest"]


class AppendRequest(msgspec.Struct, frozen=True):
    stream: str
    events: Sequence[NewEvent]
    expected_version: int | None
    outbox: Sequence[OutboxItem]
    idempotency: IdempotencyKey | None
    reply: Reply[Appended | Duplicate]
    # time.perf_counter() when the producer queued it, for somsd_eventlog_append_seconds.
    submitted_at: float
    # Documents the events refer to by SHA-256 (`blob_key`), stored in the same transaction.
    blobs: Sequence[bytes] = ()


class OutboxAction(enum.Enum):
    DELIVERED = "mark delivered"
    RETRY = "schedule a retry for"
    DEAD = "mark dead"
    REQUEUE = "requeue"


class OutboxChange(msgspec.Struct, frozen=True):
    entry_id: int
    action: OutboxAction
    reply: Reply[None]
    next_attempt_at: str | None = None
    error: str | None = None


WriteRequest = AppendRequest | OutboxChange
Outcome = Appended | Duplicate | StoreError | None

_encode_metadata = msgspec.json.Encoder().encode
_EMPTY_METADATA = b"{}"

_INSERT_EVENT = (
    "INSERT INTO events (stream, version, type, payload, metadata, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
# A blob already stored (the same label reconciled twice) is the same bytes: keep the first.
_INSERT_BLOB = "INSERT OR IGNORE INTO blobs (sha256, content, size, created_at) VALUES (?, ?, ?, ?)"
_INSERT_OUTBOX = (
    "INSERT INTO outbox (target, payload, idempotency_key, state, attempts, next_attempt_at, "
    "created_at, updated_at) VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4)"
)
# Each outbox change is one UPDATE guarded by the state it may start from; zero rows changed
# means the entry is missing or in another state, which the caller hears about. Every outcome
# of a delivery attempt (delivered, retry, dead) counts it; a requeue starts a fresh budget.
_OUTBOX_UPDATES: dict[OutboxAction, str] = {
    OutboxAction.DELIVERED: (
        "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, updated_at = :now "
        "WHERE id = :id AND state = 'pending'"
    ),
    OutboxAction.RETRY: (
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = :next, "
        "last_error = :error, updated_at = :now WHERE id = :id AND state = 'pending'"
    ),
    OutboxAction.DEAD: (
        "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = :error, "
        "updated_at = :now WHERE id = :id AND state = 'pending'"
    ),
    OutboxAction.REQUEUE: (
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = :now, "
        "updated_at = :now WHERE id = :id AND state = 'dead'"
    ),
}


class BatchWriter:
    """Writes batches of requests on one connection; used by one thread at a time."""

    def __init__(self, conn: sqlite3.Connection, projections: Sequence[Projection]) -> None:
        self.conn = conn
        self._cursor = conn.cursor()
        self._projections = tuple(projections)
        # Sorted once: isinstance against a runtime-checkable Protocol walks its attributes,
        # which cost 3 % of the writer thread when done per request (py-spy, bench/intake.py).
        self._stampers = tuple(p for p in projections if isinstance(p, EventStamper))
        self._per_append = tuple(p for p in projections if isinstance(p, AppendProjection))
        self._per_event = tuple(p for p in projections if not isinstance(p, AppendProjection))
        self._batched = frozenset(
            id(p) for p in self._per_append if isinstance(p, BatchedProjection)
        )
        # The batch's queued rows while `write` runs batched, else None (rows go in at once).
        self.rows: RowBatch | None = None

    def write(self, batch: Sequence[WriteRequest], now: datetime) -> list[Outcome]:
        """Write the batch in one transaction; one outcome per request, in order."""
        if self._batched:
            self.rows = RowBatch()
            try:
                return self._write(batch, now)
            except Unbatchable:
                pass  # rolled back: written again below, each row in its request's savepoint
            finally:
                self.rows = None
        return self._write(batch, now)

    def flush_rows(self) -> None:
        """Insert the batch's queued rows; a failure makes the batch `Unbatchable`."""
        if self.rows is None:
            return
        try:
            self.rows.flush(self.conn)
        except Exception as exc:
            if not self.conn.in_transaction or is_disk_full(exc):
                raise
            raise Unbatchable(f"the batch's projection rows failed: {exc}") from exc

    def end_request(self, *, kept: bool) -> None:
        if self.rows is not None:
            self.rows.end_request(kept=kept)

    def _write(self, batch: Sequence[WriteRequest], now: datetime) -> list[Outcome]:
        cursor = self._cursor
        now_text = to_text(now)
        outcomes: list[Outcome] = []
        with immediate_transaction(self.conn):
            for request in batch:
                cursor.execute("SAVEPOINT request")
                kept = True
                try:
                    if isinstance(request, AppendRequest):
                        outcome: Outcome = self._append(request, now, now_text)
                    else:
                        self._change_outbox(request, now_text)
                        outcome = None
                except Unbatchable:
                    raise
                except Exception as exc:
                    if not self.conn.in_transaction or is_disk_full(exc):
                        # SQLite rolled the whole transaction back itself (SQLITE_FULL,
                        # SQLITE_IOERR...): earlier requests are gone too, the batch fails.
                        # A full disk fails the batch even when SQLite kept the transaction:
                        # its commit could not be written either.
                        raise
                    cursor.execute("ROLLBACK TO request")
                    kept = False
                    outcome = exc if isinstance(exc, StoreError) else _failed(request, exc)
                cursor.execute("RELEASE request")
                self.end_request(kept=kept)
                outcomes.append(outcome)
            self.flush_rows()
        return outcomes

    def _append(self, request: AppendRequest, now: datetime, now_text: str) -> Outcome:
        cursor = self._cursor
        stream = request.stream
        key = request.idempotency
        if key is not None and (duplicate := _duplicate_of(cursor, key)) is not None:
            return duplicate
        row = cursor.execute(
            "SELECT max(version) FROM events WHERE stream = ?", (stream,)
        ).fetchone()
        version: int = row[0] or 0
        expected = request.expected_version
        if expected is not None and expected != version:
            return VersionConflict(stream, expected, version)
        projections = self._projections
        events = request.events
        for stamper in self._stampers:
            events = stamper.stamp(self.conn, stream, events)
        stored_events: list[StoredEvent] = []
        first_seq = last_seq = 0
        for event in events:
            version += 1
            metadata = _encode_metadata(event.metadata) if event.metadata else _EMPTY_METADATA
            cursor.execute(
                _INSERT_EVENT, (stream, version, event.type, event.payload, metadata, now_text)
            )
            last_seq = cursor.lastrowid or 0
            if not first_seq:
                first_seq = last_seq
            if projections:
                stored_events.append(
                    StoredEvent(
                        last_seq, stream, version, event.type, event.payload, event.metadata, now
                    )
                )
        appended = (first_seq, last_seq, version)
        return self._finish_append(
            cursor, request, events, stored_events, appended, now_text=now_text
        )

    def _finish_append(
        self,
        db: Connection,
        request: AppendRequest,
        events: Sequence[NewEvent],
        stored_events: list[StoredEvent],
        appended: tuple[int, int, int],
        *,
        now_text: str,
    ) -> Appended:
        """An append's work after its events are inserted, on either backend: the projections,
        its outbox entries and idempotency key (through `db`), and its answer. `appended` is
        the (first seq, last seq, stream version) of the inserted events."""
        first_seq, last_seq, version = appended
        rows = self.rows
        for append_projection in self._per_append:
            if rows is not None and id(append_projection) in self._batched:
                cast(BatchedProjection, append_projection).apply_rows(
                    self.conn, stored_events, rows
                )
            else:
                append_projection.apply_append(self.conn, stored_events)
        for projection in self._per_event:
            for stored in stored_events:
                projection.apply(self.conn, stored)
        if request.blobs:
            db.executemany(
                _INSERT_BLOB, [(blob_key(b), b, len(b), now_text) for b in request.blobs]
            )
        if request.outbox:
            db.executemany(
                _INSERT_OUTBOX,
                [(o.target, o.payload, o.idempotency_key, now_text) for o in request.outbox],
            )
        key = request.idempotency
        if key is not None:
            db.execute(
                "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?)",
                (key.source, key.external_id, request.stream, first_seq, now_text),
            )
        changed = any(a is not b for a, b in zip(events, request.events, strict=True))
        return Appended(
            stream=request.stream,
            first_seq=first_seq,
            last_seq=last_seq,
            version=version,
            stamped=tuple(events) if changed else (),
        )

    def _change_outbox(self, change: OutboxChange, now_text: str) -> None:
        params = {
            "id": change.entry_id,
            "now": now_text,
            "next": change.next_attempt_at,
            "error": change.error,
        }
        cursor = self._cursor.execute(_OUTBOX_UPDATES[change.action], params)
        if cursor.rowcount == 0:
            row = cursor.execute(
                "SELECT state FROM outbox WHERE id = ?", (change.entry_id,)
            ).fetchone()
            raise OutboxTransitionError(
                change.entry_id, change.action.value, None if row is None else row[0]
            )


def _duplicate_of(db: Connection, key: IdempotencyKey) -> Duplicate | None:
    """The earlier append that used the idempotency `key`, if one did."""
    seen = db.execute(
        "SELECT stream, first_seq FROM idempotency WHERE source = ? AND external_id = ?",
        (key.source, key.external_id),
    ).fetchone()
    return None if seen is None else Duplicate(stream=seen[0], first_seq=seen[1])


def _failed(request: WriteRequest, exc: Exception) -> RequestFailed:
    if isinstance(request, AppendRequest):
        what = f"append to stream {request.stream!r}"
    else:
        what = f"{request.action.value} outbox entry {request.entry_id}"
    failure = RequestFailed(f"{what} was rolled back ({type(exc).__name__}: {exc})")
    failure.__cause__ = exc
    return failure
