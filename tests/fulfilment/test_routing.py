"""The router on a real store and inventory: decisions, reservations, backorders, capacity."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import msgspec
import trio

from actors.inventory import ReserveStock
from actors.order_desk import CancelOrder, ChangeStatus, ReleaseHold
from actors.router import routing_network, routing_policy
from somsd.domain.atp import StockLine, StockReserved
from somsd.domain.routing import Destination, RoutingRequest, route_order
from somsd.domain.routing import OrderLine as RoutedLine
from somsd.projections.fulfilments import (
    OrderRouted,
    PlannedFulfilment,
    backordered_orders,
    orders_today,
    routing_stream,
)
from somsd.store import NewEvent, utc_now
from tests.fulfilment.conftest import StartWorld
from tests.fulfilment.support import DORTMUND, MUNICH, default_config, location


async def test_order_goes_to_the_nearest_location_with_stock(start_world: StartWorld) -> None:
    """Munich and Dortmund have the mug; a Munich customer's order is reserved in Munich, and
    the stored decision explains why, location by location."""
    world = await start_world()
    await world.stock("wh-dortmund", MUG_1=5)
    await world.stock("wh-munich", MUG_1=5)
    order_id = await world.order("near", [("MUG-1", 2)], to=MUNICH)
    await world.routed()

    [fulfilment] = await world.fulfilments_of(order_id)
    assert (fulfilment.location, fulfilment.kind, fulfilment.state) == (
        "wh-munich",
        "ship",
        "requested",
    )
    assert [(line.sku, line.quantity) for line in fulfilment.lines] == [("MUG-1", 2)]
    munich = await world.position("MUG-1", "wh-munich")
    assert (munich.reserved, munich.atp) == (2, 3)

    detail = await world.detail(order_id)
    [record] = detail.fulfilment.routing
    assert (record.cause, record.applied, record.created) == (
        "order",
        True,
        (fulfilment.fulfilment_id,),
    )
    assessed = {c.location: c for c in record.decision.candidates}
    assert assessed["store-essen"].rejected == "no_stock"
    assert assessed["wh-munich"].selected
    assert assessed["wh-munich"].distance_km == 0.0
    assert assessed["wh-dortmund"].score is not None
    assert assessed["wh-dortmund"].score > assessed["wh-munich"].score  # type: ignore[operator]
    assert detail.fulfilment.backorder == ()
    assert detail.status == "pending"  # processing starts when a location accepts


async def test_two_hundred_orders_for_25_units_allocate_exactly_25(
    start_world: StartWorld,
) -> None:
    """Oversell: 200 one-unit orders arrive at once for a SKU with 25 units over three
    locations. Exactly 25 are reserved and 175 wait; a restock of 10 goes to the 10 orders that
    have waited longest."""
    world = await start_world()
    await world.stock("wh-dortmund", MUG_1=10)
    await world.stock("wh-munich", MUG_1=10)
    await world.stock("store-essen", MUG_1=5)
    async with trio.open_nursery() as nursery:
        for n in range(200):
            nursery.start_soon(partial(world.order, f"rush-{n}", [("MUG-1", 1)], to=DORTMUND))
    await world.routed()

    reserved = [
        await world.position("MUG-1", loc) for loc in ("wh-dortmund", "wh-munich", "store-essen")
    ]
    assert [p.reserved for p in reserved] == [10, 10, 5]
    assert all(p.atp == 0 for p in reserved)
    queue = await world.store.read(partial(backordered_orders, skus=["MUG-1"], limit=1000))
    assert len(queue) == 175
    allocated = await world.store.read(
        lambda conn: conn.execute("SELECT count(*) FROM fulfilments").fetchone()[0]
    )
    assert allocated == 25

    await world.stock("wh-dortmund", MUG_1=20)  # 10 more on the shelf
    await world.routed()
    oldest, rest = [order for _, order in queue[:10]], [order for _, order in queue[10:]]
    for order_id in oldest:
        detail = await world.detail(order_id)
        assert detail.fulfilment.backorder == ()
        [fulfilment] = detail.fulfilment.fulfilments
        assert fulfilment.location == "wh-dortmund"
        assert [r.cause for r in detail.fulfilment.routing] == ["order", "backorder"]
    still = await world.store.read(partial(backordered_orders, skus=["MUG-1"], limit=1000))
    assert [order for _, order in still] == rest
    assert (await world.position("MUG-1", "wh-dortmund")).reserved == 20


async def test_daily_capacity_sends_the_next_order_elsewhere_until_the_next_utc_day(
    start_world: StartWorld,
) -> None:
    """Dortmund takes two orders a day: the third goes to Munich with Dortmund's reason
    recorded; on the next UTC day Dortmund takes orders again."""
    config = default_config(
        location=(
            location("wh-dortmund", 51.51, 7.47, daily_capacity=2),
            location("wh-munich", 48.14, 11.58),
        )
    )
    world = await start_world(config)
    await world.stock("wh-dortmund", MUG_1=10)
    await world.stock("wh-munich", MUG_1=10)
    first = [await world.order(f"cap-{n}", to=DORTMUND) for n in range(3)]
    status = await world.routed()
    assert status.orders_today == {"wh-dortmund": 2, "wh-munich": 1}
    third = await world.detail(first[2])
    assert third.fulfilment.fulfilments[0].location == "wh-munich"
    dortmund = next(
        c for c in third.fulfilment.routing[0].decision.candidates if c.location == "wh-dortmund"
    )
    assert dortmund.rejected == "at_capacity"
    # The counts are the fulfilments table's, so a restarted router starts from the same.
    today = status.day.isoformat()
    assert await world.store.read(partial(orders_today, day=today)) == status.orders_today

    world.clock.offset = timedelta(days=1)  # type: ignore[attr-defined]
    next_day = await world.order("cap-next-day", to=DORTMUND)
    status = await world.routed()
    assert status.orders_today == {"wh-dortmund": 1}
    assert (await world.detail(next_day)).fulfilment.fulfilments[0].location == "wh-dortmund"


async def test_orders_accepted_while_the_router_was_down_are_routed_at_start(
    start_world: StartWorld, nursery: trio.Nursery
) -> None:
    """The hook's nudges are not the only record: a router starting later finds the unrouted
    orders in the projection and routes them."""
    world = await start_world(route=False)
    await world.stock("wh-munich", MUG_1=3)
    order_id = await world.order("early", to=MUNICH)
    assert await world.fulfilments_of(order_id) == []
    await world.start_router(nursery)
    await world.routed()
    [fulfilment] = await world.fulfilments_of(order_id)
    assert fulfilment.location == "wh-munich"


async def test_canceling_an_order_releases_its_reservations_and_drops_its_backorder(
    start_world: StartWorld,
) -> None:
    """An order partly allocated and partly backordered is canceled: its fulfilment is
    canceled, the units are on sale again, and it leaves the backorder queue."""
    world = await start_world()
    await world.stock("wh-munich", MUG_1=1)
    order_id = await world.order("cancel-me", [("MUG-1", 3)], to=MUNICH)
    await world.routed()
    assert (await world.detail(order_id)).fulfilment.backorder[0].quantity == 2

    await world.command(order_id, CancelOrder("customer changed their mind"))
    await world.routed()
    detail = await world.detail(order_id)
    assert [f.state for f in detail.fulfilment.fulfilments] == ["canceled"]
    assert detail.fulfilment.backorder == ()
    assert detail.fulfilment.closed
    munich = await world.position("MUG-1", "wh-munich")
    assert (munich.reserved, munich.atp) == (0, 1)
    assert await world.store.read(partial(backordered_orders, skus=None)) == []


def test_a_location_without_ships_to_ships_within_its_country() -> None:
    """`ships_to` left empty in the config means the location's own country, not nowhere."""
    config = default_config(location=(location("wh-x", 51.0, 7.0, ships_to=()),))
    request = RoutingRequest(
        order_id="o1",
        channel="shop",
        lines=(RoutedLine("MUG-1", 1),),
        destination=Destination("DE", "44135"),
    )
    availability = {"MUG-1": {"wh-x": 1}}
    decision = route_order(
        request, routing_network(config), availability, {}, routing_policy(config)
    )
    assert [a.location for a in decision.allocations] == ["wh-x"]
    abroad = msgspec.structs.replace(request, destination=Destination("FR", "75001"))
    decision = route_order(
        abroad, routing_network(config), availability, {}, routing_policy(config)
    )
    assert decision.candidates[0].rejected == "does_not_ship_to_country"


