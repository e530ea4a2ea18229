"""Between the canonical model and the `csv` files; pure, tested like domain code.

- `fulfillment_file`: one router allocation of an order -> the outbound file's content.
- `stock_reports`: a stock file -> the domain's absolute `StockReport`s, one per `as_of` in the
  file (a file normally has one). A report is marked `complete` — SKUs it leaves out count as
  0 — only when the file had a single `as_of` and no refused rows: a quarantined row's SKU is
  missing from the file by accident, and zeroing it would take real stock off sale.
- `rejection_reason`: the file's `out_of_stock` is the domain's `stock_missing`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from adapters.consignee import consignee_for
from adapters.csvfiles.wire import FulfillmentFile, FulfillmentRow, RejectReason, StockFile
from somsd.domain.atp import RejectionReason, StockCount, StockReport
from somsd.domain.order import Address, Order
from somsd.domain.routing import Allocation

__all__ = ["fulfillment_file", "rejection_reason", "stock_reports"]

_REASONS: Final[dict[RejectReason, RejectionReason]] = {
    "out_of_stock": "stock_missing",
    "damaged": "damaged",
}


def fulfillment_file(
    fulfillment_id: str,
    order: Order,
    allocation: Allocation,
    *,
    store_address: Address | None = None,
) -> FulfillmentFile:
    """The outbound file for `allocation`; a transfer needs the pickup store's address."""
    consignee = consignee_for(order, allocation, store_address=store_address)
    address = consignee.address
    return FulfillmentFile(
        fulfillment_id=fulfillment_id,
        order_ref=order.number,
        mode=consignee.mode,
        name=address.name,
        company=address.company,
        street=address.street,
        zip=address.zip,
        city=address.city,
        country=address.country,
        lines=tuple(
            FulfillmentRow(sku=line.sku, quantity=line.quantity) for line in allocation.lines
        ),
    )


def stock_reports(location: str, file: StockFile) -> list[StockReport]:
    """Absolute reports for `location`, oldest `as_of` first; later rows of a SKU win."""
    groups: dict[datetime, dict[str, int]] = {}
    for row in file.parsed.rows:
        groups.setdefault(row.as_of, {})[row.sku] = row.on_hand
    complete = len(groups) == 1 and not file.parsed.problems
    return [
        StockReport(
            location=location,
            as_of=as_of,
            counts=tuple(StockCount(sku, on_hand) for sku, on_hand in counts.items()),
            complete=complete,
        )
        for as_of, counts in sorted(groups.items())
    ]


def rejection_reason(reason: RejectReason) -> RejectionReason:
    return _REASONS[reason]
