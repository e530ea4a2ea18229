"""Between the canonical model and the `rest` protocol's wire types; pure, tested like domain.

- `fulfillment_request`: one router allocation of an order -> the body of `POST /fulfillments`.
- `stock_report`: `GET /stock` -> the domain's absolute `StockReport`, marked complete because
  the protocol promises every SKU the location holds (so a SKU that disappears counts as 0).
- `shipped_lines` / `rejected_lines`: what a fulfilment's lines mean for stock, with the
  protocol's rejection reasons in the domain's words (`out_of_stock` is the domain's
  `stock_missing`: both write the units off so the next order avoids the empty shelf).
"""

from __future__ import annotations

from typing import Final

import msgspec

from adapters.consignee import consignee_for
from adapters.threepl.wire import (
    Fulfillment,
    FulfillmentRequest,
    RejectReason,
    RequestLine,
    ShipTo,
    StockSnapshot,
)
from somsd.domain.atp import RejectionReason, StockCount, StockLine, StockReport
from somsd.domain.order import Address, Order
from somsd.domain.routing import Allocation

__all__ = [
    "RejectedLine",
    "fulfillment_request",
    "rejected_lines",
    "rejection_reason",
    "shipped_lines",
    "stock_report",
]

_REASONS: Final[dict[RejectReason, RejectionReason]] = {
    "out_of_stock": "stock_missing",
    "damaged": "damaged",
}


class RejectedLine(msgspec.Struct, frozen=True):
    """Units of one SKU the location refused, with the domain's reason."""

    sku: str
    quantity: int
    reason: RejectionReason


def fulfillment_request(
    fulfillment_id: str,
    order: Order,
    allocation: Allocation,
    *,
    store_address: Address | None = None,
) -> FulfillmentRequest:
    """The `POST /fulfillments` body for the lines `allocation` gives this location.

    A transfer allocation (stock sent to a pickup store) needs the store's `store_address`.
    """
    consignee = consignee_for(order, allocation, store_address=store_address)
    address = consignee.address
    return FulfillmentRequest(
        id=fulfillment_id,
        order_ref=order.number,
        mode=consignee.mode,
        ship_to=ShipTo(
            name=address.name,
            company=address.company,
            street=address.street,
            zip=address.zip,
            city=address.city,
            country=address.country,
        ),
        lines=tuple(RequestLine(sku=line.sku, quantity=line.quantity) for line in allocation.lines),
    )


def stock_report(location: str, snapshot: StockSnapshot) -> StockReport:
    """The snapshot as a complete absolute report for `location`."""
    return StockReport(
        location=location,
        as_of=snapshot.as_of,
        counts=tuple(StockCount(item.sku, item.on_hand) for item in snapshot.items),
        complete=True,
    )


def rejection_reason(reason: RejectReason) -> RejectionReason:
    """The domain's name for a protocol rejection reason."""
    return _REASONS[reason]


def shipped_lines(fulfillment: Fulfillment) -> tuple[StockLine, ...]:
    """Units that leave (or left) the location: each line's quantity minus its rejections."""
    return tuple(
        StockLine(line.sku, line.quantity - line.rejected_quantity)
        for line in fulfillment.lines
        if line.quantity > line.rejected_quantity
    )


def rejected_lines(fulfillment: Fulfillment) -> tuple[RejectedLine, ...]:
    """Units the location refused, to release and re-route.

    A rejection without a reason (a server bug) is reported as `stock_missing`: the units are
    not coming either way, and assuming them missing keeps the next order off that shelf.
    """
    return tuple(
        RejectedLine(
            line.sku,
            line.rejected_quantity,
            rejection_reason(line.reject_reason) if line.reject_reason else "stock_missing",
        )
        for line in fulfillment.lines
        if line.rejected_quantity > 0
    )
