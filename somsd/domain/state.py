"""Order state: what an order's event stream adds up to, folded one event at a time.

`apply(state, event)` is the only way state changes, and it never refuses: every rule was
checked when the event was decided, and a stored event is a fact. What `apply` does raise,
`InconsistentHistory`, means a stream that no decision function could have produced (an event
before `OrderReceived`, an unknown line or return) — a corrupt log, for `somsd db verify`.

The state is immutable (frozen Structs, tuples): a decision computes on a snapshot, and an actor
that keeps the last committed state can discard a refused batch simply by not replacing it.

`Decision` is the scratch pad decision functions build their answer on: each emitted event is
folded at once, so a later step of the same decision sees the earlier ones (the invoice that
payment triggers sees the payment), exactly as a replay will.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

import msgspec

from somsd.domain.documents import InvoiceDocument, build_document, shipping_by_rate
from somsd.domain.events import (
    UNNUMBERED,
    AddressCorrected,
    CreditNoteIssued,
    ErpDocumentRecorded,
    HoldReleased,
    InvoiceDrafted,
    InvoiceIssued,
    LineQuantity,
    LinesCanceled,
    LinesShipped,
    OrderAccepted,
    OrderCanceled,
    OrderCopied,
    OrderEvent,
    OrderHeld,
    OrderReceived,
    PaymentRecorded,
    RefundRecorded,
    ReturnApproved,
    ReturnedLine,
    ReturnReceived,
    ReturnRefunded,
    ReturnRejected,
    ReturnRequested,
    StatusChanged,
)
from somsd.domain.holds import HoldReason
from somsd.domain.money import ZERO, minor_unit, round_money, sum_money
from somsd.domain.order import Order
from somsd.domain.status import CANCELED, NEW, ON_HOLD, PENDING

__all__ = [
    "Decision",
    "ErpDocument",
    "InconsistentHistory",
    "IssuedDocument",
    "LineState",
    "OrderState",
    "ReturnState",
    "ReturnStatus",
    "StatusEntry",
    "apply",
    "fold",
    "invariant_violations",
]

ReturnStatus = Literal["requested", "approved", "rejected", "received", "refunded"]


class InconsistentHistory(ValueError):
    """An event stream no sequence of decisions could have produced."""


class LineState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Unit counters of one order line; all start at zero except `ordered`."""

    ordered: int
    canceled: int = 0
    shipped: int = 0
    return_claimed: int = 0  # in returns requested, approved, received or refunded
    returned: int = 0  # came back and was credited by a refunded return
    invoiced: int = 0
    credited: int = 0

    @property
    def open(self) -> int:
        """Units still to ship: neither shipped nor canceled."""
        return self.ordered - self.canceled - self.shipped

    @property
    def returnable(self) -> int:
        """Shipped units no return has claimed yet."""
        return self.shipped - self.return_claimed

    @property
    def billable(self) -> int:
        """Units the customer pays for: neither canceled nor returned."""
        return self.ordered - self.canceled - self.returned


