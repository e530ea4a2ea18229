"""Invoicing rules by payment method, and the decision to issue an invoice.

- Payment methods in `InvoicingPolicy.auto_methods` (by default card and PayPal, both paid at
  checkout) are invoiced automatically the moment the order is fully paid — unless the order is
  still new or on hold (the hold exists to stop the flow; the release invoices it).
- Every other method (invoice, bank transfer, cheque, COD) gets an `InvoiceDrafted` at intake,
  kept current when lines are canceled, and an operator (or the ERP) issues it with
  `issue_invoice`. Operators may also issue an auto-method order's invoice before payment.
- One invoice per order: it covers every unit not canceled or returned, plus shipping.
  Corrections afterwards are credit notes (`refunds`), never a second invoice.
- Free orders (a zero-price replacement) get neither an invoice nor a draft: nothing is billed,
  and the delivery note documents the shipment.

Invoices are emitted `UNNUMBERED`; the event store numbers them on commit (`numbering`).
The invoice date is today in the business's time zone (`InvoicingPolicy.timezone`).
"""

from __future__ import annotations

from datetime import date, datetime

from somsd.domain.errors import Conflict
from somsd.domain.events import UNNUMBERED, InvoiceDrafted, InvoiceIssued, OrderEvent
from somsd.domain.policy import InvoicingPolicy, OrderPolicy
from somsd.domain.state import Decision, OrderState
from somsd.domain.status import NEW, ON_HOLD

__all__ = ["draft_invoice", "invoice_date", "invoice_when_paid", "issue_invoice"]


def issue_invoice(
    state: OrderState, *, policy: OrderPolicy, now: datetime, actor: str
) -> list[OrderEvent]:
    """Issue the order's invoice (an operator's or the ERP's command), or raise `Conflict`."""
    if state.invoice is not None:
        raise Conflict(
            f"order already has invoice {state.invoice.number}; correct it with a credit note",
            code="already_invoiced",
        )
    if state.canceled:
        raise Conflict("a canceled order is not invoiced", code="order_canceled")
    if state.status in (NEW, ON_HOLD):
        raise Conflict(
            f'an order in "{state.status}" is not invoiced; accept or release it first',
            code="not_invoiceable",
        )
    if state.amount_due <= 0:
        raise Conflict("nothing to invoice: the order's total is 0", code="nothing_to_invoice")
    decision = Decision(state)
    _issue(decision, policy.invoicing, now, actor)
    return decision.events


def invoice_when_paid(
    decision: Decision, *, policy: OrderPolicy, now: datetime, actor: str
) -> None:
    """Emit the automatic invoice if the order's payment method and state call for it."""
    state = decision.state
    if (
        state.order.payment.method in policy.invoicing.auto_methods
        and state.invoice is None
        and not state.canceled
        and state.status not in (NEW, ON_HOLD)
        and state.amount_due > 0
        and state.paid_in_full
    ):
        _issue(decision, policy.invoicing, now, actor)


def draft_invoice(decision: Decision, *, policy: OrderPolicy, now: datetime, actor: str) -> None:
    """Emit (or refresh) the draft of an order an operator will invoice."""
    state = decision.state
    if (
        state.order.payment.method not in policy.invoicing.auto_methods
        and state.invoice is None
        and not state.canceled
        and state.amount_due > 0
    ):
        decision.emit(InvoiceDrafted(at=now, actor=actor, document=state.billable_document()))


def invoice_date(now: datetime, policy: InvoicingPolicy) -> date:
    """Today in the business's time zone: the invoice date and the numbering year."""
    return now.astimezone(policy.timezone).date()


def _issue(decision: Decision, policy: InvoicingPolicy, now: datetime, actor: str) -> None:
    decision.emit(
        InvoiceIssued(
            at=now,
            actor=actor,
            series=policy.invoice_series,
            number=UNNUMBERED,
            issue_date=invoice_date(now, policy),
            document=decision.state.billable_document(),
        )
    )
