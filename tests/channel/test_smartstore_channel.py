"""A Smartstore channel against the real simulator over loopback HTTP: intake by polling, effects
back to the shop, stock sync with hide/show, reconciliation, bad data and auth failures."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import trio

from actors.inventory import ReportStock
from actors.order_desk import (
    CancelOrder,
    OrderCommand,
    RecordPayment,
    RecordShipment,
)
from adapters.smartstore import AccessDeniedReason, SmartstoreKnobs, SmartstoreSimulator
from adapters.smartstore.simulator import (
    CANCELLED,
    COMPLETE,
    DELIVERED,
    PAY_PAID,
    PICKUP_METHOD,
    SHIPPED,
)
from somsd.domain.atp import StockCount, StockReport
from somsd.domain.channel_sync import delivered_effect
from somsd.domain.events import LineQuantity
from somsd.domain.state import OrderState
from somsd.store import NewEvent, OutboxItem
from tests.adapters.conftest import Serve
from tests.channel.support import ShopWorld

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def shop(products: int = 30, **knobs: object) -> SmartstoreSimulator:
    sim = SmartstoreSimulator(knobs=SmartstoreKnobs(**knobs))  # type: ignore[arg-type]
    sim.seed_catalogue(products, combination_share=0.1, sold_out_share=0.0, seed=5)
    return sim


@pytest.fixture
def world(tmp_path: Path) -> ShopWorld:
    return ShopWorld(tmp_path, shop(max_top=20))


async def by_number(world: ShopWorld) -> dict[str, OrderState]:
    return {state.order.number: state for state in await world.orders()}


async def command(world: ShopWorld, order_id: str, action: object) -> OrderState:
    reply: OrderState = await world.desk.ask(
        lambda r: OrderCommand(order_id, action, "user:test", r)  # type: ignore[arg-type]
    )
    return reply


# -- intake --------------------------------------------------------------------------------------


async def test_orders_arrive_once_across_pages_and_shop_updates_are_applied(
    world: ShopWorld, nursery: trio.Nursery, serve: Serve
) -> None:
    async with world.running(nursery, serve):
        placed = [world.sim.place_order(paid=False, shipping="standard") for _ in range(75)]
        await world.poll()  # 75 orders, MaxTop 20: four pages in one window
        pages = [r for r in world.sim.requests if r.path.endswith("/Orders") and r.method == "GET"]
        assert len(pages) >= 4
        assert all(int(r.param("$top") or 0) <= 20 for r in pages if r.status == 200)
        orders = await by_number(world)
        assert sorted(orders) == sorted(o.order_number for o in placed)
        # Updated in the shop after intake: cancelled, paid.
        world.sim.cancel_in_shop(placed[3].id)
        world.sim.mark_paid_in_shop(placed[4].id)
        await world.poll()
        await world.poll()  # a second poll re-reads the overlap and changes nothing
        orders = await by_number(world)
        assert len(orders) == 75
        assert orders[placed[3].order_number].status == "canceled"
        paid = orders[placed[4].order_number]
        assert paid.paid == paid.order.payment.amount
        duplicates = world.registry.get_sample_value(
            "somsd_orders_duplicate_total", {"channel": "shop"}
        )
        assert duplicates is not None
        assert duplicates > 0  # the overlap re-read orders; the store recognised them
        # Nothing read from the shop was sent back to it.
        await world.drained()
        actions = [r.path for r in world.sim.requests if r.method == "POST"]
        assert not [p for p in actions if p.endswith(("/Cancel", "/PaymentPaid"))]


async def test_bad_shop_data_is_held_or_recorded_and_polling_goes_on(
    world: ShopWorld, nursery: trio.Nursery, serve: Serve
) -> None:
    async with world.running(nursery, serve):
        sku = next(iter(world.sim.seeded.truth)) if world.sim.seeded else "x"
        held = world.sim.place_order([(sku, 1)], paid=False, shipping="standard")
        world.sim.update_order(held.id, order_total=held.order_total + Decimal(5))
        broken = world.sim.place_order([(sku, 1)], paid=False, shipping="standard")
        world.sim.order_items[broken.id] = []  # no line left: cannot be represented
        fine = world.sim.place_order([(sku, 2)], paid=False, shipping="standard")
        await world.poll()
        orders = await by_number(world)
        assert orders[held.order_number].status == "on-hold"
        assert "totals_mismatch" in {r.code for r in orders[held.order_number].hold_reasons}
        assert fine.order_number in orders
        assert broken.order_number not in orders
        assert world.actor is not None
        rejected = await world.actor.rejected()
        assert [r.number for r in rejected] == [broken.order_number]
        assert (
            world.registry.get_sample_value(
                "somsd_channel_intake_rejected_total",
                {"channel": "shop", "reason": "unrepresentable"},
            )
            == 1
        )


async def test_auth_failure_is_counted_and_polling_recovers(
    world: ShopWorld, nursery: trio.Nursery, serve: Serve
) -> None:
    async with world.running(nursery, serve):
        world.sim.knobs.auth_failure = AccessDeniedReason.USER_DISABLED
        world.sim.place_order(paid=False, shipping="standard")
        with pytest.raises(Exception, match="disabled"):
            await world.poll()
        world.sim.knobs.auth_failure = None
        assert await world.poll() == 1
        assert len(await world.orders()) == 1


# -- effects -------------------------------------------------------------------------------------


async def test_ship_pay_cancel_reach_the_shop_once_even_when_answers_are_lost(
    world: ShopWorld, nursery: trio.Nursery, serve: Serve
) -> None:
    async with world.running(nursery, serve):
        to_ship = world.sim.place_order(paid=False, shipping="standard")
        to_cancel = world.sim.place_order(paid=False, shipping="standard")
        await world.poll()
        orders = await by_number(world)
        shipped_state = orders[to_ship.order_number]
        world.sim.knobs.lose_next = 3  # the shop applies, then drops the answers
        await command(
            world,
            shipped_state.order_id,
            RecordPayment(shipped_state.order.payment.amount, "pay-1"),
        )
        await command(
            world,
            shipped_state.order_id,
            RecordShipment(
                tuple(
                    LineQuantity(index, line.quantity)
                    for index, line in enumerate(shipped_state.order.lines)
                ),
                "ful-1",
                tracking_number="00340434161234567890",
            ),
        )
        await command(world, orders[to_cancel.order_number].order_id, CancelOrder("customer"))
        await world.drained()
        shipments = world.sim.shipments_of(to_ship.id)
        assert len(shipments) == 1
        assert shipments[0].tracking_number == "00340434161234567890"
        assert world.sim.orders[to_ship.id].shipping_status_id == SHIPPED
        assert world.sim.orders[to_ship.id].payment_status_id == PAY_PAID
        assert world.sim.orders[to_cancel.id].order_status_id == CANCELLED
        assert (await world.store.outbox_counts()).dead == {}
        dropped = [r for r in world.sim.requests if r.status is None]
        assert len(dropped) == 3  # applied in the shop, answer lost, retried without doubling
        payments = [r for r in world.sim.requests if r.path.endswith("/PaymentPaid")]
        assert len(payments) >= 1
        # The parcel arrives (the fulfilment desk writes this effect with its delivered event).
        shipped = (await by_number(world))[to_ship.order_number]
        effect = delivered_effect(shipped, "ful-1")
        world.sim.knobs.lose_next = 1
        await world.store.append(
            "test-delivered",
            [NewEvent("test", b"{}")],
            outbox=[OutboxItem("channel/shop", msgspec.json.encode(effect), effect.key)],
        )
        world.dispatcher.wake()
        await world.drained()
        [parcel] = world.sim.shipments_of(to_ship.id)
        assert parcel.delivery_date_utc is not None
        assert world.sim.orders[to_ship.id].shipping_status_id == DELIVERED
        assert world.sim.orders[to_ship.id].order_status_id == COMPLETE  # paid and delivered


# -- stock ---------------------------------------------------------------------------------------


async def test_stock_converges_with_errors_and_hides_only_what_somsd_may(
    tmp_path: Path, nursery: trio.Nursery, serve: Serve
) -> None:
    sim = shop(40, error_rate=0.2)
    assert sim.seeded is not None
    world = ShopWorld(tmp_path, sim)
    skus = sorted(sim.seeded.truth)
    merchant_hidden = next(
        s for s in skus if s not in sim.seeded.combination_skus and sim.product_by_sku(s)
    )
    async with world.running(nursery, serve):
        assert world.inventory is not None
        # The merchant takes one product down by hand.
        product = sim.product_by_sku(merchant_hidden)
        assert product is not None
        sim.products[product.id] = msgspec.structs.replace(product, published=False)

        async def report(counts: dict[str, int]) -> None:
            assert world.inventory is not None
            stock = StockReport(
                "wh", datetime.now(UTC), tuple(StockCount(s, n) for s, n in counts.items())
            )
            await world.inventory.ask(lambda r: ReportStock(stock, r))
            await trio.sleep(0.2)  # the debounce
            await world.drained(budget=30)

        counts = {sku: 1 + (index * 7) % 13 for index, sku in enumerate(skus)}
        await report(counts)
        sold_out = {sku: 0 for sku in skus[::3]} | {merchant_hidden: 0}
        await report(sold_out)
        for sku in sold_out:
            product = sim.product_by_sku(sku)
            if product is not None:
                assert not product.published, sku
        restock = dict.fromkeys(sold_out, 5)
        await report(restock)
        final = counts | restock
        for sku, want in final.items():
            assert sim.stock_of(sku) == want, sku
        for sku in restock:
            product = sim.product_by_sku(sku)
            if product is None or sku == merchant_hidden:
                continue
            assert product.published, sku
        assert any(r.status == 500 for r in sim.requests)  # the errors did happen
        merchant = sim.product_by_sku(merchant_hidden)
        assert merchant is not None
        assert not merchant.published


# -- reconciliation ------------------------------------------------------------------------------


async def test_reconciliation_counts_the_seeded_drift_and_fixes_it(
    tmp_path: Path, nursery: trio.Nursery, serve: Serve
) -> None:
    sim = SmartstoreSimulator()
    seeded = sim.seed_catalogue(
        300,
        combination_share=0.1,
        wrongly_unpublished=12,
        wrongly_shown=7,
        stock_drift=9,
        unknown_in_shop=3,
        missing_in_shop=4,
        seed=11,
    )
    world = ShopWorld(tmp_path, sim)
    async with world.running(nursery, serve, sync_stock=False) as actor:
        assert world.inventory is not None
        report = StockReport("wh", T0, tuple(StockCount(s, n) for s, n in seeded.truth.items()))
        await world.inventory.ask(lambda r: ReportStock(report, r))
        before = {p.id: p for p in sim.products.values()}
        dry = await actor.reconcile(world.driver, dry_run=True)
        assert dry.counts["wrongly_hidden"] == 12
        assert set(dry.report.wrongly_hidden) == seeded.wrongly_unpublished
        assert set(dry.report.wrongly_shown) == seeded.wrongly_shown
        # Wrongly shown ones were seeded with stock 0, so they are stock-correct.
        assert set(dry.report.stock_corrected) == set(seeded.stock_drift)
        assert set(dry.report.unknown_in_shop) == seeded.unknown_in_shop
        assert set(dry.report.missing_in_shop) == seeded.missing_in_shop
        assert {p.id: p for p in sim.products.values()} == before  # the dry run changed nothing
        done = await actor.reconcile(world.driver, dry_run=False)
        assert done.counts == dry.counts
        await world.drained()
        again = await actor.reconcile(world.driver, dry_run=True)
        assert again.counts["wrongly_hidden"] == 0
        assert again.counts["wrongly_shown"] == 0
        assert again.counts["stock_corrected"] == 0


async def test_shop_pickup_methods_go_to_the_configured_store_or_are_held(
    world: ShopWorld, nursery: trio.Nursery, serve: Serve
) -> None:
    mapped = {PICKUP_METHOD: "store-essen"}
    async with world.running(nursery, serve, pickup_locations=mapped):
        sku = next(iter(world.sim.seeded.truth)) if world.sim.seeded else "x"
        known = world.sim.place_order([(sku, 1)], paid=True, shipping="pickup")
        other = world.sim.place_order([(sku, 1)], paid=True, shipping="pickup")
        world.sim.update_order(other.id, shipping_method="Abholung Filiale Nord")
        await world.poll()
        orders = await by_number(world)
        collect = orders[known.order_number]
        assert collect.order.shipping.method == "pickup"
        assert collect.order.shipping.pickup_location == "store-essen"
        assert collect.status != "on-hold"
        unknown = orders[other.order_number]
        assert unknown.status == "on-hold"
        assert "pickup_store_unknown" in {r.code for r in unknown.hold_reasons}
