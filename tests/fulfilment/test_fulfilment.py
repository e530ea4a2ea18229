"""Fulfilments through their life: rejection and re-routing, shipping, click & collect,
transfers, and what location systems report."""

from __future__ import annotations

import msgspec
import pytest

from actors.location import LineRejection, SendFulfilment
from somsd.domain.atp import StockLine
from somsd.projections.fulfilments import StepRefused, WrongPickupCode
from tests.fulfilment.conftest import StartWorld
from tests.fulfilment.support import DORTMUND, ESSEN, MUNICH, default_config, location

CLERK = "user:clerk"


async def test_a_damaged_line_at_the_store_is_written_off_and_routed_elsewhere(
    start_world: StartWorld,
) -> None:
    """Essen (nearest) refuses one damaged mug: Essen's on hand drops by it, and the mug is
    reserved in Dortmund instead, with a decision that names the refusal and leaves Essen out."""
    world = await start_world()
    await world.stock("store-essen", MUG_1=3)
    await world.stock("wh-dortmund", MUG_1=5)
    order_id = await world.order("damaged", [("MUG-1", 2)], to=ESSEN)
    await world.routed()
    [at_store] = await world.fulfilments_of(order_id)
    assert at_store.location == "store-essen"

    view = await world.fulfilments.reject(
        at_store.fulfilment_id, [StockLine("MUG-1", 1)], "damaged", actor=CLERK
    )
    assert view.state == "requested"
    assert [(line.sku, line.quantity) for line in view.lines] == [("MUG-1", 1)]
    await world.routed()

    essen = await world.position("MUG-1", "store-essen")
    assert (essen.on_hand, essen.reserved) == (2, 1)  # one written off, one still for the order
    detail = await world.detail(order_id)
    second = detail.fulfilment.routing[-1]
    assert second.cause == f"rejection:{at_store.fulfilment_id}#2"
    assert second.excluded == ("store-essen",)
    assert [(f.location, f.lines[0].quantity) for f in detail.fulfilment.fulfilments] == [
        ("store-essen", 1),
        ("wh-dortmund", 1),
    ]
    assert (await world.position("MUG-1", "wh-dortmund")).reserved == 1


async def test_a_declined_line_is_not_written_off(start_world: StartWorld) -> None:
    """A store that declines (no staff today) gives the units back to sale; nothing is lost."""
    world = await start_world()
    await world.stock("store-essen", MUG_1=1)
    order_id = await world.order("declined", to=ESSEN)
    await world.routed()
    [at_store] = await world.fulfilments_of(order_id)
    view = await world.fulfilments.reject(
        at_store.fulfilment_id, [StockLine("MUG-1", 1)], "declined", actor=CLERK
    )
    assert view.state == "rejected"
    await world.routed()
    essen = await world.position("MUG-1", "store-essen")
    assert (essen.on_hand, essen.reserved, essen.atp) == (1, 0, 1)
    detail = await world.detail(order_id)
    assert detail.fulfilment.backorder == (StockLine("MUG-1", 1),)  # only Essen had it


async def test_shipping_records_the_shipment_and_completes_the_paid_order(
    start_world: StartWorld,
) -> None:
    """Accepting moves the order to processing; shipping consumes the reservation, records the
    shipped units with the tracking number, and completes the (paid) order."""
    world = await start_world()
    await world.stock("wh-munich", MUG_1=5, TEE_1=5)
    order_id = await world.order("ship-me", [("MUG-1", 2), ("TEE-1", 1)], to=MUNICH)
    await world.routed()
    [fulfilment] = await world.fulfilments_of(order_id)
    fid = fulfilment.fulfilment_id

    await world.fulfilments.step(fid, "accept", actor=CLERK)
    assert (await world.detail(order_id)).status == "processing"
    await world.fulfilments.step(fid, "pick", actor=CLERK)
    await world.fulfilments.step(fid, "pack", actor=CLERK)
    view = await world.fulfilments.step(
        fid, "ship", actor=CLERK, carrier="dhl", tracking_number="00340434000000000001"
    )
    assert (view.state, view.settled, view.tracking_number) == (
        "shipped",
        True,
        "00340434000000000001",
    )
    detail = await world.detail(order_id)
    assert [line.shipped for line in detail.lines] == [2, 1]
    assert detail.status == "complete"
    assert detail.shipment_ids == frozenset({fid})
    mug = await world.position("MUG-1", "wh-munich")
    assert (mug.on_hand, mug.reserved) == (3, 0)
    with pytest.raises(StepRefused, match="allowed: deliver"):
        await world.fulfilments.step(fid, "ship", actor=CLERK, carrier="dhl", tracking_number="x")


