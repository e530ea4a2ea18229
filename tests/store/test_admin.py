"""Admin operations: online backup, verify's checks, schema versioning, append-only log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from somsd.store import (
    SCHEMA_VERSION,
    EventStore,
    IdempotencyKey,
    StoreError,
    backup_database,
    verify_database,
)
from tests.store.helpers import StoreBackend, StreamStats, event, execute, query

PROJECTIONS = [StreamStats()]
# Enough that eight producers are still busy (~0.1 s at 40k appends/s) when the backup runs.
APPENDS_EACH = 500


async def test_backup_taken_during_appends_verifies(db_path: Path, tmp_path: Path) -> None:
    """A backup made while producers append is a consistent, self-contained, healthy copy."""
    dest = tmp_path / "backups" / "events-backup.db"
    store = EventStore(db_path, PROJECTIONS)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        first_batch_done = trio.Event()

        async def produce(n: int) -> None:
            for k in range(APPENDS_EACH):
                await store.append(
                    f"s{n}", [event(k=k)], idempotency=IdempotencyKey("t", f"{n}/{k}")
                )
                first_batch_done.set()

        async with trio.open_nursery() as producers:
            for n in range(8):
                producers.start_soon(produce, n)
            await first_batch_done.wait()
            await trio.to_thread.run_sync(backup_database, db_path, dest)
            during = query(dest, "SELECT count(*) FROM events")[0][0]
        nursery.cancel_scope.cancel()

    # Taken mid-run: some appends made it in, the rest came after the snapshot.
    assert 0 < during < 8 * APPENDS_EACH
    assert sorted(p.name for p in dest.parent.iterdir()) == ["events-backup.db"]
    assert query(dest, "PRAGMA journal_mode") == [("delete",)]
    assert verify_database(dest, PROJECTIONS) == []
    assert verify_database(db_path, PROJECTIONS) == []


def test_backup_refuses_to_overwrite(db_path: Path, tmp_path: Path) -> None:
    """An existing destination is an operator mistake worth stopping for."""
    db_path.parent.mkdir(parents=True)
    execute(db_path, "CREATE TABLE t (x)")
    dest = tmp_path / "taken.db"
    dest.write_bytes(b"precious")
    with pytest.raises(StoreError, match="exists; choose a new backup name"):
        backup_database(db_path, dest)
    assert dest.read_bytes() == b"precious"


async def test_verify_reports_gaps_and_dangling_idempotency(
    store: EventStore, backend: StoreBackend
) -> None:
    """A version gap in a stream and an idempotency row without its event are both named."""
    await store.append("order-1", [event()], idempotency=IdempotencyKey("shop", "1"))
    await store.append("order-2", [event()])
    assert backend.verify(PROJECTIONS) == []

    at = "2025-01-01T00:00:00.000000+00:00"
    backend.execute(
        "INSERT INTO events (seq, stream, version, type, payload, metadata, recorded_at) "
        "VALUES ((SELECT max(seq) + 1 FROM events), 'order-2', 3, 'X', ?, ?, ?)",
        (b"{}", b"{}", at),
    )
    backend.execute("INSERT INTO idempotency VALUES ('shop', '2', 'order-9', 999, ?)", (at,))
    backend.execute("INSERT INTO idempotency VALUES ('shop', '3', 'order-9', 1, ?)", (at,))
    problems = backend.verify()
    assert problems == [
        "stream 'order-2': 2 events with versions 1..3, expected 1..2",
        "idempotency ('shop', '2') points at seq 999 of stream 'order-9', but no such event",
        "idempotency ('shop', '3') points at seq 1 of stream 'order-9', "
        "but that event is in stream 'order-1'",
    ]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # SQLite's file itself
async def test_events_are_append_only(store: EventStore, db_path: Path) -> None:
    """The schema itself refuses to edit or delete an event, whoever tries."""
    await store.append("s", [event()])
    for statement in ("UPDATE events SET type = 'Y'", "DELETE FROM events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            execute(db_path, statement)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # SQLite's file itself
async def test_open_migrates_to_the_current_schema_version(
    store: EventStore, db_path: Path
) -> None:
    """A new file is created with WAL and the latest user_version."""
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]


async def test_file_from_a_newer_somsd_is_refused(db_path: Path) -> None:
    """A schema version this code does not know stops the store instead of guessing."""
    db_path.parent.mkdir(parents=True)
    execute(db_path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=r"schema version \d+ is newer than this somsd knows"):
        await EventStore(db_path).run()
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
