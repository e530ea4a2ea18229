"""Core actors of two daemons on one PostgreSQL store (`[cluster]`): each inventory applies the
other's stock events before it decides and decides again after a version conflict, so two
members racing for the last units never oversell; an order desk whose cached state another
member outdated reloads the order and decides the command again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest
import trio
from prometheus_client import CollectorRegistry

from actors.inventory import GetPositions, Inventory, ReserveStock
from actors.order_desk import OrderCommand, OrderDesk, RecordPayment
from somsd.domain.atp import SafetyStock, StockLine, StockRefused, StockReserved
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import OrderState
from somsd.domain.testing import sample_order
from somsd.projections import all_projections
from somsd.store.postgres import PostgresEventStore
from tests.inventory.support import report

STOCK = 25
RACERS = 12  # per member, each asking for 2 units, so 48 units are asked for 25


async def _member_store(nursery: trio.Nursery, dsn: str) -> PostgresEventStore:
    store = PostgresEventStore(dsn, all_projections(), registry=CollectorRegistry())
    await nursery.start(store.run)
    return store


Start = Callable[[str], Awaitable[Inventory]]


@pytest.fixture
def start_member_inventory(nursery: trio.Nursery) -> Start:
    async def start(dsn: str) -> Inventory:
        store = await _member_store(nursery, dsn)
        inventory = Inventory(
            store, safety=SafetyStock(), channels=(), registry=CollectorRegistry(), shared=True
        )
        await nursery.start(inventory.run)
        return inventory

    return start


async def test_two_members_racing_for_the_last_units_never_oversell(
    pg_dsn: str, start_member_inventory: Start
) -> None:
    a, b = await start_member_inventory(pg_dsn), await start_member_inventory(pg_dsn)
    await report(a, "wh-1", {"MUG-1": STOCK})  # counted on a: b must see it before deciding
    answers: list[StockReserved | StockRefused] = []

    async def reserve(inventory: Inventory, rid: str) -> None:
        answer: StockReserved | StockRefused = await inventory.ask(
            lambda reply: ReserveStock(rid, "wh-1", (StockLine("MUG-1", 2),), reply)
        )
        answers.append(answer)

    with trio.fail_after(30):
        async with trio.open_nursery() as racing:
            for n in range(RACERS):
                racing.start_soon(reserve, a, f"a-{n}")
                racing.start_soon(reserve, b, f"b-{n}")
    reserved = [x for x in answers if isinstance(x, StockReserved)]
    refused = [x for x in answers if isinstance(x, StockRefused)]
    assert len(reserved) == STOCK // 2, answers
    assert {x.reason for x in refused} == {"insufficient_stock"}
    for inventory in (a, b):  # each book, caught up, is the log's
        await report(inventory, "wh-2", {"OTHER": 1})  # any decision applies the others first
        [position] = await inventory.ask(lambda reply: GetPositions("MUG-1", reply))
        assert (position.on_hand, position.reserved) == (STOCK, 2 * len(reserved))


async def test_a_desk_with_an_outdated_order_reloads_it_and_decides_again(
    pg_dsn: str, nursery: trio.Nursery
) -> None:
    desks = []
    for _ in range(2):
        desk = OrderDesk(await _member_store(nursery, pg_dsn), OrderPolicy())
        await nursery.start(desk.run)
        desks.append(desk)
    a, b = desks
    order = sample_order(external_id="shared-1", payment_method="invoice", payment_status="pending")
    received = await a.receive("shop", order)

    async def pay(desk: OrderDesk, payment_id: str, amount: str) -> OrderState:
        state: OrderState = await desk.ask(
            lambda reply: OrderCommand(
                received.order_id,
                RecordPayment(Decimal(amount), payment_id),
                "user:test",
                reply,
            )
        )
        return state

    with trio.fail_after(15):
        await pay(b, "p-1", "1.00")  # b caches the order at version n
        await pay(a, "p-2", "2.00")  # a (cache from intake) appends: b's cache is outdated
        after = await pay(b, "p-3", "3.00")  # b conflicts, reloads, decides again
    assert after.payment_ids == {"p-1", "p-2", "p-3"}