async def test_pickup_at_a_store_with_stock_is_handed_over_against_its_code(
    start_world: StartWorld,
) -> None:
    """Click & collect with the mug on Essen's shelf: one pickup fulfilment there; ready
    hands out a six-digit code, a wrong code is refused, the right one completes the order."""
    world = await start_world()
    await world.stock("store-essen", MUG_1=2)
    order_id = await world.order("collect", to=ESSEN, pickup="store-essen")
    await world.routed()
    [pickup] = await world.fulfilments_of(order_id)
    assert (pickup.kind, pickup.location, pickup.reserved_lines) == (
        "pickup",
        "store-essen",
        (StockLine("MUG-1", 1),),
    )
    fid = pickup.fulfilment_id
    with pytest.raises(StepRefused):
        await world.fulfilments.step(fid, "picked-up", actor=CLERK, pickup_code="000000")
    await world.fulfilments.step(fid, "pick", actor=CLERK)
    ready = await world.fulfilments.step(fid, "ready", actor=CLERK)
    assert ready.state == "ready_for_pickup"
    assert ready.pickup_code is None  # the counter must ask the customer for it
    [shown] = (await world.detail(order_id)).fulfilment.fulfilments
    code = shown.pickup_code
    assert code is not None
    assert len(code) == 6
    assert code.isdigit()

    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    with pytest.raises(WrongPickupCode):
        await world.fulfilments.step(fid, "picked-up", actor=CLERK, pickup_code=wrong)
    done = await world.fulfilments.step(fid, "picked-up", actor=CLERK, pickup_code=code)
    assert (done.state, done.settled) == ("picked_up", True)
    detail = await world.detail(order_id)
    assert detail.status == "complete"
    assert (await world.position("MUG-1", "store-essen")).on_hand == 1


async def test_pickup_without_stock_at_the_store_is_transferred_then_collected(
    start_world: StartWorld,
) -> None:
    """Essen has no mug: Dortmund transfers it to Essen. The pickup waits for the transfer,
    becomes ready once it has shipped, and the hand-over completes the order."""
    world = await start_world()
    await world.stock("wh-dortmund", MUG_1=4)
    order_id = await world.order("transfer", [("MUG-1", 2)], to=ESSEN, pickup="store-essen")
    await world.routed()
    by_kind = {f.kind: f for f in await world.fulfilments_of(order_id)}
    pickup, transfer = by_kind["pickup"], by_kind["transfer"]
    assert (transfer.location, transfer.deliver_to) == ("wh-dortmund", "store-essen")
    assert transfer.pickup_fulfilment == pickup.fulfilment_id
    assert (pickup.location, pickup.awaiting, pickup.reserved_lines) == (
        "store-essen",
        (transfer.fulfilment_id,),
        (),
    )
    assert pickup.lines == (StockLine("MUG-1", 2),)

    with pytest.raises(Exception, match="waits for transfer"):
        await world.fulfilments.step(pickup.fulfilment_id, "ready", actor=CLERK)
    await world.fulfilments.step(
        transfer.fulfilment_id, "ship", actor="user:wh", carrier="dhl", tracking_number="T1"
    )
    assert (await world.detail(order_id)).lines[0].shipped == 0  # not with the customer yet
    dortmund = await world.position("MUG-1", "wh-dortmund")
    assert (dortmund.on_hand, dortmund.reserved) == (2, 0)

    await world.fulfilments.step(pickup.fulfilment_id, "ready", actor=CLERK)
    code = (await world.fulfilment(pickup.fulfilment_id)).pickup_code
    await world.fulfilments.step(pickup.fulfilment_id, "picked-up", actor=CLERK, pickup_code=code)
    detail = await world.detail(order_id)
    assert detail.status == "complete"
    assert detail.lines[0].shipped == 2


