"""Cancellations: whole order or some units, before or after invoicing and payment."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from somsd.domain.cancellation import cancel_lines, cancel_order
from somsd.domain.errors import Conflict, DuplicateCommand, InvalidCommand
from somsd.domain.events import (
    CreditNoteIssued,
    InvoiceDrafted,
    LineQuantity,
    OrderCanceled,
    OrderEvent,
    RefundRecorded,
)
from somsd.domain.lifecycle import hold_order, receive_order, record_payment, record_shipment
from somsd.domain.order import Order
from somsd.domain.policy import OrderPolicy
from somsd.domain.refunds import record_refund
from somsd.domain.state import invariant_violations
from somsd.domain.testing import InMemoryOrderLog, sample_line, sample_order

D = Decimal
NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)
POLICY = OrderPolicy()
TWO_LINES = [sample_line("MUG-1", 2, "12.50"), sample_line("TEA-1", 1, "5.00", "7", "Tea")]


def received(order: Order) -> InMemoryOrderLog:
    log = InMemoryOrderLog()
    log.commit(
        "o-1",
        receive_order(order, order_id="o-1", channel="shop", policy=POLICY, now=NOW, actor="desk"),
    )
    return log


def commit(log: InMemoryOrderLog, events: list[OrderEvent]) -> list[OrderEvent]:
    stored = log.commit("o-1", events)
    assert invariant_violations(log.state("o-1")) == []
    return stored


def kinds(events: list[OrderEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


def cancel_all(log: InMemoryOrderLog, refund_id: str = "r-1") -> list[OrderEvent]:
    return cancel_order(
        log.state("o-1"),
        refund_id=refund_id,
        policy=POLICY,
        reason="customer asked",
        now=NOW,
        actor="user:anna",
    )


def cancel_some(log: InMemoryOrderLog, *lines: LineQuantity) -> list[OrderEvent]:
    return cancel_lines(
        log.state("o-1"),
        list(lines),
        refund_id="r-1",
        policy=POLICY,
        reason="out of stock",
        now=NOW,
        actor="user:anna",
    )


def test_unpaid_uninvoiced_order_is_canceled_without_money_moving() -> None:
    log = received(sample_order(payment_method="invoice", payment_status="pending"))
    events = commit(log, cancel_all(log))
    assert kinds(events) == ["OrderCanceled"]
    canceled = events[0]
    assert isinstance(canceled, OrderCanceled)
    assert (canceled.from_status, canceled.reason, canceled.actor) == (
        "pending",
        "customer asked",
        "user:anna",
    )
    state = log.state("o-1")
    assert (state.status, state.draft, state.amount_due) == ("canceled", None, D(0))
    assert [line.canceled for line in state.lines] == [2]


def test_invoiced_paid_order_gets_full_credit_note_and_refund() -> None:
    log = received(sample_order())
    events = commit(log, cancel_all(log))
    assert kinds(events) == ["OrderCanceled", "CreditNoteIssued", "RefundRecorded"]
    note, refund = events[1], events[2]
    assert isinstance(note, CreditNoteIssued)
    assert isinstance(refund, RefundRecorded)
    assert note.document.gross == D("29.90"), "shipping is credited on a full cancellation"
    assert note.document.includes_shipping
    assert (note.cause, note.number) == ("cancellation", "GS-2026-000001")
    assert (refund.amount, refund.cause, refund.refund_id) == (D("29.90"), "cancellation", "r-1")
    state = log.state("o-1")
    assert (state.net_paid, state.amount_due) == (D(0), D(0))


def test_paid_but_uninvoiced_order_is_refunded_without_credit_note() -> None:
    log = received(sample_order(payment_status="pending"))
    commit(
        log,
        record_payment(
            log.state("o-1"), D("10.00"), payment_id="p-1", policy=POLICY, now=NOW, actor="shop"
        ),
    )
    events = commit(log, cancel_all(log))
    assert kinds(events) == ["OrderCanceled", "RefundRecorded"]
    assert isinstance(events[1], RefundRecorded)
    assert events[1].amount == D("10.00")


def test_canceling_some_units_of_a_paid_invoiced_order_credits_and_refunds_them() -> None:
    log = received(sample_order(lines=TWO_LINES))
    events = commit(log, cancel_some(log, LineQuantity(0, 1)))
    assert kinds(events) == ["LinesCanceled", "CreditNoteIssued", "RefundRecorded"]
    note, refund = events[1], events[2]
    assert isinstance(note, CreditNoteIssued)
    assert isinstance(refund, RefundRecorded)
    assert note.document.gross == D("12.50")
    assert not note.document.includes_shipping, "the rest still ships"
    assert refund.amount == D("12.50")
    state = log.state("o-1")
    assert state.status == "pending"
    assert [line.open for line in state.lines] == [1, 1]


def test_canceling_units_of_a_draft_order_refreshes_the_draft() -> None:
    log = received(
        sample_order(lines=TWO_LINES, payment_method="invoice", payment_status="pending")
    )
    events = commit(log, cancel_some(log, LineQuantity(1, 1)))
    assert kinds(events) == ["LinesCanceled", "InvoiceDrafted"]
    draft = events[1]
    assert isinstance(draft, InvoiceDrafted)
    assert draft.document.gross == D("29.90")
    assert [line.line for line in draft.document.lines] == [0, None]


def test_partly_paid_order_gets_back_only_what_it_overpaid() -> None:
    """Paid 20.00 of 34.90; after canceling the 5.00 tea 29.90 is due: nothing to refund.
    After also canceling a mug (12.50) 17.40 is due: 2.60 comes back."""
    log = received(
        sample_order(lines=TWO_LINES, payment_method="invoice", payment_status="pending")
    )
    commit(
        log,
        record_payment(
            log.state("o-1"), D("20.00"), payment_id="p-1", policy=POLICY, now=NOW, actor="bank"
        ),
    )
    assert kinds(commit(log, cancel_some(log, LineQuantity(1, 1)))) == [
        "LinesCanceled",
        "InvoiceDrafted",
    ]
    events = cancel_lines(
        log.state("o-1"),
        [LineQuantity(0, 1)],
        refund_id="r-2",
        policy=POLICY,
        reason="broken in stock",
        now=NOW,
        actor="user:anna",
    )
    refund = commit(log, events)[-1]
    assert isinstance(refund, RefundRecorded)
    assert refund.amount == D("2.60")


def test_canceling_every_open_unit_of_an_unshipped_order_cancels_the_order() -> None:
    log = received(sample_order(lines=TWO_LINES))
    events = cancel_some(log, LineQuantity(0, 2), LineQuantity(1, 1))
    assert kinds(events) == ["OrderCanceled", "CreditNoteIssued", "RefundRecorded"]


def test_canceling_the_rest_of_a_partly_shipped_order_completes_it() -> None:
    log = received(sample_order(lines=TWO_LINES))
    commit(
        log,
        record_shipment(
            log.state("o-1"),
            [LineQuantity(0, 2)],
            shipment_id="s-1",
            policy=POLICY,
            now=NOW,
            actor="wh",
        ),
    )
    events = commit(log, cancel_some(log, LineQuantity(1, 1)))
    assert kinds(events) == ["LinesCanceled", "CreditNoteIssued", "RefundRecorded", "StatusChanged"]
    assert log.state("o-1").status == "complete"


def test_shipped_units_cannot_be_canceled() -> None:
    log = received(sample_order(lines=TWO_LINES))
    commit(
        log,
        record_shipment(
            log.state("o-1"),
            [LineQuantity(0, 1)],
            shipment_id="s-1",
            policy=POLICY,
            now=NOW,
            actor="wh",
        ),
    )
    with pytest.raises(Conflict) as caught:
        cancel_all(log)
    assert caught.value.code == "already_shipped"
    with pytest.raises(InvalidCommand) as refused:
        cancel_some(log, LineQuantity(0, 2))
    assert (refused.value.code, refused.value.path) == ("exceeds_open", "$.lines[0].quantity")


def test_second_cancellation_is_a_conflict() -> None:
    log = received(sample_order())
    commit(log, cancel_all(log))
    with pytest.raises(Conflict) as caught:
        cancel_all(log, refund_id="r-2")
    assert caught.value.code == "already_canceled"


def test_held_orders_can_be_canceled() -> None:
    log = received(sample_order())
    commit(log, hold_order(log.state("o-1"), policy=POLICY, reason="fraud", now=NOW, actor="u"))
    commit(log, cancel_all(log))
    state = log.state("o-1")
    assert (state.status, state.held_from) == ("canceled", None)


def test_cancellation_needs_a_reason_and_a_fresh_refund_id() -> None:
    log = received(sample_order())
    with pytest.raises(InvalidCommand, match="reason"):
        cancel_order(
            log.state("o-1"), refund_id="r-1", policy=POLICY, reason="", now=NOW, actor="u"
        )
    commit(
        log,
        record_refund(
            log.state("o-1"), D("1.00"), refund_id="r-1", reason="goodwill", now=NOW, actor="u"
        ),
    )
    with pytest.raises(DuplicateCommand):
        cancel_all(log, refund_id="r-1")


def test_late_payment_on_a_canceled_order_can_be_refunded_but_no_more() -> None:
    log = received(sample_order(payment_method="banktransfer", payment_status="pending"))
    commit(log, cancel_all(log))
    commit(
        log,
        record_payment(
            log.state("o-1"), D("29.90"), payment_id="p-1", policy=POLICY, now=NOW, actor="bank"
        ),
    )
    assert log.state("o-1").outstanding == D("-29.90")
    with pytest.raises(InvalidCommand) as caught:
        record_refund(
            log.state("o-1"), D("29.91"), refund_id="r-2", reason="returned", now=NOW, actor="u"
        )
    assert caught.value.code == "exceeds_paid"
    events = commit(
        log,
        record_refund(
            log.state("o-1"), D("29.90"), refund_id="r-2", reason="returned", now=NOW, actor="u"
        ),
    )
    assert kinds(events) == ["RefundRecorded"]
    assert log.state("o-1").net_paid == 0
