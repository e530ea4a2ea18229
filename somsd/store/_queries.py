"""Read queries, as plain functions of a connection.

They take a `Connection` so the same code serves `EventStore.read` (a pooled read-only
connection in a worker thread), the admin tools (a connection of their own) and the replay used
by rebuild and verify.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from somsd.store._models import OutboxCounts, OutboxEntry, OutboxState, StoredEvent
from somsd.store._sql import Connection, dialect
from somsd.store._time import from_text

__all__ = [
    "EVENT_COLUMNS",
    "count_outbox",
    "iter_events",
    "list_dead_letters",
    "list_due_outbox",
    "list_due_outbox_per_target",
    "payloads_containing",
    "read_blob",
    "read_events",
    "read_stream",
    "stream_version",
]

# The SELECTs below splice in these column lists (module constants, never input); every value
# is a bound parameter, hence the S608 (SQL built from strings) exemptions.
EVENT_COLUMNS = "seq, stream, version, type, payload, metadata, recorded_at"
_OUTBOX_COLUMNS = (
    "id, target, payload, idempotency_key, state, attempts, next_attempt_at, last_error, "
    "created_at, updated_at"
)
# Replay reads events in pages so memory stays flat however long the log is; 1,000 rows of
# ~200 B is a fraction of a megabyte and makes the per-query overhead negligible.
_REPLAY_PAGE = 1000

_decode_metadata = msgspec.json.Decoder(dict[str, str]).decode

EventRow = tuple[int, str, int, str, bytes, bytes, str]
OutboxRow = tuple[int, str, bytes, str, str, int, str, str | None, str, str]


def event_from_row(row: EventRow) -> StoredEvent:
    seq, stream, version, type_, payload, metadata, recorded_at = row
    return StoredEvent(
        seq=seq,
        stream=stream,
        version=version,
        type=type_,
        payload=payload,
        metadata=_decode_metadata(metadata),
        recorded_at=from_text(recorded_at),
    )


def outbox_from_row(row: OutboxRow) -> OutboxEntry:
    (id_, target, payload, key, state, attempts, next_at, last_error, created, updated) = row
    return OutboxEntry(
        id=id_,
        target=target,
        payload=payload,
        idempotency_key=key,
        state=OutboxState(state),
        attempts=attempts,
        next_attempt_at=from_text(next_at),
        last_error=last_error,
        created_at=from_text(created),
        updated_at=from_text(updated),
    )


def stream_version(conn: Connection, stream: str) -> int:
    """The stream's current version; 0 for a stream with no events."""
    row = conn.execute("SELECT max(version) FROM events WHERE stream = ?", (stream,)).fetchone()
    return int(row[0] or 0)


def read_blob(conn: Connection, sha256: str) -> bytes | None:
    """The blob stored under its SHA-256 (hex), or None."""
    row = conn.execute("SELECT content FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else bytes(row[0])  # psycopg may hand out a memoryview


def read_stream(conn: Connection, stream: str, after_version: int) -> list[StoredEvent]:
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE stream = ? AND version > ? ORDER BY version",  # noqa: S608
        (stream, after_version),
    ).fetchall()
    return [event_from_row(row) for row in rows]


def read_events(conn: Connection, after_seq: int, limit: int) -> list[StoredEvent]:
    rows = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
        (after_seq, limit),
    ).fetchall()
    return [event_from_row(row) for row in rows]


def iter_events(conn: Connection) -> Iterator[StoredEvent]:
    """Every event in seq order, fetched a page at a time (for replay)."""
    after = 0
    while page := read_events(conn, after, _REPLAY_PAGE):
        yield from page
        after = page[-1].seq


def list_due_outbox(conn: Connection, now: str, limit: int) -> list[OutboxEntry]:
    rows = conn.execute(
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state = 'pending' "  # noqa: S608
        "AND next_attempt_at <= ? "
        "ORDER BY next_attempt_at, id LIMIT ?",
        (now, limit),
    ).fetchall()
    return [outbox_from_row(row) for row in rows]


def list_due_outbox_per_target(
    conn: Connection, now: str, per_target: int
) -> dict[str, list[OutboxEntry]]:
    """Up to `per_target` due entries of every target with pending ones, oldest first each.

    Per target, so a backlog of one (a catalogue's stock pushes, a dead warehouse's
    fulfilments) never hides another target's entries behind it. The targets are found with a
    loose index scan (one index seek per target, not a read of every pending row), then each
    target's due entries with one seek on `outbox_due_per_target`.
    """
    targets = conn.execute(
        """WITH RECURSIVE pending(target) AS (
            SELECT (SELECT min(target) FROM outbox WHERE state = 'pending')
            UNION ALL
            SELECT (
                SELECT min(target) FROM outbox WHERE state = 'pending' AND target > pending.target
            ) FROM pending WHERE pending.target IS NOT NULL
        ) SELECT target FROM pending WHERE target IS NOT NULL"""
    ).fetchall()
    due: dict[str, list[OutboxEntry]] = {}
    for (target,) in targets:
        rows = conn.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state = 'pending' "  # noqa: S608
            "AND target = ? AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id LIMIT ?",
            (target, now, per_target),
        ).fetchall()
        if rows:
            due[target] = [outbox_from_row(row) for row in rows]
    return due


def list_dead_letters(conn: Connection, target: str | None, limit: int) -> list[OutboxEntry]:
    rows = conn.execute(
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state = 'dead' "  # noqa: S608
        "AND (?1 IS NULL OR target = ?1) ORDER BY id LIMIT ?2",
        (target, limit),
    ).fetchall()
    return [outbox_from_row(row) for row in rows]


def count_outbox(conn: Connection) -> OutboxCounts:
    rows = conn.execute(
        "SELECT state, target, count(*) FROM outbox WHERE state IN ('pending', 'dead') "
        "GROUP BY state, target"
    ).fetchall()
    counts = OutboxCounts(pending={}, dead={})
    for state, target, count in rows:
        (counts.pending if state == "pending" else counts.dead)[target] = count
    return counts


def payloads_containing(
    conn: Connection, *, stream_prefix: str, type_: str, fragment: bytes, limit: int
) -> list[bytes]:
    """Payloads of `type_` events in streams starting with `stream_prefix` whose JSON holds
    `fragment` byte for byte (e.g. `b'"valid":false'`), in seq order."""
    # The stream range uses the (stream, version) index: only those streams are read.
    end = stream_prefix[:-1] + chr(ord(stream_prefix[-1]) + 1)
    if dialect(conn) == "postgres":
        contains = "position(CAST(? AS BYTEA) IN payload) > 0"
        needle: bytes | str = fragment
    else:
        contains = "instr(payload, ?) > 0"
        needle = fragment
    rows = conn.execute(
        "SELECT payload FROM events WHERE stream >= ? AND stream < ? AND type = ? "  # noqa: S608
        f"AND {contains} ORDER BY seq LIMIT ?",
        (stream_prefix, end, type_, needle, limit),
    ).fetchall()
    return [bytes(row[0]) for row in rows]
