"""A `csv` location: fulfilment files out through the outbox, status and stock files in.

Real folders in tmp_path and the real `CsvLocation` (file work in worker threads), so the real
clock runs; polls every 50 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry

from actors.integration import Describe
from actors.location import LineRejection, LocationActor, csv_file, decode_delivery
from actors.outbox import OutboxDispatcher
from adapters.csvfiles import StatusRow, StockRow, format_status, format_stock, parse_fulfillment
from adapters.csvfiles.files import write_atomic
from somsd.store import EventStore, OutboxEntry, OutboxState
from tests.outbox.helpers import (
    RecordingSink,
    add_outbox,
    all_delivered,
    fast_dispatcher,
    location,
    payload,
    wait_until,
)

AT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


@dataclass
class Folders:
    outbound: Path
    inbound: Path
    dispatcher: OutboxDispatcher
    actor: LocationActor
    sink: RecordingSink


@pytest.fixture
async def csv_location(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry, tmp_path: Path
) -> Folders:
    outbound, inbound = tmp_path / "out", tmp_path / "in"
    outbound.mkdir()
    inbound.mkdir()
    dispatcher = fast_dispatcher(store, registry)
    await nursery.start(dispatcher.run)
    sink = RecordingSink()
    section = location(tmp_path, adapter="csv", outbound=outbound, inbound=inbound)
    actor = LocationActor(section, store=store, dispatcher=dispatcher, sink=sink)
    await nursery.start(actor.run)
    return Folders(outbound, inbound, dispatcher, actor, sink)


async def test_deliverer_writes_the_fulfilment_file_atomically(
    csv_location: Folders, store: EventStore
) -> None:
    """An outbox entry becomes `fulfillment-<id>.csv` with every line, and no temporary file
    is left behind for the warehouse to pick up half-written."""
    body = payload("ful-7", ("MUG-1", 2), ("CUP-2", 1))
    await add_outbox(store, "location/wh-1", [(body, "k7")])
    csv_location.dispatcher.wake()
    await wait_until(lambda: all_delivered(store))

    assert [p.name for p in csv_location.outbound.iterdir()] == ["fulfillment-ful-7.csv"]
    written = (csv_location.outbound / "fulfillment-ful-7.csv").read_text()
    entry = OutboxEntry(1, "location/wh-1", body, "k7", OutboxState.PENDING, 0, AT, None, AT, AT)
    assert parse_fulfillment(written) == csv_file(decode_delivery(entry))


async def test_unsafe_fulfilment_id_is_parked(csv_location: Folders, store: EventStore) -> None:
    """An id that cannot be a file name never will be: dead at once, nothing written."""
    await add_outbox(store, "location/wh-1", [(payload("../etc/passwd"), "k1")])
    csv_location.dispatcher.wake()
    await wait_until(lambda: _dead(store))
    assert list(csv_location.outbound.iterdir()) == []


async def _dead(store: EventStore) -> bool:
    return bool(await store.dead_letters())


async def test_inbound_files_are_handed_over_once_then_moved(csv_location: Folders) -> None:
    """Status and stock files reach the sink once each, in name order, and then sit in
    processed/: later polls do not hand them over again."""
    rows = [
        StatusRow(fulfillment_id="ful-1", status="picked", at=AT),
        StatusRow(
            fulfillment_id="ful-1",
            status="rejected",
            at=AT,
            sku="MUG-1",
            quantity=1,
            reason="out_of_stock",
        ),
        StatusRow(
            fulfillment_id="ful-2",
            status="shipped",
            at=AT,
            carrier="dhl",
            tracking_number="00340434000000000001",
        ),
    ]
    stock = [StockRow(sku="MUG-1", on_hand=4, as_of=AT)]
    inbound = csv_location.inbound
    write_atomic(inbound, "status-00000001.csv", format_status(rows).encode())
    write_atomic(inbound, "stock-00000002.csv", format_stock(stock).encode())

    sink = csv_location.sink
    await wait_until(lambda: len(sorted((inbound / "processed").glob("*.csv"))) == 2)
    await trio.sleep(0.2)  # four more polls
    assert [(u.fulfilment_id, u.status) for u in sink.updates] == [
        ("ful-1", "picked"),
        ("ful-2", "shipped"),
    ]
    assert sink.updates[0].lines == (LineRejection("MUG-1", 1, "stock_missing"),)
    assert (sink.updates[1].carrier, sink.updates[1].tracking_number) == (
        "dhl",
        "00340434000000000001",
    )
    [report] = sink.reports
    assert (report.location, [(c.sku, c.on_hand) for c in report.counts]) == (
        "wh-1",
        [("MUG-1", 4)],
    )
    assert sorted(p.name for p in inbound.glob("*.csv")) == []


async def test_refused_inbound_file_stays_until_accepted(csv_location: Folders) -> None:
    """While the sink refuses, the file stays in the inbound folder; once accepted it moves."""
    sink = csv_location.sink
    sink.refuse = True
    rows = [StatusRow(fulfillment_id="ful-1", status="accepted", at=AT)]
    write_atomic(csv_location.inbound, "status-1.csv", format_status(rows).encode())
    await wait_until(lambda: sink.refused >= 2)
    assert (csv_location.inbound / "status-1.csv").exists()

    sink.refuse = False
    await wait_until((csv_location.inbound / "processed" / "status-1.csv").exists)
    assert [(u.fulfilment_id, u.status) for u in sink.updates] == [("ful-1", "accepted")]


async def test_manual_location_has_no_deliverer_and_answers_status(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry, tmp_path: Path
) -> None:
    """A manual location registers nothing (its entries would wait) and answers status."""
    dispatcher = fast_dispatcher(store, registry)
    actor = LocationActor(
        location(tmp_path, "store-essen", adapter="manual"),
        store=store,
        dispatcher=dispatcher,
        sink=RecordingSink(),
    )
    await nursery.start(actor.run)
    assert dispatcher.status().targets == ()
    described = await actor.ask(Describe)
    assert (described.name, described.kind, described.handled) == (
        "location/store-essen",
        "warehouse",
        1,
    )
    assert actor.status().adapter == "manual"
