"""The inventory actor on a real event store: reservations, reports, balances, restarts.

These tests wait for commits, which happen in the store's worker thread, so they run on the
real clock (autojump would jump virtual time while a commit is in a thread); none of them
sleeps, they only wait for answers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry

from actors.inventory import (
    INVENTORY_STREAM,
    GetAvailability,
    GetReservation,
    Inventory,
    InventoryCommitFailed,
    RejectStock,
    ReserveStock,
    ShipStock,
)
from somsd.actor import Reply, ReplyError
from somsd.domain.atp import (
    Reservation,
    ReservationRejected,
    SafetyStock,
    StockLine,
    StockRefused,
    StockReserved,
    StockShipped,
    rebuild_stock_book,
)
from somsd.projections.stock import decode_stock_event, fetch_levels, fetch_reserved_lines
from somsd.store import EventStore, StoredEvent, verify_database
from tests.inventory.conftest import StartInventory
from tests.inventory.support import (
    T0,
    later,
    positions,
    projections,
    release,
    report,
    reserve,
    shop,
)


async def test_two_hundred_racing_reservations_take_exactly_the_stock(
    start_inventory: StartInventory, store: EventStore, registry: CollectorRegistry
) -> None:
    """200 concurrent one-unit reservations of a SKU with 25 units at 3 locations: 25 win."""
    inventory, _ = await start_inventory(channels=[shop("wh", "store-a", "store-b")])
    for location, units in (("wh", 10), ("store-a", 8), ("store-b", 7)):
        await report(inventory, location, {"MUG": units})
    locations = ("wh", "store-a", "store-b")
    results: list[StockReserved | StockRefused] = []

    async def one(n: int) -> None:
        results.append(await reserve(inventory, f"r{n}", locations[n % 3], MUG=1))

    async with trio.open_nursery() as nursery:
        for n in range(200):
            nursery.start_soon(one, n)

    reserved = [r for r in results if isinstance(r, StockReserved)]
    refused = [r for r in results if isinstance(r, StockRefused)]
    assert sum(line.quantity for r in reserved for line in r.lines) == 25
    assert len(refused) == 175
    assert {r.reason for r in refused} == {"insufficient_stock"}
    by_location = {p.location: p for p in await positions(inventory, "MUG")}
    assert {loc: (p.reserved, p.atp) for loc, p in by_location.items()} == {
        "wh": (10, 0),
        "store-a": (8, 0),
        "store-b": (7, 0),
    }
    assert (
        registry.get_sample_value("somsd_stock_reservations_total", {"outcome": "reserved"}) == 25
    )
    assert (
        registry.get_sample_value("somsd_stock_reservations_total", {"outcome": "refused"}) == 175
    )
    # Only the winners were written: three reports and 25 reservations, nothing for refusals.
    assert len(await store.read_stream(INVENTORY_STREAM)) == 3 + 25
    transactions = registry.get_sample_value("somsd_eventlog_batch_size_count")
    assert transactions is not None
    assert transactions < 3 + 25  # pipelined: reservations shared commits


async def test_stale_report_is_ignored_and_counted(
    start_inventory: StartInventory, store: EventStore, registry: CollectorRegistry
) -> None:
    """A count older than the one applied is left out, reported and counted; newer rows apply."""
    inventory, _ = await start_inventory()
    await report(inventory, "wh", {"MUG": 5}, as_of=later(10))

    decision = await report(inventory, "wh", {"MUG": 9, "CUP": 4}, as_of=later(5))

    assert [(s.sku, s.reported_as_of, s.newest_as_of) for s in decision.stale] == [
        ("MUG", later(5), later(10))
    ]
    assert decision.counted is not None
    assert [c.sku for c in decision.counted.counts] == ["CUP"]
    (mug,) = await positions(inventory, "MUG")
    assert (mug.on_hand, mug.as_of) == (5, later(10))
    # Wholly stale: nothing is written.
    all_stale = await report(inventory, "wh", {"MUG": 1}, as_of=later(1))
    assert all_stale.counted is None
    assert len(await store.read_stream(INVENTORY_STREAM)) == 2
    assert registry.get_sample_value("somsd_stock_reports_stale_total", {"location": "wh"}) == 2


async def test_reserve_ship_reject_release_balance_in_book_log_and_projection(
    start_inventory: StartInventory, store: EventStore
) -> None:
    """After a mix of every operation, the actor's book, a replay of the log and the stock
    projection hold the same on hand, reserved and count time everywhere."""
    inventory, _ = await start_inventory()
    await report(inventory, "wh", {"MUG": 20, "CUP": 6})
    await report(inventory, "store", {"MUG": 4})
    assert isinstance(await reserve(inventory, "a", "wh", MUG=5, CUP=2), StockReserved)
    assert isinstance(await reserve(inventory, "b", "wh", MUG=3), StockReserved)
    assert isinstance(await reserve(inventory, "c", "store", MUG=4), StockReserved)
    shipped: StockShipped | StockRefused = await inventory.ask(
        lambda reply: ShipStock("a", later(30), (StockLine("MUG", 5),), reply)
    )
    assert isinstance(shipped, StockShipped)
    rejected: ReservationRejected | StockRefused = await inventory.ask(
        lambda reply: RejectStock("c", "damaged", later(31), None, reply)
    )
    assert isinstance(rejected, ReservationRejected)
    assert rejected.written_off
    assert not isinstance(await release(inventory, "b", MUG=1), StockRefused)
    assert not isinstance(await release(inventory, "a"), StockRefused)  # the CUP line
    # A count after the shipment already includes it; one before it does not.
    await report(inventory, "wh", {"MUG": 16}, as_of=later(20))
    refused = await release(inventory, "nope")
    assert isinstance(refused, StockRefused)
    assert refused.reason == "unknown_reservation"

    stored = await store.read_stream(INVENTORY_STREAM)
    replayed = rebuild_stock_book(decode_stock_event(e.payload) for e in stored).snapshot()
    projected = await store.read(fetch_levels)
    actor = [p for sku in ("CUP", "MUG") for p in await positions(inventory, sku)]
    as_book = [
        (sku, loc, level.on_hand, level.reserved, level.as_of)
        for sku, ledger in sorted(replayed.levels.items())
        for loc, level in sorted(ledger.items())
    ]
    assert as_book == [(r.sku, r.location, r.on_hand, r.reserved, r.as_of) for r in projected]
    assert as_book == [(p.sku, p.location, p.on_hand, p.reserved, p.as_of) for p in actor]
    # The numbers themselves: MUG at wh counted 16 at :20, shipped 5 at :30 -> 11, 2 reserved.
    assert ("MUG", "wh", 11, 2, later(20)) in as_book
    assert ("MUG", "store", 0, 0, T0) in as_book  # 4 written off as damaged
    assert await store.read(fetch_reserved_lines) == {"b": {"MUG": 2}}
    assert verify_database(store.path, projections()) == []


async def test_restart_rebuilds_the_same_book_and_keeps_reservations_open(
    start_inventory: StartInventory,
) -> None:
    """A restarted actor holds the same positions and settles reservations made before."""
    first, scope = await start_inventory(safety=SafetyStock(location_defaults={"wh": 2}))
    await report(first, "wh", {"MUG": 10, "CUP": 3})
    await reserve(first, "r1", "wh", MUG=4)
    await first.ask(lambda reply: ShipStock("r1", later(5), (StockLine("MUG", 1),), reply))
    before = [await positions(first, sku) for sku in ("MUG", "CUP")]
    scope.cancel()

    second, _ = await start_inventory(safety=SafetyStock(location_defaults={"wh": 2}))
    assert [await positions(second, sku) for sku in ("MUG", "CUP")] == before
    held: Reservation | None = await second.ask(lambda reply: GetReservation("r1", reply))
    assert held == Reservation("r1", "wh", (StockLine("MUG", 3),))
    released = await release(second, "r1")
    assert not isinstance(released, StockRefused)
    assert released.lines == (StockLine("MUG", 3),)
    assert await second.ask(lambda reply: GetReservation("r1", reply)) is None


async def test_availability_lists_positive_atp_after_safety_stock(
    start_inventory: StartInventory,
) -> None:
    """The router's view: per SKU, only locations with ATP above zero, safety stock taken off."""
    inventory, _ = await start_inventory(safety=SafetyStock(location_defaults={"store": 3}))
    await report(inventory, "wh", {"MUG": 5})
    await report(inventory, "store", {"MUG": 3, "CUP": 4})
    await reserve(inventory, "r", "wh", MUG=2)
    available: dict[str, dict[str, int]] = await inventory.ask(
        lambda reply: GetAvailability(("MUG", "CUP", "NONE"), reply)
    )
    assert available == {"MUG": {"wh": 3}, "CUP": {"store": 1}, "NONE": {}}


