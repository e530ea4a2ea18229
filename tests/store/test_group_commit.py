"""Group commit: concurrent producers share transactions, and every ack follows its COMMIT."""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry

from somsd.store import (
    Appended,
    Connection,
    EventStore,
    StoreUnavailable,
)
from tests.store.helpers import StoreBackend, StreamStats, event, query, sample, write_lock_held

PRODUCERS = 64
APPENDS_EACH = 20


def committed(conn: Connection, seq: int) -> bool:
    return conn.execute("SELECT 1 FROM events WHERE seq = ?", (seq,)).fetchone() is not None


async def test_concurrent_producers_are_batched_and_acked_after_commit(
    store: EventStore, registry: CollectorRegistry, backend: StoreBackend
) -> None:
    """Many producers: fewer transactions than appends, and each acked event is already
    visible to a separate read-only connection (only committed data is)."""
    not_yet_visible: list[int] = []

    async def produce(n: int) -> None:
        for _ in range(APPENDS_EACH):
            result = await store.append(f"stream-{n % 8}", [event(producer=n)])
            assert isinstance(result, Appended)
            if not await store.read(partial(committed, seq=result.last_seq)):
                not_yet_visible.append(result.last_seq)

    async with trio.open_nursery() as producers:
        for n in range(PRODUCERS):
            producers.start_soon(produce, n)

    total = PRODUCERS * APPENDS_EACH
    assert not_yet_visible == []
    batches = sample(registry, "somsd_eventlog_batch_size_count")
    assert sample(registry, "somsd_eventlog_batch_size_sum") == total
    assert batches < total / 4, f"{batches} transactions for {total} appends: no group commit"
    assert sample(registry, "somsd_eventlog_append_seconds_count") == total
    assert backend.query("SELECT count(*) FROM events") == [(total,)]
    # Eight streams written by eight producers each: versions still run 1..n without gaps.
    assert backend.verify([StreamStats()]) == []


async def test_pipelined_submits_are_answered_in_order(store: EventStore) -> None:
    """One producer can queue many appends to a stream and collect the replies afterwards."""
    replies = [await store.submit("pipelined", [event(n=n)]) for n in range(300)]
    results = [await reply.wait() for reply in replies]
    assert [r.version for r in results if isinstance(r, Appended)] == list(range(1, 301))


async def test_batch_limit_caps_a_transaction(
    backend: StoreBackend, nursery: trio.Nursery, registry: CollectorRegistry
) -> None:
    """With 25 requests queued and batch_limit=10, the writer uses three transactions."""
    store = backend.store(batch_limit=10, registry=registry)
    replies = [await store.submit("s", [event()]) for _ in range(25)]
    await nursery.start(store.run)
    for reply in replies:
        await reply.wait()
    assert sample(registry, "somsd_eventlog_batch_size_count") == 3
    assert sample(registry, "somsd_eventlog_batch_size_bucket", {"le": "10.0"}) == 3


async def test_failed_batch_fails_every_request_and_the_store_carries_on(
    db_path: Path, nursery: trio.Nursery, registry: CollectorRegistry
) -> None:
    """A batch that cannot commit (write lock held elsewhere) fails all its replies with
    StoreUnavailable, writes nothing, and the next batch succeeds."""
    store = EventStore(db_path, registry=registry, lock_timeout=0.05)
    await nursery.start(store.run)
    with write_lock_held(db_path):
        replies = [await store.submit(f"s{n}", [event()]) for n in range(5)]
        for reply in replies:
            with pytest.raises(StoreUnavailable, match="database is locked") as caught:
                await reply.wait()
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert sample(registry, "somsd_eventlog_failed_batches_total") >= 1
    assert query(db_path, "SELECT count(*) FROM events") == [(0,)]

    assert isinstance(await store.append("s0", [event()]), Appended)
    assert query(db_path, "SELECT count(*) FROM events") == [(1,)]
