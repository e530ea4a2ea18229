"""Canonical model <-> `rest` wire types: pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.consignee import consignee_for
from adapters.threepl import (
    Fulfillment,
    FulfillmentLine,
    fulfillment_request,
    rejected_lines,
    rejection_reason,
    shipped_lines,
)
from somsd.domain.atp import StockLine
from somsd.domain.order import Address
from somsd.domain.routing import Allocation, OrderLine
from somsd.domain.testing import sample_line, sample_order

STORE = Address(
    name="Filiale Essen", street="Kettwiger Str. 1", zip="45127", city="Essen", country="DE"
)
GIFT = Address(name="Erika Muster", street="Lindenallee 3", zip="50667", city="Köln", country="DE")


def test_ship_allocation_goes_to_the_shipping_address() -> None:
    """Only the allocated lines are sent, to where the customer wants the parcel."""
    order = sample_order(
        lines=[sample_line("MUG-1", 2), sample_line("TEE-M", 1, "19.90")], shipping_address=GIFT
    )
    allocation = Allocation(location="wh", kind="ship", lines=(OrderLine("TEE-M", 1),))
    request = fulfillment_request("ful-1", order, allocation)
    assert (request.id, request.order_ref, request.mode) == ("ful-1", "1042", "ship")
    assert (request.ship_to.name, request.ship_to.city) == ("Erika Muster", "Köln")
    assert [(line.sku, line.quantity) for line in request.lines] == [("TEE-M", 1)]


def test_pickup_names_the_customer_and_transfer_goes_to_the_store() -> None:
    """Click & collect: the billing customer collects; stock moved for it goes to the store."""
    order = sample_order(shipping_method="pickup", shipping_price="0", pickup_location="store")
    pickup = Allocation(location="store", kind="pickup", lines=(OrderLine("MUG-1", 2),))
    assert consignee_for(order, pickup).mode == "pickup"
    assert fulfillment_request("f", order, pickup).ship_to.name == "Max Muster"

    transfer = Allocation(
        location="wh", kind="transfer", lines=(OrderLine("MUG-1", 1),), deliver_to="store"
    )
    moved = fulfillment_request("f", order, transfer, store_address=STORE)
    assert (moved.mode, moved.ship_to.name) == ("ship", "Filiale Essen")
    with pytest.raises(ValueError, match="store_address"):
        fulfillment_request("f", order, transfer)


def test_line_outcomes_use_the_domains_words() -> None:
    """out_of_stock is the stock book's stock_missing; shipped units exclude rejections."""
    fulfilment = Fulfillment(
        id="f",
        order_ref="1",
        mode="ship",
        status="shipped",
        lines=(
            FulfillmentLine(sku="A", quantity=3, rejected_quantity=1, reject_reason="out_of_stock"),
            FulfillmentLine(sku="B", quantity=1, rejected_quantity=1, reject_reason="damaged"),
            FulfillmentLine(sku="C", quantity=2),
        ),
        updated_at=datetime(2026, 11, 21, tzinfo=UTC),
    )
    assert shipped_lines(fulfilment) == (StockLine("A", 2), StockLine("C", 2))
    assert [(r.sku, r.quantity, r.reason) for r in rejected_lines(fulfilment)] == [
        ("A", 1, "stock_missing"),
        ("B", 1, "damaged"),
    ]
    assert rejection_reason("damaged") == "damaged"