async def test_a_decision_interrupted_before_its_outcome_is_finished_at_start(
    start_world: StartWorld, nursery: trio.Nursery
) -> None:
    """The router stored a decision, reserved, and died: the next router reserves again (the
    inventory answers "already held"), creates the fulfilment and records the outcome, once."""
    world = await start_world(route=False)
    await world.stock("wh-munich", MUG_1=2)
    order_id = await world.order("crashed", to=MUNICH)
    request = RoutingRequest(
        order_id=order_id,
        channel="shop",
        lines=(RoutedLine("MUG-1", 1),),
        destination=Destination("DE", "80331"),
    )
    decision = route_order(
        request,
        routing_network(world.config),
        {"MUG-1": {"wh-munich": 2}},
        {},
        routing_policy(world.config),
    )
    fid = f"{order_id}-1"
    planned = PlannedFulfilment(
        fulfilment_id=fid, location="wh-munich", kind="ship", lines=(StockLine("MUG-1", 1),)
    )
    routed = OrderRouted(
        at=utc_now(),
        order_id=order_id,
        cause="order",
        lines=(StockLine("MUG-1", 1),),
        decision=decision,
        fulfilments=(planned,),
    )
    await world.store.append(
        routing_stream(order_id),
        [NewEvent("OrderRouted", msgspec.json.encode(routed))],
        expected_version=0,
    )
    held = await world.inventory.ask(
        lambda reply: ReserveStock(fid, "wh-munich", (StockLine("MUG-1", 1),), reply)
    )
    assert isinstance(held, StockReserved)

    await world.start_router(nursery)
    await world.routed()
    detail = await world.detail(order_id)
    [record] = detail.fulfilment.routing
    assert (record.applied, record.created) == (True, (fid,))
    assert [f.id for f in detail.fulfilment.fulfilments] == [fid]
    assert (await world.position("MUG-1", "wh-munich")).reserved == 1


async def test_a_shipment_of_a_held_order_is_recorded_when_the_hold_is_released(
    start_world: StartWorld,
) -> None:
    """The warehouse ships while an operator holds the order: the shipment waits, and the
    release records it (and completes the order)."""
    world = await start_world()
    await world.stock("wh-munich", MUG_1=1)
    order_id = await world.order("held", to=MUNICH)
    await world.routed()
    [fulfilment] = await world.fulfilments_of(order_id)
    await world.command(order_id, ChangeStatus("on-hold", "address check"))
    view = await world.fulfilments.step(
        fulfilment.fulfilment_id, "ship", actor="user:wh", carrier="dhl", tracking_number="1"
    )
    assert (view.state, view.settled) == ("shipped", False)
    assert (await world.detail(order_id)).lines[0].shipped == 0

    await world.command(order_id, ReleaseHold("address fine"))
    await world.routed()
    detail = await world.detail(order_id)
    assert (detail.lines[0].shipped, detail.status) == (1, "complete")
    assert (await world.fulfilment(fulfilment.fulfilment_id)).settled
