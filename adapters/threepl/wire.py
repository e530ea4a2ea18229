"""The `rest` fulfilment protocol's JSON bodies (see `PROTOCOL.md`), shared by client and server.

One set of Structs for both sides keeps the reference simulator and the client from drifting
apart. Constraints (`Meta`) are what the server validates; the client decodes answers with the
same types, which doubles as a check that the upstream speaks the protocol. Unknown fields are
ignored in both directions (the protocol's evolution rule), so `forbid_unknown_fields` is off.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal, get_args

import msgspec

__all__ = [
    "FINAL_STATUSES",
    "FULFILLMENT_ID_PATTERN",
    "IDEMPOTENCY_HEADER",
    "REJECT_REASONS",
    "REPLAYED_HEADER",
    "ErrorBody",
    "ErrorDetail",
    "Fulfillment",
    "FulfillmentLine",
    "FulfillmentMode",
    "FulfillmentRequest",
    "FulfillmentStatus",
    "RejectReason",
    "RequestLine",
    "ShipTo",
    "StatusCallback",
    "StockItem",
    "StockSnapshot",
    "UpdatesPage",
]

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"

FulfillmentMode = Literal["ship", "pickup"]
FulfillmentStatus = Literal[
    "accepted", "picked", "packed", "shipped", "ready_for_pickup", "picked_up", "rejected"
]
RejectReason = Literal["out_of_stock", "damaged"]

FINAL_STATUSES: Final[frozenset[FulfillmentStatus]] = frozenset(
    {"shipped", "picked_up", "rejected"}
)
REJECT_REASONS: Final[frozenset[RejectReason]] = frozenset(get_args(RejectReason))

# Path-safe (the id appears in `GET /fulfillments/{id}`) and short enough for any WMS's
# reference field; somsd's own ids are ULID-like and far shorter.
FULFILLMENT_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,100}$"

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class ShipTo(msgspec.Struct, frozen=True, kw_only=True):
    name: NonEmpty
    company: str | None = None
    street: NonEmpty
    zip: NonEmpty
    city: NonEmpty
    country: Country  # ISO 3166-1 alpha-2


class RequestLine(msgspec.Struct, frozen=True, kw_only=True):
    sku: NonEmpty
    quantity: Quantity


class FulfillmentRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The body of `POST /fulfillments`."""

    id: Annotated[str, msgspec.Meta(pattern=FULFILLMENT_ID_PATTERN)]
    order_ref: NonEmpty
    mode: FulfillmentMode
    ship_to: ShipTo
    lines: Annotated[tuple[RequestLine, ...], msgspec.Meta(min_length=1)]


class FulfillmentLine(msgspec.Struct, frozen=True, kw_only=True):
    """A line as the server reports it; `quantity - rejected_quantity` units go out."""

    sku: str
    quantity: int
    rejected_quantity: int = 0
    reject_reason: RejectReason | None = None


class Fulfillment(msgspec.Struct, frozen=True, kw_only=True):
    """A fulfilment at its current status, as every read and callback returns it."""

    id: str
    order_ref: str
    mode: FulfillmentMode
    status: FulfillmentStatus
    lines: tuple[FulfillmentLine, ...]
    updated_at: datetime
    carrier: str | None = None  # set once shipped
    tracking_number: str | None = None  # set once shipped


class UpdatesPage(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to `GET /fulfillments?updated_since=`."""

    items: tuple[Fulfillment, ...]
    next_cursor: str
    has_more: bool = False


class StatusCallback(msgspec.Struct, frozen=True, kw_only=True):
    """The body of a status callback: one change, with the cursor it has in the poll feed."""

    event_id: str
    cursor: str
    fulfillment: Fulfillment


class StockItem(msgspec.Struct, frozen=True, kw_only=True):
    sku: str
    on_hand: int


class StockSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to `GET /stock`: absolute counts of every SKU held, as of `as_of`."""

    as_of: datetime
    items: tuple[StockItem, ...]


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str = ""


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """`{"error": {"code", "message"}}`, the error shape somsd itself answers with."""

    error: ErrorDetail
