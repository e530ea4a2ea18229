"""Appending: positions, optimistic concurrency, idempotency, bad input, per-request failure."""

from __future__ import annotations

import msgspec
import pytest
import trio
from prometheus_client import CollectorRegistry

from somsd.store import (
    Appended,
    Duplicate,
    EventStore,
    IdempotencyKey,
    NewEvent,
    OutboxItem,
    RequestFailed,
    VersionConflict,
)
from tests.store.helpers import T0, Clock, StoreBackend, StreamStats, event, sample


class OrderPlaced(msgspec.Struct, frozen=True):
    order: str
    total: str


async def test_append_reports_positions_and_reads_back(store: EventStore) -> None:
    """An append returns its seqs and the new version; reads return the events as written."""
    placed = NewEvent(
        "OrderPlaced", msgspec.json.encode(OrderPlaced("A-1", "19.99")), {"actor": "desk"}
    )
    result = await store.append("order-A-1", [placed, event("OrderPaid")])
    assert result == Appended(stream="order-A-1", first_seq=1, last_seq=2, version=2)

    second = await store.append("order-A-2", [event()])
    assert second == Appended(stream="order-A-2", first_seq=3, last_seq=3, version=1)

    stored = await store.read_stream("order-A-1")
    assert [(e.seq, e.version, e.type) for e in stored] == [
        (1, 1, "OrderPlaced"),
        (2, 2, "OrderPaid"),
    ]
    assert stored[0].decode(OrderPlaced) == OrderPlaced("A-1", "19.99")
    assert stored[0].metadata == {"actor": "desk"}
    assert stored[1].metadata == {}
    assert stored[0].recorded_at == T0
    assert [e.seq for e in await store.read_all(after_seq=1, limit=10)] == [2, 3]
    assert [e.version for e in await store.read_stream("order-A-1", after_version=1)] == [2]
    assert await store.stream_version("order-A-1") == 2
    assert await store.stream_version("never-written") == 0


async def test_expected_version_guards_the_stream(store: EventStore) -> None:
    """0 means "new stream"; a stale expectation raises VersionConflict and writes nothing."""
    assert (await store.append("s", [event()], expected_version=0)).version == 1
    assert (await store.append("s", [event()], expected_version=1)).version == 2

    with pytest.raises(VersionConflict) as caught:
        await store.append("s", [event()], expected_version=1)
    assert (caught.value.stream, caught.value.expected, caught.value.actual) == ("s", 1, 2)
    assert await store.stream_version("s") == 2


async def test_conflict_fails_only_its_request_in_a_shared_batch(
    backend: StoreBackend, registry: CollectorRegistry, nursery: trio.Nursery
) -> None:
    """Three appends in one transaction: the conflicting one fails, its neighbours commit."""
    store = backend.store([StreamStats()], registry=registry)
    # Queued before the writer starts, so its first batch holds all three.
    first = await store.submit("s", [event("A")], expected_version=0)
    clash = await store.submit("s", [event("B")], expected_version=0)
    other = await store.submit("t", [event("C")], expected_version=0)
    await nursery.start(store.run)

    assert (await first.wait()).version == 1
    with pytest.raises(VersionConflict):
        await clash.wait()
    assert (await other.wait()).version == 1
    assert sample(registry, "somsd_eventlog_batch_size_count") == 1
    assert sample(registry, "somsd_eventlog_batch_size_sum") == 3
    assert [e.type for e in await store.read_all()] == ["A", "C"]


async def test_redelivered_message_is_acknowledged_as_duplicate(
    store: EventStore, backend: StoreBackend
) -> None:
    """A seen idempotency key returns Duplicate and writes no event and no outbox entry."""
    key = IdempotencyKey("smartstore/shop", "order 1042")
    original = await store.append(
        "order-1042",
        [event("OrderReceived"), event("OrderAccepted")],
        outbox=[OutboxItem("erp", b"{}", "erp:order-1042")],
        idempotency=key,
    )
    assert isinstance(original, Appended)

    again = await store.append(
        "order-1042-redelivered",
        [event("OrderReceived")],
        outbox=[OutboxItem("erp", b"{}", "erp:order-1042-again")],
        idempotency=key,
    )
    assert again == Duplicate(stream="order-1042", first_seq=original.first_seq)
    assert backend.query("SELECT count(*) FROM events") == [(2,)]
    assert backend.query("SELECT count(*) FROM outbox") == [(1,)]
    assert backend.query("SELECT stream, first_seq FROM idempotency") == [
        ("order-1042", original.first_seq)
    ]


async def test_identical_keys_racing_in_one_batch_write_once(
    backend: StoreBackend, nursery: trio.Nursery, registry: CollectorRegistry
) -> None:
    """Two deliveries of one order in the same transaction: one Appended, one Duplicate."""
    store = backend.store(registry=registry)
    key = IdempotencyKey("webhook/shop", "77")
    replies = [await store.submit("order-77", [event()], idempotency=key) for _ in range(2)]
    await nursery.start(store.run)

    first, second = [await reply.wait() for reply in replies]
    assert isinstance(first, Appended)
    assert second == Duplicate(stream="order-77", first_seq=first.first_seq)
    assert sample(registry, "somsd_eventlog_batch_size_count") == 1
    assert backend.query("SELECT count(*) FROM events") == [(1,)]


async def test_constraint_violation_rolls_back_only_that_append(
    backend: StoreBackend, nursery: trio.Nursery
) -> None:
    """A reused outbox key fails its append (events included); the batch's others commit."""
    store = backend.store([StreamStats()])
    ok = await store.submit("a", [event()], outbox=[OutboxItem("erp", b"1", "k")])
    reused = await store.submit("b", [event(), event()], outbox=[OutboxItem("erp", b"2", "k")])
    later = await store.submit("c", [event()])
    await nursery.start(store.run)

    assert isinstance(await ok.wait(), Appended)
    with pytest.raises(RequestFailed, match=r"(?i)append to stream 'b' was rolled back.*unique"):
        await reused.wait()
    assert isinstance(await later.wait(), Appended)
    assert backend.query("SELECT stream FROM events ORDER BY seq") == [("a",), ("c",)]
    assert backend.query("SELECT stream FROM stream_stats ORDER BY stream") == [("a",), ("c",)]
    assert backend.verify([StreamStats()]) == []


@pytest.mark.parametrize(
    ("stream", "events", "expected_version", "message"),
    [
        ("", [event()], None, "stream is empty"),
        ("s", [], None, "has no events"),
        ("s", [NewEvent("", b"{}")], None, "type is empty"),
        ("s", [NewEvent("T", b"{not json")], None, "payload is not JSON"),
        ("s", [event()], -1, "use 0 for a new stream"),
    ],
)
async def test_bad_append_is_refused_before_queueing(
    store: EventStore,
    stream: str,
    events: list[NewEvent],
    expected_version: int | None,
    message: str,
) -> None:
    """Malformed appends raise ValueError at the call, queue nothing, and the store carries on."""
    with pytest.raises(ValueError, match=message):
        await store.submit(stream, events, expected_version=expected_version)
    assert store.mailbox.depth == 0
    assert isinstance(await store.append("fine", [event()]), Appended)


async def test_recorded_at_is_the_commit_clock_in_utc(store: EventStore, clock: Clock) -> None:
    """Events carry the injected clock's reading of their batch, as aware UTC datetimes."""
    clock.at = T0.replace(microsecond=0)
    await store.append("s", [event()])
    [stored] = await store.read_stream("s")
    assert stored.recorded_at == clock.at
    assert stored.recorded_at.utcoffset() is not None