async def test_a_csv_location_gets_its_request_through_the_outbox_and_reports_back(
    start_world: StartWorld,
) -> None:
    """A `csv` warehouse gets an outbox entry with the payload the location actor reads; its
    status reports (absolute rejections, repeats, late ones) move the fulfilment forward."""
    config = default_config(
        location=(
            location(
                "wh-csv",
                51.51,
                7.47,
                adapter="csv",
                outbound_dir="/tmp/out",
                inbound_dir="/tmp/in",
            ),
            location("wh-munich", 48.14, 11.58),
        )
    )
    world = await start_world(config)
    await world.stock("wh-csv", MUG_1=5, TEE_1=5)
    await world.stock("wh-munich", TEE_1=5)
    order_id = await world.order("csv", [("MUG-1", 2), ("TEE-1", 1)], to=DORTMUND)
    await world.routed()
    [fulfilment] = await world.fulfilments_of(order_id)
    fid = fulfilment.fulfilment_id
    [entry] = await world.store.due_outbox()
    assert (entry.target, entry.idempotency_key) == ("location/wh-csv", f"location/wh-csv:{fid}")
    payload = msgspec.json.decode(entry.payload, type=SendFulfilment)
    assert (payload.fulfilment_id, payload.mode, payload.ship_to.zip) == (fid, "ship", "44135")
    assert {(line.sku, line.quantity) for line in payload.lines} == {("MUG-1", 2), ("TEE-1", 1)}

    sink = world.fulfilments
    await sink.location_update("wh-csv", fid, "picked")
    await sink.location_update("wh-csv", fid, "accepted")  # late: ignored
    tee_refused = (LineRejection("TEE-1", 1, "stock_missing"),)
    await sink.location_update("wh-csv", fid, "packed", lines=tee_refused)
    await sink.location_update("wh-csv", fid, "packed", lines=tee_refused)  # repeated: absolute
    await world.routed()
    await sink.location_update("wh-csv", fid, "shipped", tracking_number="T9", carrier="dhl")
    await sink.location_update("wh-csv", "not-ours", "shipped")  # logged, never blocks the feed

    state = await world.fulfilment(fid)
    assert (state.state, state.settled, state.lines) == ("shipped", True, (StockLine("MUG-1", 2),))
    detail = await world.detail(order_id)
    assert [line.shipped for line in detail.lines] == [2, 0]
    tee = next(f for f in detail.fulfilment.fulfilments if f.id != fid)
    assert (tee.location, tee.lines) == ("wh-munich", (StockLine("TEE-1", 1),))
    assert (await world.position("TEE-1", "wh-csv")).on_hand == 4  # missing: written off


async def test_a_count_below_the_reservations_gives_up_the_youngest_and_reroutes(
    start_world: StartWorld,
) -> None:
    """Munich holds two orders' mugs, then counts only one: the younger order's fulfilment
    gives its mug up (not written off again) and it is routed to Dortmund."""
    world = await start_world()
    await world.stock("wh-munich", MUG_1=2)
    await world.stock("wh-dortmund", MUG_1=2)
    older = await world.order("older", to=MUNICH)
    younger = await world.order("younger", to=MUNICH)
    await world.routed()
    await world.stock("wh-munich", MUG_1=1)
    await world.routed()
    assert [f.location for f in (await world.detail(older)).fulfilment.fulfilments] == ["wh-munich"]
    states = [(f.location, f.state) for f in (await world.detail(younger)).fulfilment.fulfilments]
    assert states == [("wh-munich", "rejected"), ("wh-dortmund", "requested")]
    munich = await world.position("MUG-1", "wh-munich")
    assert (munich.on_hand, munich.reserved) == (1, 1)
