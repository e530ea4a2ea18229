"""Order events: every change to an order, as it is stored in the event log forever.

Each event is a frozen msgspec Struct tagged with its class name (`{"type": "OrderAccepted",
...}`), joined in the `OrderEvent` union that the event store decodes with one typed decoder.
They all carry `at` (when it happened, injected — the domain never reads a clock) and `actor`
(who decided: an actor name such as "order-desk", or an operator as "user:<login>"); events that
record a human decision carry the `reason` too.

Because these records outlive the code that wrote them, they follow msgspec's schema-evolution
rules (docs/schema-evolution.rst): a field added later must have a default, a field's type never
changes, a field is never renamed or reused, and unknown fields are ignored on decode (so no
`forbid_unknown_fields` here) — an old daemon can read what a newer one wrote.

Order lines are named by their index in `Order.lines` (`line`), the same index the JSON path
`$.lines[i]` uses: SKUs may repeat within an order, indices never change.

`InvoiceIssued` and `CreditNoteIssued` leave the decision functions with `number` set to
`UNNUMBERED`. The event store replaces it with the next gapless number inside the transaction
that commits the event (`numbering.number_documents`, or `numbering_key` + `assign_number` for
a stamper that keeps its counters in a table), so a rolled-back transaction uses no
number and two concurrent ones cannot take the same; what the store acknowledges, and what is
folded into state from then on, is the numbered event.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import suppress
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

import msgspec

from somsd.domain.documents import InvoiceDocument
from somsd.domain.holds import HoldReason
from somsd.domain.order import MAX_QUANTITY, Address, Order

__all__ = [
    "UNNUMBERED",
    "AddressCorrected",
    "CreditNoteIssued",
    "ErpDocumentRecorded",
    "EventBase",
    "HoldReleased",
    "InvoiceDrafted",
    "InvoiceIssued",
    "LineQuantity",
    "LinesCanceled",
    "LinesShipped",
    "OrderAccepted",
    "OrderCanceled",
    "OrderCopied",
    "OrderEvent",
    "OrderHeld",
    "OrderReceived",
    "PaymentRecorded",
    "RefundCause",
    "RefundRecorded",
    "ReturnApproved",
    "ReturnCondition",
    "ReturnReceived",
    "ReturnRefunded",
    "ReturnRejected",
    "ReturnRequested",
    "ReturnedLine",
    "StatusChanged",
    "decode_event",
    "decode_events",
    "encode_event",
]

UNNUMBERED: Final = ""

ReturnCondition = Literal["resellable", "damaged"]
RefundCause = Literal["cancellation", "return", "payment"]


# What the operator API documents for a line reference and a unit count. Schema only
# (`extra_json_schema`): decoding stays as it was, so stored events always decode and the
# domain's checks keep their own error codes and paths.
LineIndex = Annotated[int, msgspec.Meta(extra_json_schema={"minimum": 0})]
Units = Annotated[int, msgspec.Meta(extra_json_schema={"minimum": 1, "maximum": MAX_QUANTITY})]


class LineQuantity(msgspec.Struct, frozen=True, gc=False):
    """Some units of one order line."""

    line: LineIndex
    quantity: Units


class ReturnedLine(msgspec.Struct, frozen=True, gc=False):
    """Units of one order line that came back, and in what state (decides restock or write-off)."""

    line: LineIndex
    quantity: Units
    condition: ReturnCondition


class EventBase(msgspec.Struct, frozen=True, gc=False, tag=True, kw_only=True):
    at: datetime
    actor: str

    def __post_init__(self) -> None:
        # A naive time would be read as local time by one consumer and as UTC by another. The
        # actor passes an aware `now`; this is where forgetting it is caught, before anything
        # is stored (and msgspec reports it as a ValidationError when decoding).
        if self.at.utcoffset() is None:
            raise ValueError(f"{type(self).__name__}.at must be timezone-aware, got {self.at}")


class OrderReceived(EventBase, frozen=True, kw_only=True):
    """The order entered somsd from `channel`; the first event of every order stream."""

    order_id: str
    channel: str
    order: Order
    copied_from: str | None = None  # the order this one repeats or replaces
    replacement: bool = False  # a free replacement shipment for `copied_from`


class OrderAccepted(EventBase, frozen=True, kw_only=True):
    """The order passed intake and waits for payment, routing or stock (status pending)."""


class OrderHeld(EventBase, frozen=True, kw_only=True):
    """The order went on hold for `reasons`; `held_from` is where a release returns it."""

    held_from: str
    reasons: tuple[HoldReason, ...]


class HoldReleased(EventBase, frozen=True, kw_only=True):
    """An operator released the hold; the order is back in `to_status` (its `held_from`)."""

    to_status: str
    reason: str


class StatusChanged(EventBase, frozen=True, kw_only=True):
    from_status: str
    to_status: str
    reason: str


class PaymentRecorded(EventBase, frozen=True, kw_only=True):
    """Money arrived (or the channel reported it captured)."""

    payment_id: str
    amount: Decimal
    reference: str = ""  # the payment provider's transaction id, if any


class LinesShipped(EventBase, frozen=True, kw_only=True):
    """A parcel (or a pickup hand-over) left with these units."""

    shipment_id: str
    lines: tuple[LineQuantity, ...]
    location: str = ""
    tracking_number: str = ""


class InvoiceDrafted(EventBase, frozen=True, kw_only=True):
    """An invoice an operator (or the ERP) still has to issue; replaces any earlier draft."""

    document: InvoiceDocument


class InvoiceIssued(EventBase, frozen=True, kw_only=True):
    series: str
    number: str  # UNNUMBERED until the event store allocates it
    issue_date: date  # the invoice date (BT-2), in the business's time zone
    document: InvoiceDocument


class CreditNoteIssued(EventBase, frozen=True, kw_only=True):
    """A correction of `invoice_number` for canceled or returned units (and shipping)."""

    series: str
    number: str  # UNNUMBERED until the event store allocates it
    issue_date: date
    invoice_number: str
    cause: RefundCause
    document: InvoiceDocument
    rma_id: str | None = None


class OrderCanceled(EventBase, frozen=True, kw_only=True):
    """The whole order was canceled; `lines` are the units that were still open."""

    from_status: str
    reason: str
    lines: tuple[LineQuantity, ...]


class LinesCanceled(EventBase, frozen=True, kw_only=True):
    reason: str
    lines: tuple[LineQuantity, ...]


class RefundRecorded(EventBase, frozen=True, kw_only=True):
    """Money to pay back; the channel executes it later and reports the outcome."""

    refund_id: str
    amount: Decimal
    cause: RefundCause
    reason: str
    rma_id: str | None = None


class ReturnRequested(EventBase, frozen=True, kw_only=True):
    rma_id: str
    lines: tuple[LineQuantity, ...]
    reason: str


class ReturnApproved(EventBase, frozen=True, kw_only=True):
    rma_id: str
    reason: str = ""


class ReturnRejected(EventBase, frozen=True, kw_only=True):
    rma_id: str
    reason: str


class ReturnReceived(EventBase, frozen=True, kw_only=True):
    """The parcel came back; units per line and condition as inspected."""

    rma_id: str
    lines: tuple[ReturnedLine, ...]


class ReturnRefunded(EventBase, frozen=True, kw_only=True):
    """The return is settled: its received units are credited (`amount`, gross)."""

    rma_id: str
    amount: Decimal


class OrderCopied(EventBase, frozen=True, kw_only=True):
    """A new order `new_order_id` was created from this one (repeat or replacement)."""

    new_order_id: str
    replacement: bool
    reason: str


class AddressCorrected(EventBase, frozen=True, kw_only=True):
    """An operator corrected the billing and/or shipping address (None: that one unchanged)."""

    billing_address: Address | None = None
    shipping_address: Address | None = None
    reason: str


class ErpDocumentRecorded(EventBase, frozen=True, kw_only=True):
    """An ERP holds a document for this order: `key` is the ERP's own (SelectLine `FAU123`),
    `kind` its kind flag (F order, L delivery note, R invoice, G credit note), `cause` what in
    somsd it stands for (`order`, `shipment:<id>`, `credit:<n>`, `cancel`)."""

    system: str  # the [[erp]] section's name
    kind: str
    key: str
    cause: str


OrderEvent = (
    OrderReceived
    | OrderAccepted
    | OrderHeld
    | HoldReleased
    | StatusChanged
    | PaymentRecorded
    | LinesShipped
    | InvoiceDrafted
    | InvoiceIssued
    | CreditNoteIssued
    | OrderCanceled
    | LinesCanceled
    | RefundRecorded
    | ReturnRequested
    | ReturnApproved
    | ReturnRejected
    | ReturnReceived
    | ReturnRefunded
    | OrderCopied
    | AddressCorrected
    | ErpDocumentRecorded
)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[OrderEvent] = msgspec.json.Decoder(OrderEvent)
_list_decoder = msgspec.json.Decoder(list[OrderEvent])


# The events most recently encoded, by their payload: the store's writer folds the very
# events the desk just encoded into the orders projection, and decoding them again there was
# a tenth of the writer thread (bench/intake.py, issue 11). An entry holds its payload, so an
# id is never reused while it is here, and the identity check makes a hit exactly the event
# that payload was encoded from (events are frozen: sharing one is safe). Encoding happens on
# the trio thread, lookups also in the writer's; OrderedDict's get, set and popitem are each
# one C call, atomic under the GIL. 4,096 covers a full desk pipeline (512 orders in flight,
# a handful of events each); a miss only costs the decode.
_RECENT_LIMIT: Final = 4096
_recent: OrderedDict[int, tuple[bytes, OrderEvent]] = OrderedDict()


def encode_event(event: OrderEvent) -> bytes:
    payload = _encoder.encode(event)
    _recent[id(payload)] = (payload, event)
    if len(_recent) > _RECENT_LIMIT:
        with suppress(KeyError):  # emptied meanwhile by another thread
            _recent.popitem(last=False)
    return payload


def decode_event(payload: bytes) -> OrderEvent:
    found = _recent.get(id(payload))
    if found is not None and found[0] is payload:
        return found[1]
    return _decoder.decode(payload)


def decode_events(payload: bytes) -> list[OrderEvent]:
    """Decode a JSON array of events, as `GET /v1/orders/{id}/events` returns them."""
    return _list_decoder.decode(payload)
