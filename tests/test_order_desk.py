"""The order desk on a real event store: pipelined intake, serialised changes per order."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import trio
from prometheus_client import CollectorRegistry

from actors.order_desk import (
    IssueInvoice,
    OrderCommand,
    OrderDesk,
    OrderNotFound,
    Received,
    ReceiveOrder,
    RecordPayment,
)
from somsd.actor import Reply
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import OrderState
from somsd.domain.testing import sample_order
from somsd.projections import all_projections
from somsd.store import EventStore, verify_database


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def desk(nursery: trio.Nursery, tmp_path: Path, registry: CollectorRegistry) -> OrderDesk:
    store = EventStore(tmp_path / "somsd.db", all_projections(), registry=registry)
    await nursery.start(store.run)
    desk = OrderDesk(store, OrderPolicy(), registry=registry)
    await nursery.start(desk.run)
    return desk


def unpaid_invoice_order(external_id: str) -> ReceiveOrder:
    order = sample_order()
    payment = msgspec.structs.replace(order.payment, method="invoice", status="pending")
    order = msgspec.structs.replace(order, external_id=external_id, payment=payment)
    return ReceiveOrder("shop", order, Reply())


async def receive(desk: OrderDesk, message: ReceiveOrder) -> Received:
    await desk.mailbox.send(message)
    return await message.reply.wait()


async def command(desk: OrderDesk, order_id: str, action: object) -> OrderState:
    reply: Reply[OrderState] = Reply()
    await desk.mailbox.send(OrderCommand(order_id, action, "user:test", reply))  # type: ignore[arg-type]
    return await reply.wait()


async def test_concurrent_intake_shares_commits_and_answers_each_after_its_own(
    desk: OrderDesk, registry: CollectorRegistry
) -> None:
    """200 orders sent at once are committed in far fewer transactions; each is answered."""
    messages = [unpaid_invoice_order(f"ext-{i}") for i in range(200)]
    results: list[Received] = []
    async with trio.open_nursery() as nursery:
        for message in messages:
            nursery.start_soon(lambda m=message: _collect(desk, m, results))
    assert len({r.order_id for r in results}) == 200
    assert not any(r.duplicate for r in results)
    transactions = registry.get_sample_value("somsd_eventlog_batch_size_count")
    assert transactions is not None
    assert transactions < 100  # group commit: many appends per transaction
    assert verify_database(desk.store.path, all_projections()) == []


async def _collect(desk: OrderDesk, message: ReceiveOrder, results: list[Received]) -> None:
    results.append(await receive(desk, message))


async def test_racing_redeliveries_yield_one_order(desk: OrderDesk) -> None:
    """Ten deliveries of one external id at once: one order, nine duplicates, all the same id."""
    results: list[Received] = []
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(_collect, desk, unpaid_invoice_order("same"), results)
    assert len({r.order_id for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * 9


async def test_concurrent_changes_to_one_order_are_serialised(desk: OrderDesk) -> None:
    """Concurrent payments on one order all commit in turn; none hits a version conflict."""
    received = await receive(desk, unpaid_invoice_order("o-1"))
    states: list[OrderState] = []

    async def pay(n: int) -> None:
        action = RecordPayment(Decimal("1.00"), f"pay-{n}")
        states.append(await command(desk, received.order_id, action))

    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(pay, n)
    assert max(s.paid for s in states) == Decimal("10.00")
    assert sorted(s.version for s in states) == list(
        range(states[0].version, states[0].version + 10)
    )


async def test_invoices_issued_concurrently_get_gapless_numbers(desk: OrderDesk) -> None:
    """Invoices for many orders issued at once are numbered 1..n without a gap or a double."""
    orders = [await receive(desk, unpaid_invoice_order(f"inv-{i}")) for i in range(30)]
    states: list[OrderState] = []

    async def issue(order_id: str) -> None:
        states.append(await command(desk, order_id, IssueInvoice()))

    async with trio.open_nursery() as nursery:
        for received in orders:
            nursery.start_soon(issue, received.order_id)
    numbers = sorted(s.invoice.number for s in states if s.invoice is not None)
    year = numbers[0].split("-")[1]
    assert numbers == [f"RE-{year}-{n:06d}" for n in range(1, 31)]


async def test_unknown_order_is_refused(desk: OrderDesk) -> None:
    with pytest.raises(OrderNotFound):
        await command(desk, "o-missing", IssueInvoice())


def test_new_ids_stay_unique_and_hex_across_random_pool_refills() -> None:
    from actors.order_desk import new_id

    ids = [new_id("o") for _ in range(3 * 4096 // 8 + 7)]  # several 4 KiB draws
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 17 and int(i[1:], 16) >= 0 for i in ids)
