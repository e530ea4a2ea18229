"""Reorder / copy: a linked new order, at the original prices or as a free replacement."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from somsd.domain.errors import InvalidCommand
from somsd.domain.events import LineQuantity, OrderCopied, OrderReceived
from somsd.domain.holds import HoldRules
from somsd.domain.lifecycle import receive_order
from somsd.domain.policy import OrderPolicy
from somsd.domain.reorder import copy_order
from somsd.domain.testing import InMemoryOrderLog, sample_line, sample_order

D = Decimal
PLACED = datetime(2026, 11, 21, 10, tzinfo=UTC)
NOW = datetime(2026, 12, 2, 8, tzinfo=UTC)
POLICY = OrderPolicy()
LINES = [sample_line("MUG-1", 2, "12.50"), sample_line("TEA-1", 1, "5.00", "7", "Tea")]


def original() -> InMemoryOrderLog:
    log = InMemoryOrderLog()
    log.commit(
        "o-1",
        receive_order(
            sample_order(lines=LINES),
            order_id="o-1",
            channel="shop",
            policy=POLICY,
            now=PLACED,
            actor="desk",
        ),
    )
    return log


def test_replacement_is_a_free_linked_order_without_invoice() -> None:
    log = original()
    decision = copy_order(
        log.state("o-1"),
        new_order_id="o-2",
        new_external_id="1042-R1",
        new_number="1042-R1",
        replacement=True,
        policy=POLICY,
        reason="parcel lost",
        now=NOW,
        actor="user:anna",
        lines=[LineQuantity(0, 1)],
    )
    assert decision.original == [
        OrderCopied(
            at=NOW, actor="user:anna", new_order_id="o-2", replacement=True, reason="parcel lost"
        )
    ]
    assert [type(event).__name__ for event in decision.copy] == ["OrderReceived", "OrderAccepted"]
    received = decision.copy[0]
    assert isinstance(received, OrderReceived)
    assert (received.copied_from, received.replacement, received.channel) == ("o-1", True, "shop")
    order = decision.order
    assert [(line.sku, line.quantity, line.unit_price) for line in order.lines] == [
        ("MUG-1", 1, D(0))
    ]
    assert (order.shipping.price, order.payment.amount, order.payment.status) == (
        D(0),
        D(0),
        "paid",
    )
    assert order.placed_at == NOW
    assert order.customer == log.state("o-1").order.customer

    log.commit("o-1", decision.original)
    log.commit("o-2", decision.copy)
    assert log.state("o-1").copies == ("o-2",)
    copy = log.state("o-2")
    assert (copy.copied_from, copy.replacement, copy.invoice, copy.draft) == (
        "o-1",
        True,
        None,
        None,
    )


def test_repeat_order_keeps_prices_and_waits_for_payment() -> None:
    log = original()
    decision = copy_order(
        log.state("o-1"),
        new_order_id="o-3",
        new_external_id="1042-C1",
        new_number="1042-C1",
        replacement=False,
        policy=POLICY,
        reason="customer reorders",
        now=NOW,
        actor="user:anna",
    )
    order = decision.order
    assert [line.quantity for line in order.lines] == [2, 1]
    assert (order.payment.amount, order.payment.status) == (D("34.90"), "pending")
    assert [type(event).__name__ for event in decision.copy] == ["OrderReceived", "OrderAccepted"]


def test_copy_goes_through_intake_rules() -> None:
    """A copy for a customer blocked since is held like any new order."""
    policy = OrderPolicy(holds=HoldRules(blocked_customer_ids=frozenset({"77"})))
    decision = copy_order(
        original().state("o-1"),
        new_order_id="o-2",
        new_external_id="1042-R1",
        new_number="1042-R1",
        replacement=True,
        policy=policy,
        reason="broken",
        now=NOW,
        actor="u",
    )
    assert type(decision.copy[-1]).__name__ == "OrderHeld"


def test_copy_cannot_exceed_the_ordered_quantity() -> None:
    with pytest.raises(InvalidCommand) as caught:
        copy_order(
            original().state("o-1"),
            new_order_id="o-2",
            new_external_id="x",
            new_number="x",
            replacement=True,
            policy=POLICY,
            reason="broken",
            now=NOW,
            actor="u",
            lines=[LineQuantity(1, 2)],
        )
    assert (caught.value.code, caught.value.path) == ("exceeds_ordered", "$.lines[0].quantity")
