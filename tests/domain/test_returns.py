"""Returns (RMA): requested -> approved | rejected -> received -> refunded, never beyond shipped."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from somsd.domain.errors import Conflict, DuplicateCommand, InvalidCommand
from somsd.domain.events import (
    CreditNoteIssued,
    InvoiceIssued,
    LineQuantity,
    OrderEvent,
    RefundRecorded,
    ReturnedLine,
    ReturnRefunded,
)
from somsd.domain.invoicing import issue_invoice
from somsd.domain.lifecycle import change_status, receive_order, record_shipment
from somsd.domain.order import Order
from somsd.domain.policy import OrderPolicy
from somsd.domain.returns import (
    approve_return,
    receive_return,
    refund_return,
    reject_return,
    request_return,
)
from somsd.domain.state import invariant_violations
from somsd.domain.testing import InMemoryOrderLog, sample_line, sample_order

D = Decimal
NOW = datetime(2026, 11, 28, 15, tzinfo=UTC)
POLICY = OrderPolicy()
LINES = [sample_line("MUG-1", 3, "12.50"), sample_line("TEA-1", 2, "5.00", "7", "Tea")]


def shipped(order: Order | None = None, *units: LineQuantity) -> InMemoryOrderLog:
    """An order received and shipped (all units unless `units` are given)."""
    order = order or sample_order(lines=LINES)
    log = InMemoryOrderLog()
    log.commit(
        "o-1",
        receive_order(order, order_id="o-1", channel="shop", policy=POLICY, now=NOW, actor="desk"),
    )
    lines = list(units) or [LineQuantity(i, line.quantity) for i, line in enumerate(order.lines)]
    commit(
        log,
        record_shipment(
            log.state("o-1"), lines, shipment_id="s-1", policy=POLICY, now=NOW, actor="wh"
        ),
    )
    return log


def commit(log: InMemoryOrderLog, events: list[OrderEvent]) -> list[OrderEvent]:
    stored = log.commit("o-1", events)
    assert invariant_violations(log.state("o-1")) == []
    return stored


def request(log: InMemoryOrderLog, rma_id: str, *lines: LineQuantity) -> list[OrderEvent]:
    return request_return(
        log.state("o-1"), list(lines), rma_id=rma_id, reason="too big", now=NOW, actor="shop"
    )


def through_receipt(log: InMemoryOrderLog, rma_id: str, *received: ReturnedLine) -> None:
    """Request the received units, approve, receive them."""
    requested: dict[int, int] = {}
    for item in received:
        requested[item.line] = requested.get(item.line, 0) + item.quantity
    commit(log, request(log, rma_id, *(LineQuantity(k, v) for k, v in requested.items())))
    commit(log, approve_return(log.state("o-1"), rma_id=rma_id, now=NOW, actor="user:anna"))
    commit(
        log,
        receive_return(log.state("o-1"), list(received), rma_id=rma_id, now=NOW, actor="wh"),
    )


def refund(log: InMemoryOrderLog, rma_id: str, refund_id: str = "r-1") -> list[OrderEvent]:
    return refund_return(
        log.state("o-1"), rma_id=rma_id, refund_id=refund_id, policy=POLICY, now=NOW, actor="u"
    )


def test_full_return_flow_credits_and_refunds_the_received_units() -> None:
    log = shipped()
    through_receipt(log, "rma-1", ReturnedLine(0, 1, "resellable"), ReturnedLine(0, 1, "damaged"))
    assert log.state("o-1").find_return("rma-1") is not None
    events = commit(log, refund(log, "rma-1"))
    assert [type(event).__name__ for event in events] == [
        "ReturnRefunded",
        "CreditNoteIssued",
        "RefundRecorded",
    ]
    done, note, money = events
    assert isinstance(done, ReturnRefunded)
    assert isinstance(note, CreditNoteIssued)
    assert isinstance(money, RefundRecorded)
    assert done.amount == D("25.00")
    assert (note.cause, note.rma_id, note.document.gross) == ("return", "rma-1", D("25.00"))
    assert not note.document.includes_shipping, "outbound shipping is not credited"
    assert (money.amount, money.rma_id) == (D("25.00"), "rma-1")
    state = log.state("o-1")
    assert state.status == "complete", "returns do not move the order status"
    assert [(line.returned, line.return_claimed) for line in state.lines] == [(2, 2), (0, 0)]
    rma = state.find_return("rma-1")
    assert rma is not None
    assert rma.status == "refunded"


def test_return_cannot_claim_more_than_shipped() -> None:
    log = shipped(None, LineQuantity(0, 2))
    with pytest.raises(InvalidCommand) as caught:
        request(log, "rma-1", LineQuantity(0, 3))
    assert (caught.value.code, caught.value.path) == ("exceeds_returnable", "$.lines[0].quantity")
    with pytest.raises(InvalidCommand) as caught:
        request(log, "rma-1", LineQuantity(1, 1))
    assert caught.value.code == "exceeds_returnable", "nothing of line 1 shipped"


def test_return_cannot_claim_what_earlier_returns_claimed() -> None:
    log = shipped()
    commit(log, request(log, "rma-1", LineQuantity(0, 2)))
    with pytest.raises(InvalidCommand, match="1 returnable unit"):
        request(log, "rma-2", LineQuantity(0, 2))
    commit(log, request(log, "rma-2", LineQuantity(0, 1)))


def test_rejected_return_frees_its_claim() -> None:
    log = shipped()
    commit(log, request(log, "rma-1", LineQuantity(0, 3)))
    commit(
        log,
        reject_return(
            log.state("o-1"), rma_id="rma-1", reason="outside 30 days", now=NOW, actor="u"
        ),
    )
    assert log.state("o-1").lines[0].returnable == 3
    commit(log, request(log, "rma-2", LineQuantity(0, 3)))


def test_units_announced_but_not_sent_are_freed_on_refund() -> None:
    log = shipped()
    commit(log, request(log, "rma-1", LineQuantity(0, 3)))
    commit(log, approve_return(log.state("o-1"), rma_id="rma-1", now=NOW, actor="u"))
    commit(
        log,
        receive_return(
            log.state("o-1"),
            [ReturnedLine(0, 1, "resellable")],
            rma_id="rma-1",
            now=NOW,
            actor="wh",
        ),
    )
    money = commit(log, refund(log, "rma-1"))[-1]
    assert isinstance(money, RefundRecorded)
    assert money.amount == D("12.50"), "only what arrived is refunded"
    line = log.state("o-1").lines[0]
    assert (line.returned, line.return_claimed, line.returnable) == (1, 1, 2)


@pytest.mark.parametrize(
    ("received", "code", "path"),
    [
        ([ReturnedLine(1, 1, "resellable")], "line_not_in_return", "$.lines[0].line"),
        (
            [ReturnedLine(0, 2, "resellable"), ReturnedLine(0, 2, "damaged")],
            "exceeds_requested",
            "$.lines[1].quantity",
        ),
        (
            [ReturnedLine(0, 1, "damaged"), ReturnedLine(0, 1, "damaged")],
            "duplicate_line",
            "$.lines[1].line",
        ),
        ([ReturnedLine(0, 0, "damaged")], "invalid_quantity", "$.lines[0].quantity"),
        ([], "no_lines", "$.lines"),
    ],
)
def test_received_quantities_are_checked_against_the_request(
    received: list[ReturnedLine], code: str, path: str
) -> None:
    log = shipped()
    commit(log, request(log, "rma-1", LineQuantity(0, 3)))
    commit(log, approve_return(log.state("o-1"), rma_id="rma-1", now=NOW, actor="u"))
    with pytest.raises(InvalidCommand) as caught:
        receive_return(log.state("o-1"), received, rma_id="rma-1", now=NOW, actor="wh")
    assert (caught.value.code, caught.value.path) == (code, path)


def test_return_steps_must_come_in_order() -> None:
    log = shipped()
    commit(log, request(log, "rma-1", LineQuantity(0, 1)))
    with pytest.raises(Conflict) as caught:
        receive_return(
            log.state("o-1"), [ReturnedLine(0, 1, "damaged")], rma_id="rma-1", now=NOW, actor="wh"
        )
    assert caught.value.code == "return_state"
    assert 'is "requested", not "approved"' in str(caught.value)
    with pytest.raises(Conflict):
        refund(log, "rma-1")
    commit(log, approve_return(log.state("o-1"), rma_id="rma-1", now=NOW, actor="u"))
    with pytest.raises(Conflict):
        reject_return(log.state("o-1"), rma_id="rma-1", reason="r", now=NOW, actor="u")
    with pytest.raises(InvalidCommand) as unknown:
        approve_return(log.state("o-1"), rma_id="rma-9", now=NOW, actor="u")
    assert unknown.value.code == "unknown_return"
    with pytest.raises(DuplicateCommand):
        request(log, "rma-1", LineQuantity(0, 1))


def test_unpaid_invoice_order_return_gets_credit_note_but_no_refund() -> None:
    order = sample_order(lines=LINES, payment_method="invoice", payment_status="pending")
    log = shipped(order)
    commit(log, issue_invoice(log.state("o-1"), policy=POLICY, now=NOW, actor="u"))
    through_receipt(log, "rma-1", ReturnedLine(1, 2, "resellable"))
    events = commit(log, refund(log, "rma-1"))
    assert [type(event).__name__ for event in events] == ["ReturnRefunded", "CreditNoteIssued"]
    assert log.state("o-1").outstanding == D("42.40"), "52.40 invoiced - 10.00 credited"


def test_return_before_invoicing_reduces_what_is_invoiced() -> None:
    order = sample_order(lines=LINES, payment_method="invoice", payment_status="pending")
    log = shipped(order)
    through_receipt(log, "rma-1", ReturnedLine(0, 3, "damaged"))
    events = commit(log, refund(log, "rma-1"))
    assert [type(event).__name__ for event in events] == ["ReturnRefunded"]
    invoice = commit(log, issue_invoice(log.state("o-1"), policy=POLICY, now=NOW, actor="u"))[0]
    assert isinstance(invoice, InvoiceIssued)
    assert invoice.document.gross == D("14.90"), "tea and shipping only"


def test_order_with_a_running_return_cannot_be_closed() -> None:
    log = shipped()
    commit(log, request(log, "rma-1", LineQuantity(0, 1)))
    with pytest.raises(Conflict) as caught:
        change_status(log.state("o-1"), "closed", policy=POLICY, reason="r", now=NOW, actor="u")
    assert caught.value.code == "returns_open"
    assert "rma-1" in str(caught.value)


def test_closed_orders_take_no_more_returns() -> None:
    log = shipped()
    commit(
        log,
        change_status(
            log.state("o-1"), "closed", policy=POLICY, reason="30 days over", now=NOW, actor="u"
        ),
    )
    with pytest.raises(Conflict) as caught:
        request(log, "rma-1", LineQuantity(0, 1))
    assert caught.value.code == "order_closed"
