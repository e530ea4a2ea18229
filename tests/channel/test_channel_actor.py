"""The generic channel actor on a real store, desk, inventory and outbox dispatcher.

The shop here is an in-process `ShopDriver` (the actor's own seam, no HTTP): it serves orders
from a list with keyset paging and records every outbox entry handed to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio
from prometheus_client import CollectorRegistry

from actors.channel import (
    DRIVERS,
    ChannelActor,
    ChannelMetrics,
    ShopOrder,
    ShopOrderPage,
    fulfilment_effects_for,
    order_effects_for,
)
from actors.inventory import Inventory, ReportStock, channel_stock_policies
from actors.order_desk import OrderCommand, OrderDesk, RecordPayment
from actors.outbox import OutboxDispatcher
from somsd.config import ChannelConfig, Duration
from somsd.domain.atp import SafetyStock, StockCount, StockReport
from somsd.domain.channel_sync import ShopItem
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import OrderState
from somsd.domain.testing import sample_order
from somsd.projections import all_projections
from somsd.projections.fulfilments import FulfilmentProgressed, FulfilmentState
from somsd.projections.orders import decode_state, fetch_state, list_orders
from somsd.store import EventStore, OutboxEntry

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class ListShop:
    """Orders sorted by (updated, id), served `page_size` at a time."""

    def __init__(self, page_size: int = 7) -> None:
        self.orders: dict[int, ShopOrder] = {}
        self.page_size = page_size
        self.delivered: list[OutboxEntry] = []
        self.items: list[ShopItem] = []
        self.arrived = trio.Event()

    def place(self, shop_id: int, at: datetime, **changes: object) -> None:
        order = msgspec.structs.replace(sample_order(), external_id=f"guid-{shop_id}")
        payment = msgspec.structs.replace(order.payment, method="invoice", status="pending")
        order = msgspec.structs.replace(order, payment=payment, number=str(shop_id))
        self.orders[shop_id] = ShopOrder(
            key=f"guid-{shop_id}", shop_id=shop_id, number=str(shop_id), updated_at=at, order=order
        )
        if changes:
            self.update(shop_id, at, **changes)

    def update(self, shop_id: int, at: datetime, **changes: object) -> None:
        self.orders[shop_id] = msgspec.structs.replace(
            self.orders[shop_id], updated_at=at, **changes
        )

    async def orders_since(
        self, updated_from: datetime, after: tuple[datetime, int] | None
    ) -> ShopOrderPage:
        rows = sorted(
            (o for o in self.orders.values() if o.updated_at >= updated_from),
            key=lambda o: (o.updated_at, o.shop_id),
        )
        if after is not None:
            rows = [o for o in rows if (o.updated_at, o.shop_id) > after]
        page = rows[: self.page_size]
        return ShopOrderPage(orders=tuple(page), has_more=len(rows) > self.page_size)

    async def deliver(self, entry: OutboxEntry) -> None:
        self.delivered.append(entry)
        self.arrived.set()

    async def catalogue(self) -> AsyncIterator[Sequence[ShopItem]]:
        for start in range(0, len(self.items), 5):
            yield self.items[start : start + 5]


def section(**changes: object) -> ChannelConfig:
    base = ChannelConfig(
        name="shop",
        kind="smartstore",
        url="http://127.0.0.1:1",
        public_key="k",
        poll_interval=Duration("1h"),
        poll_overlap=Duration("1m"),
    )
    return msgspec.structs.replace(base, **changes)


class World:
    def __init__(self, tmp_path: Path, shop: ListShop) -> None:
        self.registry = CollectorRegistry()
        self.store = EventStore(tmp_path / "somsd.db", all_projections(), registry=self.registry)
        self.desk = OrderDesk(self.store, OrderPolicy(), registry=self.registry)
        channels = {"shop": section(locations=("wh",))}
        self.desk.effects = order_effects_for(lambda: channels)
        self.inventory = Inventory(
            self.store,
            safety=SafetyStock(),
            channels=channel_stock_policies(channels.values()),
            registry=self.registry,
        )
        self.dispatcher = OutboxDispatcher(self.store, registry=self.registry, poll_interval=0.05)
        self.shop = shop
        self.metrics = ChannelMetrics(self.registry)

    @asynccontextmanager
    async def _driver(self, actor: ChannelActor) -> AsyncIterator[ListShop]:
        yield self.shop

    def actor(self) -> ChannelActor:
        return ChannelActor(
            section(),
            store=self.store,
            dispatcher=self.dispatcher,
            desk=self.desk,
            inventory=self.inventory,
            driver=self._driver,
            metrics=self.metrics,
        )

    async def orders(self) -> list[OrderState]:
        summaries = await self.store.read(partial(list_orders, limit=10_000))
        states = []
        for summary in summaries:
            blob = await self.store.read(partial(fetch_state, order_id=summary.order_id))
            assert blob is not None
            states.append(decode_state(blob))
        return states


@pytest.fixture
async def world(nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    world = World(tmp_path, ListShop())
    monkeypatch.setitem(DRIVERS, "smartstore", world._driver)
    await nursery.start(world.store.run)
    await nursery.start(world.desk.run)
    await nursery.start(world.inventory.run)
    await nursery.start(world.dispatcher.run)
    return world


async def test_polling_takes_every_order_once_and_applies_shop_updates(world: World) -> None:
    for shop_id in range(1, 31):  # 30 orders, pages of 7
        world.shop.place(shop_id, T0 + timedelta(seconds=shop_id))
    actor = world.actor()
    await actor._load_watermark()
    assert await actor.poll_once(world.shop) == 30
    assert actor.watermark is not None
    assert actor.watermark.shop_id == 30
    # The shop cancels one and marks another paid; a new actor (a restart) re-reads the overlap.
    later = T0 + timedelta(seconds=40)
    world.shop.update(3, later, cancelled=True)
    world.shop.update(4, later, paid=True)
    restarted = world.actor()
    await restarted._load_watermark()
    assert restarted.watermark == actor.watermark
    await restarted.poll_once(world.shop)
    states = {s.order.external_id: s for s in await world.orders()}
    assert len(states) == 30
    assert states["guid-3"].status == "canceled"
    assert states["guid-4"].paid == states["guid-4"].order.payment.amount > 0
    # What came from the shop is not sent back to it (nobody delivers here: all still pending).
    pending = await world.store.due_outbox(limit=1000, now=T0 + timedelta(days=365))
    kinds = [msgspec.json.decode(e.payload)["kind"] for e in pending]
    assert "cancel" not in kinds
    assert "payment_paid" not in kinds


async def test_unrepresentable_orders_are_recorded_once_and_the_poll_moves_on(
    world: World,
) -> None:
    world.shop.place(1, T0)
    world.shop.place(2, T0 + timedelta(seconds=1), order=None, rejected="unknown_country")
    world.shop.place(3, T0 + timedelta(seconds=2))
    actor = world.actor()
    await actor._load_watermark()
    await actor.poll_once(world.shop)
    again = world.actor()  # a restart re-reads the overlap and records nothing new
    await again._load_watermark()
    await again.poll_once(world.shop)
    rejected = await actor.rejected()
    assert [(r.shop_id, r.reason) for r in rejected] == [(2, "unknown_country")]
    assert len(await world.orders()) == 2
    value = world.registry.get_sample_value(
        "somsd_channel_intake_rejected_total", {"channel": "shop", "reason": "unknown_country"}
    )
    assert value == 1


async def test_payment_in_somsd_is_sent_to_the_shop_once(world: World) -> None:
    world.shop.place(1, T0)
    actor = world.actor()
    await actor._load_watermark()
    await actor.poll_once(world.shop)
    [state] = await world.orders()
    world.dispatcher.register("channel/shop", world.shop.deliver)
    await world.desk.ask(
        lambda reply: OrderCommand(
            state.order_id, RecordPayment(Decimal("5.00"), "p-1"), "user:test", reply
        )
    )
    with trio.fail_after(5):
        await world.shop.arrived.wait()
    effects = [msgspec.json.decode(e.payload) for e in world.shop.delivered]
    assert [(e["kind"], e["external_id"]) for e in effects] == [("payment_paid", "guid-1")]


async def test_reconciliation_reports_the_drift_and_a_dry_run_sends_nothing(
    world: World,
) -> None:
    await world.inventory.ask(
        lambda reply: ReportStock(
            StockReport("wh", T0, (StockCount("A", 5), StockCount("B", 0), StockCount("C", 2))),
            reply,
        )
    )
    world.shop.items = [
        ShopItem(sku="A", kind="product", id=1, product_id=1, stock=5, shown=False),
        ShopItem(sku="B", kind="product", id=2, product_id=2, stock=3, shown=True),
        ShopItem(sku="X", kind="product", id=3, product_id=3, stock=1, shown=True),
    ]
    actor = world.actor()
    dry = await actor.reconcile(world.shop, dry_run=True)
    assert dry.counts == {
        "checked": 3,
        "wrongly_hidden": 1,
        "wrongly_shown": 1,
        "stock_corrected": 1,
        "unknown_in_shop": 1,
        "missing_in_shop": 1,
    }
    assert (await world.store.outbox_counts()).pending == {}
    done = await actor.reconcile(world.shop, dry_run=False)
    assert done.report.missing_in_shop == ("C",)
    assert (await world.store.outbox_counts()).pending == {"channel/shop/stock": 2}
    again = world.actor()
    await again._load_watermark()
    assert again.last_report == done


async def test_a_delivered_parcel_becomes_the_shops_deliver_effect(world: World) -> None:
    world.shop.place(1, T0)
    actor = world.actor()
    await actor._load_watermark()
    await actor.poll_once(world.shop)
    [state] = await world.orders()
    effects = fulfilment_effects_for(world.store, lambda: {"shop": section()})
    fulfilment = FulfilmentState(
        fulfilment_id="ful-9",
        order_id=state.order_id,
        order_number=state.order.number,
        location="wh",
        kind="ship",
        state="delivered",
        lines=(),
        reserved_lines=(),
        version=5,
        created_at=T0,
        updated_at=T0,
    )
    delivered = FulfilmentProgressed(at=T0, actor="fulfilments", state="delivered")
    [item] = await effects(fulfilment, [delivered])
    payload = msgspec.json.decode(item.payload)
    assert (item.target, payload["kind"], payload["shipment_id"]) == (
        "channel/shop",
        "deliver",
        "ful-9",
    )
    packed = FulfilmentProgressed(at=T0, actor="fulfilments", state="packed")
    assert await effects(fulfilment, [packed]) == []


async def test_reconcile_interval_reconciles_on_schedule_and_survives_a_failing_run(
    world: World, nursery: trio.Nursery
) -> None:
    """With `reconcile_interval` the actor reconciles by itself, again after a run that failed."""
    runs: trio.MemorySendChannel[int]
    runs, finished = trio.open_memory_channel[int](10)
    calls = 0

    async def catalogue() -> AsyncIterator[Sequence[ShopItem]]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("shop fell over mid-catalogue")
        yield [ShopItem(sku="A", kind="product", id=1, product_id=1, stock=0, shown=False)]
        await runs.send(calls)

    world.shop.catalogue = catalogue  # type: ignore[method-assign]
    actor = ChannelActor(
        section(reconcile_interval=Duration("200ms")),
        store=world.store,
        dispatcher=world.dispatcher,
        desk=world.desk,
        inventory=world.inventory,
        driver=world._driver,
        metrics=world.metrics,
    )
    await nursery.start(actor.run)
    with trio.fail_after(20):
        assert await finished.receive() == 1
        assert await finished.receive() == 3  # the second run failed; the schedule went on
    assert actor.last_report is not None
    assert actor.last_report.counts["checked"] == 1
    assert not actor.last_report.dry_run
