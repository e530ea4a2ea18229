"""Bodies of somsd's manual fulfilment API, as the store simulator uses them.

The contract names the routes — `GET /v1/fulfillments?location=&state=` and
`POST /v1/fulfillments/{id}/{pick,pack,ship,reject,ready,picked-up}` — but not yet their
bodies, because the daemon does not serve them yet. These Structs are the shapes proposed here,
chosen to match what the daemon already does elsewhere: a page is `{"fulfillments": [...],
"next_cursor": ...}` like `GET /v1/orders`'s `{"orders": [...], "next_cursor": ...}`; states
are the architecture's fulfilment states; `kind` is the router's allocation kind; rejection
reasons are the stock book's (`somsd.domain.atp.RejectionReason`). When the daemon's routes
land with other shapes, this module is the one place to change. Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from somsd.domain.atp import RejectionReason

__all__ = [
    "FINAL_STATES",
    "FulfillmentState",
    "PickupBody",
    "RejectBody",
    "ShipBody",
    "Step",
    "WorkItem",
    "WorkLine",
    "WorkPage",
]

FulfillmentState = Literal[
    "requested",
    "accepted",
    "picked",
    "packed",
    "shipped",
    "delivered",
    "ready_for_pickup",
    "picked_up",
    "rejected",
    "canceled",
]
FINAL_STATES: Final[frozenset[str]] = frozenset(
    {"shipped", "delivered", "picked_up", "rejected", "canceled"}
)
Step = Literal["pick", "pack", "ship", "reject", "ready", "picked-up"]


class WorkLine(msgspec.Struct, frozen=True):
    sku: str
    quantity: int


class WorkItem(msgspec.Struct, frozen=True, kw_only=True):
    """One fulfilment on a location's work list."""

    id: str
    state: FulfillmentState
    kind: Literal["ship", "pickup", "transfer"] = "ship"
    lines: tuple[WorkLine, ...] = ()
    order_id: str | None = None
    location: str | None = None
    # Transfers a pickup waits for: it can be marked ready only once they have arrived.
    awaiting: tuple[str, ...] = ()


class WorkPage(msgspec.Struct, frozen=True, kw_only=True):
    fulfillments: tuple[WorkItem, ...]
    next_cursor: int | str | None = None


class ShipBody(msgspec.Struct, frozen=True, kw_only=True):
    carrier: str
    tracking_number: str


class PickupBody(msgspec.Struct, frozen=True, kw_only=True):
    """Handover at the counter: the code the customer got when the parcel was ready."""

    pickup_code: str


class RejectBody(msgspec.Struct, frozen=True, kw_only=True):
    lines: tuple[WorkLine, ...]
    reason: RejectionReason
