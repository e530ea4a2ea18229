"""The PostgreSQL store beyond the shared store suite: several writers on one database,
gapless invoice numbers across them, migration from SQLite, backup, append-only log."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
import pytest
import trio

from somsd.domain.events import encode_event
from somsd.domain.invoicing import issue_invoice
from somsd.domain.lifecycle import receive_order
from somsd.domain.numbering import parse_number
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import OrderState, apply
from somsd.domain.testing import sample_order
from somsd.projections import all_projections
from somsd.store import (
    EventStore,
    IdempotencyKey,
    NewEvent,
    OutboxItem,
    StoreError,
    StoreUnavailable,
    blob_key,
)
from somsd.store.postgres import (
    PostgresEventStore,
    backup_postgres,
    migrate_sqlite_to_postgres,
    verify_postgres,
)
from tests.store.helpers import StreamStats, event, query

NOW = datetime(2026, 11, 21, 10, tzinfo=UTC)
POLICY = OrderPolicy()
# Three daemons' stores on one database, each with a few concurrent producers.
WRITERS = 3
ORDERS_PER_WRITER = 40
PRODUCERS_PER_WRITER = 8
LABEL = b"%PDF-1.4 a carrier label\n"


def _received(order_id: str) -> tuple[list[NewEvent], OrderState]:
    order = sample_order(external_id=order_id, payment_method="invoice", payment_status="pending")
    events = receive_order(
        order, order_id=order_id, channel="shop", policy=POLICY, now=NOW, actor="desk"
    )
    state: OrderState | None = None
    for item in events:
        state = apply(state, item)
    assert state is not None
    return [NewEvent(type(e).__name__, encode_event(e)) for e in events], state


async def _take_orders(store: EventStore, writer: int, numbers: list[str]) -> None:
    """Receive orders and invoice each in a second append, from several producers at once."""

    async def producer(first: int) -> None:
        for n in range(first, ORDERS_PER_WRITER, PRODUCERS_PER_WRITER):
            order_id = f"w{writer}-{n}"
            received, state = _received(order_id)
            await store.append(f"order-{order_id}", received, expected_version=0)
            invoice = issue_invoice(state, policy=POLICY, now=NOW, actor="test")
            appended = await store.append(
                f"order-{order_id}",
                [NewEvent(type(e).__name__, encode_event(e)) for e in invoice],
                expected_version=len(received),
            )
            for stamped in appended.stamped:
                if stamped.type == "InvoiceIssued":
                    numbers.append(msgspec.json.decode(stamped.payload)["number"])

    async with trio.open_nursery() as nursery:
        for first in range(PRODUCERS_PER_WRITER):
            nursery.start_soon(producer, first)


@pytest.mark.slow
async def test_invoice_numbers_stay_gapless_and_unique_with_several_writers(pg_dsn: str) -> None:
    """Three stores (three daemons' writers, each its own connection) invoice at once: every
    number is used exactly once, 1..n without a gap, and the projection agrees with a replay."""
    stores = [PostgresEventStore(pg_dsn, all_projections()) for _ in range(WRITERS)]
    numbers: list[str] = []
    async with trio.open_nursery() as nursery:
        for store in stores:
            await nursery.start(store.run)
        async with trio.open_nursery() as writers:
            for index, store in enumerate(stores):
                writers.start_soon(_take_orders, store, index, numbers)
        nursery.cancel_scope.cancel()

    total = WRITERS * ORDERS_PER_WRITER
    sequences = sorted(parse_number(number)[2] for number in numbers)
    assert sequences == list(range(1, total + 1))
    with psycopg.connect(pg_dsn) as conn:
        stored = conn.execute("SELECT number FROM documents ORDER BY number").fetchall()
        seqs = [row[0] for row in conn.execute("SELECT seq FROM events ORDER BY seq")]
    assert sorted(number for (number,) in stored) == sorted(numbers)
    assert seqs == list(range(1, len(seqs) + 1))  # the log's seqs are gapless too
    assert verify_postgres(pg_dsn, all_projections()) == []


async def test_a_stream_written_by_two_stores_keeps_its_versions(pg_dsn: str) -> None:
    """Optimistic concurrency holds across writers: the same expected version wins once."""
    first, second = PostgresEventStore(pg_dsn), PostgresEventStore(pg_dsn)
    outcomes: list[str] = []

    async def append(store: EventStore) -> None:
        try:
            await store.append("s", [event()], expected_version=0)
            outcomes.append("appended")
        except StoreError as exc:
            outcomes.append(type(exc).__name__)

    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        await nursery.start(second.run)
        async with trio.open_nursery() as racers:
            racers.start_soon(append, first)
            racers.start_soon(append, second)
        key = IdempotencyKey("shop", "1")
        one = await first.append("o", [event()], idempotency=key)
        two = await second.append("o", [event()], idempotency=key)
        nursery.cancel_scope.cancel()
    assert sorted(outcomes) == ["VersionConflict", "appended"]
    assert two.first_seq == one.first_seq  # Duplicate, seen from the other writer


async def test_the_log_is_append_only_in_postgres_too(pg_dsn: str) -> None:
    async with trio.open_nursery() as nursery:
        store = PostgresEventStore(pg_dsn)
        await nursery.start(store.run)
        await store.append("s", [event()])
        nursery.cancel_scope.cancel()
    for statement in ("UPDATE events SET type = 'Y'", "DELETE FROM events", "TRUNCATE events"):
        with psycopg.connect(pg_dsn) as conn, pytest.raises(psycopg.Error, match="append-only"):
            conn.execute(statement)


async def test_sqlite_log_migrates_to_postgres_with_equal_counts_and_hashes(
    tmp_path: Path, pg_dsn: str
) -> None:
    """A SQLite store with orders, idempotency, outbox rows and a blob is copied; counts and
    hashes agree, the projections replayed in PostgreSQL verify, and a daemon carries on
    there, the blob readable."""
    source = tmp_path / "events.db"
    sqlite_store = EventStore(source, all_projections())
    async with trio.open_nursery() as nursery:
        await nursery.start(sqlite_store.run)
        for n in range(12):
            received, state = _received(f"m-{n}")
            await sqlite_store.append(
                f"order-m-{n}",
                received,
                idempotency=IdempotencyKey("shop", str(n)),
                outbox=[OutboxItem("erp", b"{}", f"erp:m-{n}")],
            )
            invoice = issue_invoice(state, policy=POLICY, now=NOW, actor="test")
            await sqlite_store.append(
                f"order-m-{n}",
                [NewEvent(type(e).__name__, encode_event(e)) for e in invoice],
                blobs=[LABEL] if n == 0 else (),
            )
        [entry, *_] = await sqlite_store.due_outbox()
        await sqlite_store.mark_delivered(entry.id)
        nursery.cancel_scope.cancel()

    events = query(source, "SELECT count(*) FROM events")[0][0]
    old_label = tmp_path / "labels" / "f-0.zpl"  # a label file of an older somsd
    old_label.parent.mkdir()
    old_label.write_bytes(b"^XA^FDbought before blobs^FS^XZ")
    report = migrate_sqlite_to_postgres(source, pg_dsn, all_projections(), files=[old_label])
    assert report.counts == {"events": events, "idempotency": 12, "outbox": 12, "blobs": 1}
    assert report.files == 1
    assert report.replayed == events
    assert verify_postgres(pg_dsn, all_projections()) == []
    with pytest.raises(StoreError, match=f"already holds {events} events"):
        migrate_sqlite_to_postgres(source, pg_dsn, all_projections())

    async with trio.open_nursery() as nursery:
        store = PostgresEventStore(pg_dsn, all_projections())
        await nursery.start(store.run)
        received, state = _received("after")
        appended = await store.append("order-after", received)
        invoice = issue_invoice(state, policy=POLICY, now=NOW, actor="test")
        numbered = await store.append(
            "order-after", [NewEvent(type(e).__name__, encode_event(e)) for e in invoice]
        )
        assert (await store.outbox_counts()).pending == {"erp": 11}
        assert await store.blob(blob_key(LABEL)) == LABEL
        assert await store.blob(blob_key(old_label.read_bytes())) == old_label.read_bytes()
        nursery.cancel_scope.cancel()
    assert appended.first_seq == events + 1
    [stamped] = [e for e in numbered.stamped if e.type == "InvoiceIssued"]
    assert parse_number(msgspec.json.decode(stamped.payload)["number"])[2] == 13


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump not installed")
async def test_backup_is_a_pg_dump_that_restores(tmp_path: Path, pg_dsn: str) -> None:
    async with trio.open_nursery() as nursery:
        store = PostgresEventStore(pg_dsn, [StreamStats()])
        await nursery.start(store.run)
        for n in range(5):
            await store.append(f"s{n}", [event()])
        nursery.cancel_scope.cancel()
    dest = tmp_path / "backup.pgdump"
    backup_postgres(pg_dsn, dest)
    assert dest.stat().st_mode & 0o777 == 0o600
    listing = (
        await trio.run_process(["pg_restore", "--list", str(dest)], capture_stdout=True)
    ).stdout.decode()
    assert "TABLE DATA public events" in listing
    with pytest.raises(StoreError, match="exists"):
        backup_postgres(pg_dsn, dest)


async def test_connections_the_server_dropped_are_replaced(pg_dsn: str) -> None:
    """The server ends every session (a restart, a failover): the next read reports the
    store unavailable once, then reads work on a fresh connection; the writer's batch fails,
    its run ends (the supervisor restarts it) and the restarted run writes on."""
    store = PostgresEventStore(pg_dsn)
    ended = trio.Event()

    async def run_until_broken(task_status: trio.TaskStatus[None]) -> None:
        try:
            await store.run(task_status=task_status)
        except* StoreError:  # "connection stuck in a transaction": a supervisor restarts it
            ended.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(run_until_broken)
        await store.append("s", [event()])
        assert await store.stream_version("s") == 1
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid != pg_backend_pid()"
            )
        with pytest.raises(StoreUnavailable, match="read failed"):
            await store.stream_version("s")
        assert await store.stream_version("s") == 1
        with pytest.raises(StoreUnavailable):
            await store.append("s", [event()])
        await ended.wait()
        await nursery.start(store.run)  # what the supervisor does
        assert (await store.append("s", [event()])).version == 2
        nursery.cancel_scope.cancel()