class IssuedDocument(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    number: str
    issue_date: date
    document: InvoiceDocument


class ReturnState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    rma_id: str
    status: ReturnStatus
    lines: tuple[LineQuantity, ...]  # as requested
    reason: str
    received: tuple[ReturnedLine, ...] = ()

    def received_quantity(self, line: int) -> int:
        return sum(item.quantity for item in self.received if item.line == line)


class StatusEntry(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    status: str
    at: datetime
    actor: str
    reason: str


class ErpDocument(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A document an ERP holds for the order (see `ErpDocumentRecorded`)."""

    system: str
    kind: str
    key: str
    cause: str


class OrderState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    order_id: str
    channel: str
    order: Order
    version: int  # events folded so far: the expected version for the next append
    status: str
    history: tuple[StatusEntry, ...]
    lines: tuple[LineState, ...]
    held_from: str | None = None
    hold_reasons: tuple[HoldReason, ...] = ()
    canceled: bool = False
    draft: InvoiceDocument | None = None
    invoice: IssuedDocument | None = None
    credit_notes: tuple[IssuedDocument, ...] = ()
    paid: Decimal = ZERO
    refunded: Decimal = ZERO
    payment_ids: frozenset[str] = frozenset()
    shipment_ids: frozenset[str] = frozenset()
    refund_ids: frozenset[str] = frozenset()
    returns: tuple[ReturnState, ...] = ()
    copied_from: str | None = None
    replacement: bool = False
    copies: tuple[str, ...] = ()
    erp_documents: tuple[ErpDocument, ...] = ()

    @property
    def currency(self) -> str:
        return self.order.currency

    @property
    def net_paid(self) -> Decimal:
        """Money the customer has given and not got back."""
        return self.paid - self.refunded

    @property
    def credited(self) -> Decimal:
        return sum_money((note.document.gross for note in self.credit_notes), self.currency)

    @property
    def shipping_credited(self) -> bool:
        return any(note.document.includes_shipping for note in self.credit_notes)

    @property
    def amount_due(self) -> Decimal:
        """What the customer owes in total for the order as it stands (paid or not).

        After invoicing that is the invoice minus its credit notes; before, the units neither
        canceled nor returned plus shipping; nothing for a canceled order.
        """
        if self.invoice is not None:
            return round_money(self.invoice.document.gross - self.credited, self.currency)
        if self.canceled:
            return ZERO
        return self.billable_document().gross

    @property
    def outstanding(self) -> Decimal:
        """Still to pay (negative: the customer paid more than is due)."""
        return round_money(self.amount_due - self.net_paid, self.currency)

    @property
    def paid_in_full(self) -> bool:
        """At most one minor unit short: the rounding difference intake accepts in totals."""
        return self.outstanding <= minor_unit(self.currency)

    def billable_document(self) -> InvoiceDocument:
        """The invoice the order would get now: billable units and the shipping."""
        cached = _last_billable
        if cached is not None and cached[0] is self:
            return cached[1]
        units = {index: line.billable for index, line in enumerate(self.lines)}
        shipping = [] if self.canceled else shipping_by_rate(self.order, units)
        document = build_document(self.order, "invoice", units, shipping=shipping)
        _remember_billable((self, document))
        return document

    def find_return(self, rma_id: str) -> ReturnState | None:
        return next((rma for rma in self.returns if rma.rma_id == rma_id), None)

    @property
    def units_open(self) -> int:
        return sum(line.open for line in self.lines)

    @property
    def units_shipped(self) -> int:
        return sum(line.shipped for line in self.lines)


# One decision asks for the same state's billable document up to three times (amount_due,
# paid_in_full, the invoice itself); building it is most of intake's domain time (cProfile of
# receive_order). States are immutable, so the last one's document is kept and found by
# identity. The cache holds a reference to its state, so the identity can not be reused; the
# tuple is swapped in one assignment, so threads (desk, store writer) only ever see a whole pair.
_last_billable: tuple[OrderState, InvoiceDocument] | None = None


def _remember_billable(pair: tuple[OrderState, InvoiceDocument]) -> None:
    global _last_billable  # noqa: PLW0603  # a one-entry cache, see above
    _last_billable = pair


class Decision:
    """Events being decided, and the state they lead to, so each step sees the ones before."""

    def __init__(self, state: OrderState, events: Iterable[OrderEvent] = ()) -> None:
        self.state = state
        self.events: list[OrderEvent] = list(events)

    @classmethod
    def start(cls, received: OrderReceived) -> Decision:
        """A decision that begins a new order stream."""
        return cls(apply(None, received), [received])

    def emit(self, event: OrderEvent) -> None:
        self.state = apply(self.state, event)
        self.events.append(event)


def fold(events: Iterable[OrderEvent]) -> OrderState:
    """Rebuild an order's state from its whole stream."""
    state: OrderState | None = None
    for event in events:
        state = apply(state, event)
    if state is None:
        raise InconsistentHistory("an order stream needs at least its OrderReceived event")
    return state


def apply(state: OrderState | None, event: OrderEvent) -> OrderState:
    """The state after `event`; `state` is None only before the stream's first event."""
    if isinstance(event, OrderReceived):
        if state is not None:
            raise InconsistentHistory(f"order {state.order_id} received twice")
        return OrderState(
            order_id=event.order_id,
            channel=event.channel,
            order=event.order,
            version=1,
            status=NEW,
            history=(StatusEntry(status=NEW, at=event.at, actor=event.actor, reason="received"),),
            lines=tuple(LineState(ordered=line.quantity) for line in event.order.lines),
            copied_from=event.copied_from,
            replacement=event.replacement,
        )
    if state is None:
        raise InconsistentHistory(f"{type(event).__name__} before OrderReceived")
    state = msgspec.structs.replace(state, version=state.version + 1)
    match event:
        case OrderAccepted():
            return _enter(state, event, PENDING, "accepted")
        case OrderHeld():
            reason = "; ".join(hold.message for hold in event.reasons)
            state = _enter(state, event, ON_HOLD, reason)
            return msgspec.structs.replace(
                state, held_from=event.held_from, hold_reasons=event.reasons
            )
        case HoldReleased():
            state = _enter(state, event, event.to_status, event.reason)
            return msgspec.structs.replace(state, held_from=None, hold_reasons=())
        case StatusChanged():
            state = _enter(state, event, event.to_status, event.reason)
            if event.from_status == ON_HOLD:
                state = msgspec.structs.replace(state, held_from=None, hold_reasons=())
            return state
        case PaymentRecorded():
            return msgspec.structs.replace(
                state,
                paid=state.paid + event.amount,
                payment_ids=state.payment_ids | {event.payment_id},
            )
        case LinesShipped():
            return msgspec.structs.replace(
                state,
                lines=_add_units(state, event.lines, "shipped"),
                shipment_ids=state.shipment_ids | {event.shipment_id},
            )
        case InvoiceDrafted():
            return msgspec.structs.replace(state, draft=event.document)
        case InvoiceIssued():
            issued = IssuedDocument(
                number=event.number, issue_date=event.issue_date, document=event.document
            )
            return msgspec.structs.replace(
                state,
                invoice=issued,
                draft=None,
                lines=_add_units(state, _document_quantities(event.document), "invoiced"),
            )
        case CreditNoteIssued():
            note = IssuedDocument(
                number=event.number, issue_date=event.issue_date, document=event.document
            )
            return msgspec.structs.replace(
                state,
                credit_notes=(*state.credit_notes, note),
                lines=_add_units(state, _document_quantities(event.document), "credited"),
            )
        case OrderCanceled():
            state = _enter(state, event, CANCELED, event.reason)
            return msgspec.structs.replace(
                state,
                canceled=True,
                draft=None,
                held_from=None,
                hold_reasons=(),
                lines=_add_units(state, event.lines, "canceled"),
            )
        case LinesCanceled():
            return msgspec.structs.replace(
                state,
                lines=_add_units(state, event.lines, "canceled"),
            )
        case RefundRecorded():
            return msgspec.structs.replace(
                state,
                refunded=state.refunded + event.amount,
                refund_ids=state.refund_ids | {event.refund_id},
            )
        case ReturnRequested():
            rma = ReturnState(
                rma_id=event.rma_id, status="requested", lines=event.lines, reason=event.reason
            )
            return msgspec.structs.replace(
                state,
                returns=(*state.returns, rma),
                lines=_add_units(state, event.lines, "return_claimed"),
            )
        case ReturnApproved():
            return _update_return(state, event.rma_id, status="approved")
        case ReturnRejected():
            rma = _return(state, event.rma_id)
            state = _update_return(state, event.rma_id, status="rejected")
            return msgspec.structs.replace(
                state,
                lines=_add_units(state, rma.lines, "return_claimed", -1),
            )
        case ReturnReceived():
            return _update_return(state, event.rma_id, status="received", received=event.lines)
        case ReturnRefunded():
            rma = _return(state, event.rma_id)
            state = _update_return(state, event.rma_id, status="refunded")
            # Units the customer announced but never sent are no longer claimed.
            unsent = [
                LineQuantity(item.line, item.quantity - rma.received_quantity(item.line))
                for item in rma.lines
            ]
            received = [LineQuantity(item.line, item.quantity) for item in rma.received]
            state = msgspec.structs.replace(
                state,
                lines=_add_units(state, unsent, "return_claimed", -1),
            )
            return msgspec.structs.replace(
                state,
                lines=_add_units(state, received, "returned"),
            )
        case OrderCopied():
            return msgspec.structs.replace(state, copies=(*state.copies, event.new_order_id))
        case AddressCorrected():
            order = msgspec.structs.replace(
                state.order,
                billing_address=event.billing_address or state.order.billing_address,
                shipping_address=event.shipping_address or state.order.shipping_address,
            )
            return msgspec.structs.replace(state, order=order)
        case ErpDocumentRecorded():
            document = ErpDocument(
                system=event.system, kind=event.kind, key=event.key, cause=event.cause
            )
            return msgspec.structs.replace(state, erp_documents=(*state.erp_documents, document))
        case OrderReceived():  # pragma: no cover - handled above; keeps the match exhaustive
            raise AssertionError("unreachable")


def _enter(state: OrderState, event: OrderEvent, status: str, reason: str) -> OrderState:
    entry = StatusEntry(status=status, at=event.at, actor=event.actor, reason=reason)
    return msgspec.structs.replace(state, status=status, history=(*state.history, entry))


def _add_units(
    state: OrderState, quantities: Iterable[LineQuantity], counter: str, sign: int = 1
) -> tuple[LineState, ...]:
    """The lines with `counter` ("shipped", "canceled", ...) changed by each item's units."""
    lines = list(state.lines)
    for item in quantities:
        if not 0 <= item.line < len(lines):
            raise InconsistentHistory(f"order {state.order_id} has no line {item.line}")
        line = lines[item.line]
        units = getattr(line, counter) + sign * item.quantity
        lines[item.line] = msgspec.structs.replace(line, **{counter: units})
    return tuple(lines)


def _document_quantities(document: InvoiceDocument) -> list[LineQuantity]:
    return [
        LineQuantity(item.line, item.quantity) for item in document.lines if item.line is not None
    ]


def _return(state: OrderState, rma_id: str) -> ReturnState:
    rma = state.find_return(rma_id)
    if rma is None:
        raise InconsistentHistory(f"order {state.order_id} has no return {rma_id}")
    return rma


def _update_return(
    state: OrderState,
    rma_id: str,
    *,
    status: ReturnStatus,
    received: tuple[ReturnedLine, ...] | None = None,
) -> OrderState:
    rma = _return(state, rma_id)
    updated = msgspec.structs.replace(
        rma, status=status, received=rma.received if received is None else received
    )
    return msgspec.structs.replace(
        state, returns=tuple(updated if item.rma_id == rma_id else item for item in state.returns)
    )


def invariant_violations(state: OrderState) -> list[str]:
    """Every rule a consistent order breaks (empty for any state decisions can produce).

    The property tests assert it after every step; `somsd db verify` can run it on every
    stored stream.
    """
    problems: list[str] = []
    for index, line in enumerate(state.lines):
        name = f"line {index}"
        if not 0 <= line.canceled + line.shipped <= line.ordered:
            problems.append(f"{name}: canceled + shipped exceeds ordered")
        if not 0 <= line.return_claimed <= line.shipped:
            problems.append(f"{name}: returns claim more than was shipped")
        if not 0 <= line.returned <= line.return_claimed:
            problems.append(f"{name}: more units returned than claimed")
        if not 0 <= line.credited <= line.invoiced:
            problems.append(f"{name}: more units credited than invoiced")
        if line.invoiced > line.ordered:
            problems.append(f"{name}: more units invoiced than ordered")
    if state.paid < 0 or state.refunded < 0:
        problems.append("negative payment or refund total")
    if state.refunded > state.paid:
        problems.append(f"refunded {state.refunded} exceeds paid {state.paid}")
    if (state.status == ON_HOLD) != (state.held_from is not None):
        problems.append("held_from is set exactly when the order is on hold")
    if state.canceled and state.units_shipped:
        problems.append("a canceled order has shipped units")
    if state.canceled and state.units_open:
        problems.append("a canceled order still has open units")
    if state.invoice is not None and state.credited > state.invoice.document.gross:
        problems.append("credit notes exceed the invoice")
    documents = [*state.credit_notes, *([state.invoice] if state.invoice else [])]
    problems.extend(
        f"document without a number: {doc.document.kind}"
        for doc in documents
        if doc.number == UNNUMBERED
    )
    for rma in state.returns:
        for item in rma.lines:
            if rma.received_quantity(item.line) > item.quantity:
                problems.append(f"return {rma.rma_id}: more units received than requested")
    return problems
