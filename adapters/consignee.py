"""Who receives the goods of one allocation: the one rule every location adapter shares.

The router (`somsd.domain.routing`) allocates an order's lines to locations in three kinds, and
each kind hands the goods to someone else:
- `ship`: sent to the order's shipping address;
- `pickup`: collected at the location by the customer, whose billing name and address the
  counter checks (nothing is sent, but a location's system still wants a person on the slip);
- `transfer`: sent from a warehouse to the pickup store, whose address the caller supplies
  (config knows store addresses, the order does not).
Every location protocol (`rest`, `csv`) carries that as a mode and an address, so the decision
lives here once instead of in each adapter's mapping.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from somsd.domain.order import Address, Order
from somsd.domain.routing import Allocation

__all__ = ["Consignee", "HandoverMode", "consignee_for"]

HandoverMode = Literal["ship", "pickup"]


class Consignee(msgspec.Struct, frozen=True):
    mode: HandoverMode
    address: Address


def consignee_for(
    order: Order, allocation: Allocation, *, store_address: Address | None = None
) -> Consignee:
    """Mode and address for `allocation`; a transfer needs the pickup store's `store_address`."""
    match allocation.kind:
        case "ship":
            return Consignee("ship", order.shipping_address)
        case "pickup":
            return Consignee("pickup", order.billing_address)
        case "transfer":
            if store_address is None:
                raise ValueError(
                    f"allocation to {allocation.location!r} transfers to store "
                    f"{allocation.deliver_to!r}: pass that store's address as store_address"
                )
            return Consignee("ship", store_address)