async def test_on_stock_added_is_called_when_a_channel_can_sell_more(
    start_inventory: StartInventory,
) -> None:
    """Restock, release and a declined rejection call the hook; reserving or an unsold
    location does not."""
    calls: list[frozenset[str]] = []
    inventory, _ = await start_inventory(channels=[shop("wh")], on_stock_added=calls.append)
    await report(inventory, "wh", {"MUG": 0})
    assert calls == []  # nothing to sell yet
    await report(inventory, "wh", {"MUG": 5, "CUP": 2}, as_of=later(1))
    assert calls == [frozenset({"MUG", "CUP"})]
    await reserve(inventory, "r", "wh", MUG=5)
    await report(inventory, "back-room", {"MUG": 50})  # no channel sells from here
    assert len(calls) == 1
    await release(inventory, "r", MUG=2)
    await inventory.ask(lambda reply: RejectStock("r", "declined", later(2), None, reply))
    assert calls[1:] == [frozenset({"MUG"}), frozenset({"MUG"})]


async def test_naive_times_are_refused_without_writing(
    start_inventory: StartInventory, store: EventStore
) -> None:
    """A ship time without a timezone is the caller's mistake: its reply fails, nothing else."""
    inventory, _ = await start_inventory()
    await report(inventory, "wh", {"MUG": 2})
    await reserve(inventory, "r", "wh", MUG=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        await inventory.ask(lambda reply: ShipStock("r", datetime(2026, 1, 1), None, reply))
    assert len(await store.read_stream(INVENTORY_STREAM)) == 2
    assert (await positions(inventory, "MUG"))[0].reserved == 1


class _RefuseReservation:
    """A projection that rejects the append of one reservation, as a broken disk would."""

    name = "refuse-reservation"
    tables: Sequence[str] = ("refuse_reservation",)
    ddl: Sequence[str] = ("CREATE TABLE refuse_reservation (x INTEGER)",)

    def __init__(self, reservation_id: str) -> None:
        self.marker = f'"reservation_id":"{reservation_id}"'.encode()

    def apply(self, conn: sqlite3.Connection, stored: StoredEvent) -> None:
        if self.marker in stored.payload:
            raise RuntimeError("refused by the test projection")


async def test_failed_append_crashes_the_actor_and_the_log_keeps_a_prefix(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """When one append fails, it and every change decided after it fail (their callers hear
    so), the actor crashes, and a restarted actor's book is exactly the log."""
    store = EventStore(tmp_path / "crash.db", [*projections(), _RefuseReservation("boom")])
    await nursery.start(store.run)
    inventory = Inventory(store, safety=SafetyStock(), channels=())
    crashed: list[BaseException] = []
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await inventory.run(task_status=task_status)
        except BaseException as exc:  # the crash is what this test looks at
            crashed.append(exc)
        stopped.set()

    await nursery.start(run)
    await report(inventory, "wh", {"MUG": 5})
    # Both queued before the actor runs again: "after" is decided on a book holding "boom".
    replies: dict[str, Reply[StockReserved | StockRefused]] = {"boom": Reply(), "after": Reply()}
    for rid, reply in replies.items():
        inventory.mailbox.send_nowait(ReserveStock(rid, "wh", (StockLine("MUG", 1),), reply))
    with trio.fail_after(5):
        for reply in replies.values():
            with pytest.raises(ReplyError, match="not stored"):
                await reply.wait()
        await stopped.wait()
    leaves = crashed[0].exceptions if isinstance(crashed[0], BaseExceptionGroup) else crashed
    assert leaves
    assert all(isinstance(leaf, InventoryCommitFailed) for leaf in leaves)

    again = Inventory(store, safety=SafetyStock(), channels=())
    await nursery.start(again.run)
    (mug,) = await positions(again, "MUG")
    assert (mug.on_hand, mug.reserved) == (5, 0)
    assert isinstance(await reserve(again, "later", "wh", MUG=5), StockReserved)


async def test_reservation_id_is_taken_once(start_inventory: StartInventory) -> None:
    """A redelivered reservation request is refused as a duplicate and takes nothing twice."""
    inventory, _ = await start_inventory()
    await report(inventory, "wh", {"MUG": 5})
    first, second = [await reserve(inventory, "r", "wh", MUG=2) for _ in range(2)]
    assert isinstance(first, StockReserved)
    assert isinstance(second, StockRefused)
    assert second.reason == "duplicate_reservation"
    assert (await positions(inventory, "MUG"))[0].reserved == 2


async def test_a_stopped_actor_still_answers_a_change_whose_append_was_queued(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Stopping with an append queued in the store: the caller gets the real outcome once
    the store writes it, not a "maybe"."""
    store = EventStore(tmp_path / "stop.db", projections())
    store_stopped = trio.Event()

    async def run_store(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with store_scope:
            await store.run(task_status=task_status)
        store_stopped.set()

    store_scope = trio.CancelScope()
    await nursery.start(run_store)
    inventory = Inventory(store, safety=SafetyStock(), channels=())
    inventory_scope = trio.CancelScope()

    async def run_inventory(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with inventory_scope:
            await inventory.run(task_status=task_status)

    await nursery.start(run_inventory)
    await report(inventory, "wh", {"MUG": 3})
    store_scope.cancel()  # appends now wait in the store's mailbox
    await store_stopped.wait()

    reply: Reply[StockReserved | StockRefused] = Reply()
    inventory.mailbox.send_nowait(ReserveStock("r", "wh", (StockLine("MUG", 1),), reply))
    await trio.testing.wait_all_tasks_blocked()
    assert store.mailbox.depth == 1  # decided and queued
    inventory_scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert not reply.done  # the stopped actor is still waiting for the store's answer

    await nursery.start(store.run)
    with trio.fail_after(2):
        assert isinstance(await reply.wait(), StockReserved)
    again = Inventory(store, safety=SafetyStock(), channels=())
    await nursery.start(again.run)
    assert (await positions(again, "MUG"))[0].reserved == 1
