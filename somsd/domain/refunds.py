"""Settling money after goods go back or are never sent: credit notes and refund records.

One rule for cancellations and returns alike, applied to the state *after* the cancellation or
return is recorded:

1. If the order was invoiced, the canceled or returned units (and, for a whole-order
   cancellation, the shipping) get a credit note against that invoice — its own gapless series.
2. The refund is whatever the customer has paid beyond what they now owe:
   `max(0, net_paid - amount_due)`. An unpaid invoice order gets a credit note and no refund (the
   receivable shrinks instead); a partly paid one gets back only the excess. So a refund can
   never exceed what was paid, whatever the sequence of cancellations, returns and payments.

Refunds are records: the channel actor executes them later (PayPal, card) and reports back.
`record_refund` covers the rest (a goodwill refund, a late double payment), capped at what the
customer has paid and not yet got back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from somsd.domain.documents import build_document
from somsd.domain.errors import InvalidCommand
from somsd.domain.events import (
    UNNUMBERED,
    CreditNoteIssued,
    OrderEvent,
    RefundCause,
    RefundRecorded,
)
from somsd.domain.guards import require_amount, require_new_id, require_reason
from somsd.domain.invoicing import invoice_date
from somsd.domain.money import ZERO
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import Decision, OrderState

__all__ = ["record_refund", "settle"]


def settle(
    decision: Decision,
    *,
    cause: RefundCause,
    credited_units: Mapping[int, int],
    credit_shipping: bool,
    refund_id: str,
    reason: str,
    policy: OrderPolicy,
    now: datetime,
    actor: str,
    rma_id: str | None = None,
) -> None:
    """Emit the credit note and refund that the decision's events so far call for."""
    state = decision.state
    invoice = state.invoice
    # A refunded shipping charge copies the invoice's shipping lines: same split, same tax.
    shipping = []
    if invoice is not None and credit_shipping and not state.shipping_credited:
        shipping = invoice.document.shipping
    if invoice is not None and (any(credited_units.values()) or shipping):
        document = build_document(state.order, "credit_note", credited_units, shipping=shipping)
        decision.emit(
            CreditNoteIssued(
                at=now,
                actor=actor,
                series=policy.invoicing.credit_note_series,
                number=UNNUMBERED,
                issue_date=invoice_date(now, policy.invoicing),
                invoice_number=invoice.number,
                cause=cause,
                document=document,
                rma_id=rma_id,
            )
        )
    excess = decision.state.net_paid - decision.state.amount_due
    if excess > 0:
        decision.emit(
            RefundRecorded(
                at=now,
                actor=actor,
                refund_id=refund_id,
                amount=excess,
                cause=cause,
                reason=reason,
                rma_id=rma_id,
            )
        )


def record_refund(
    state: OrderState,
    amount: Decimal,
    *,
    refund_id: str,
    reason: str,
    now: datetime,
    actor: str,
) -> list[OrderEvent]:
    """An operator's refund outside a cancellation or return, at most what is paid and kept."""
    require_new_id("refund", refund_id, state.refund_ids)
    reason = require_reason(reason)
    require_amount(amount, state.currency)
    refundable = max(state.net_paid, ZERO)
    if amount > refundable:
        raise InvalidCommand(
            f"cannot refund {amount} {state.currency}: only {refundable} is paid and not refunded",
            code="exceeds_paid",
            path="$.amount",
        )
    decision = Decision(state)
    decision.emit(
        RefundRecorded(
            at=now, actor=actor, refund_id=refund_id, amount=amount, cause="payment", reason=reason
        )
    )
    return decision.events
