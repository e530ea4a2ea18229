"""The location actor's pure parts: payload building and reading, updates for the sink."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from actors.location import (
    LineRejection,
    LocationUpdate,
    SendFulfilment,
    csv_file,
    csv_updates,
    decode_delivery,
    rest_request,
    rest_update,
    send_fulfilment_payload,
)
from adapters.csvfiles import Parsed, StatusFile, StatusRow
from adapters.errors import PermanentUpstreamError
from adapters.threepl import Fulfillment, FulfillmentLine
from somsd.domain.order import Address
from somsd.domain.routing import Allocation
from somsd.domain.testing import sample_line, sample_order
from somsd.store import OutboxEntry, OutboxState

AT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
STORE = Address(
    name="Store Essen", street="Kettwiger Str. 1", zip="45127", city="Essen", country="DE"
)


def entry(body: bytes) -> OutboxEntry:
    return OutboxEntry(1, "location/wh-1", body, "k1", OutboxState.PENDING, 0, AT, None, AT, AT)


def test_payload_is_the_documented_json() -> None:
    """The payload built from an order and allocation is the JSON the module documents."""
    order = sample_order(lines=[sample_line("MUG-1", 2), sample_line("CUP-2", 1)])
    allocation = Allocation("wh-1", "ship", (order.lines[0],))
    document = msgspec.json.decode(send_fulfilment_payload("ful-1", order, allocation))
    assert document == {
        "type": "send_fulfilment",
        "fulfilment_id": "ful-1",
        "order_ref": "1042",
        "mode": "ship",
        "ship_to": msgspec.to_builtins(order.shipping_address),
        "lines": [{"sku": "MUG-1", "quantity": 2}],
    }


def test_transfer_goes_to_the_pickup_store() -> None:
    """A transfer allocation ships to the store's address, given by the caller."""
    order = sample_order(shipping_method="pickup", pickup_location="store-essen")
    allocation = Allocation("wh-1", "transfer", order.lines, deliver_to="store-essen")
    body = send_fulfilment_payload("ful-2", order, allocation, store_address=STORE)
    delivery = decode_delivery(entry(body))
    assert (delivery.mode, delivery.ship_to) == ("ship", STORE)


def test_payload_maps_to_both_wire_formats() -> None:
    """One payload gives the rest request and the csv file with the same content."""
    order = sample_order()
    delivery = decode_delivery(
        entry(send_fulfilment_payload("ful-3", order, Allocation("wh-1", "pickup", order.lines)))
    )
    request = rest_request(delivery)
    file = csv_file(delivery)
    assert (request.id, request.mode, request.ship_to.name) == (
        "ful-3",
        "pickup",
        order.billing_address.name,
    )
    assert (file.fulfillment_id, file.mode, file.name, file.city) == (
        "ful-3",
        "pickup",
        order.billing_address.name,
        order.billing_address.city,
    )
    assert [(line.sku, line.quantity) for line in request.lines] == [
        (line.sku, line.quantity) for line in file.lines
    ]


def test_payload_without_type_is_read_and_a_foreign_type_is_refused() -> None:
    """`type` may be left out; another document, or no JSON, is a permanent error."""
    bare = msgspec.to_builtins(
        SendFulfilment(
            fulfilment_id="f",
            order_ref="1",
            mode="ship",
            ship_to=STORE,
            lines=(),
        )
    )
    del bare["type"]
    assert decode_delivery(entry(msgspec.json.encode(bare))).fulfilment_id == "f"
    for body in (b'{"type": "cancel_fulfilment", "fulfilment_id": "f"}', b"not json"):
        with pytest.raises(PermanentUpstreamError, match="not a send_fulfilment payload"):
            decode_delivery(entry(body))


def test_rest_update_carries_rejections_and_shipping() -> None:
    """A rest fulfilment's line rejections (in the domain's words) and tracking are passed on;
    a wholly rejected one names the reason."""
    lines = (
        FulfillmentLine(sku="MUG-1", quantity=2, rejected_quantity=2, reject_reason="out_of_stock"),
    )
    rejected = Fulfillment(
        id="f", order_ref="1", mode="ship", status="rejected", lines=lines, updated_at=AT
    )
    assert rest_update(rejected) == LocationUpdate(
        fulfilment_id="f",
        status="rejected",
        lines=(LineRejection("MUG-1", 2, "stock_missing"),),
        reason="stock_missing",
        at=AT,
    )
    shipped = Fulfillment(
        id="g",
        order_ref="1",
        mode="ship",
        status="shipped",
        lines=(FulfillmentLine(sku="MUG-1", quantity=1),),
        updated_at=AT,
        carrier="dhl",
        tracking_number="00340434000000000001",
    )
    update = rest_update(shipped)
    assert (update.status, update.lines, update.reason) == ("shipped", (), None)
    assert (update.carrier, update.tracking_number) == ("dhl", "00340434000000000001")


def status_file(*rows: StatusRow) -> StatusFile:
    return StatusFile(name="status.csv", parsed=Parsed(header=(), rows=rows, problems=()))


def test_csv_rejections_fold_into_the_last_status_of_their_fulfilment() -> None:
    """A csv `rejected` row rejects a line: it joins its fulfilment's last status update; a
    fulfilment with only rejected rows becomes one `rejected` update."""
    file = status_file(
        StatusRow(fulfillment_id="a", status="accepted", at=AT),
        StatusRow(
            fulfillment_id="b", status="rejected", at=AT, sku="X", quantity=3, reason="damaged"
        ),
        StatusRow(fulfillment_id="a", status="picked", at=AT),
        StatusRow(
            fulfillment_id="a", status="rejected", at=AT, sku="Y", quantity=1, reason="out_of_stock"
        ),
    )
    assert csv_updates(file) == [
        LocationUpdate(fulfilment_id="a", status="accepted", at=AT),
        LocationUpdate(
            fulfilment_id="a",
            status="picked",
            lines=(LineRejection("Y", 1, "stock_missing"),),
            at=AT,
        ),
        LocationUpdate(
            fulfilment_id="b",
            status="rejected",
            lines=(LineRejection("X", 3, "damaged"),),
            reason="damaged",
            at=AT,
        ),
    ]
