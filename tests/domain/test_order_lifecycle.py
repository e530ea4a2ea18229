"""Order decisions over its life: intake, status changes, holds, payments and shipments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest

from somsd.domain.errors import (
    Conflict,
    DuplicateCommand,
    IllegalTransition,
    InvalidCommand,
    InvalidOrder,
)
from somsd.domain.events import (
    HoldReleased,
    InvoiceDrafted,
    InvoiceIssued,
    LineQuantity,
    LinesShipped,
    OrderAccepted,
    OrderEvent,
    OrderHeld,
    OrderReceived,
    PaymentRecorded,
    StatusChanged,
    decode_events,
    encode_event,
)
from somsd.domain.holds import HoldRules
from somsd.domain.lifecycle import (
    change_status,
    hold_order,
    receive_order,
    record_payment,
    record_shipment,
    release_hold,
)
from somsd.domain.order import Order
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import InconsistentHistory, apply, fold, invariant_violations
from somsd.domain.status import CustomStatus, build_status_machine
from somsd.domain.testing import InMemoryOrderLog, sample_line, sample_order

NOW = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)
POLICY = OrderPolicy()
DESK = "order-desk"


def received(order: Order | None = None, policy: OrderPolicy = POLICY) -> InMemoryOrderLog:
    log = InMemoryOrderLog()
    events = receive_order(
        order or sample_order(), order_id="o-1", channel="b2b", policy=policy, now=NOW, actor=DESK
    )
    log.commit("o-1", events)
    return log


def kinds(events: list[OrderEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


def test_paid_card_order_is_accepted_and_invoiced_at_once() -> None:
    log = received()
    assert kinds(log.events("o-1")) == [
        "OrderReceived",
        "OrderAccepted",
        "PaymentRecorded",
        "InvoiceIssued",
    ]
    state = log.state("o-1")
    assert state.status == "pending"
    assert state.paid == Decimal("29.90")
    assert state.invoice is not None
    assert state.invoice.number == "RE-2026-000001"
    assert state.outstanding == 0
    assert invariant_violations(state) == []


def test_card_order_paid_one_cent_short_by_shop_rounding_is_invoiced() -> None:
    """Intake accepts a total one cent off; that payment counts as full, the invoice uses lines."""
    order = sample_order()
    order = msgspec.structs.replace(
        order, payment=msgspec.structs.replace(order.payment, amount=Decimal("29.89"))
    )
    state = received(order).state("o-1")
    assert state.invoice is not None
    assert state.invoice.document.gross == Decimal("29.90")
    assert state.outstanding == Decimal("0.01")


def test_invoice_order_gets_a_draft_and_no_invoice() -> None:
    log = received(sample_order(payment_method="invoice", payment_status="pending"))
    assert kinds(log.events("o-1")) == ["OrderReceived", "OrderAccepted", "InvoiceDrafted"]
    state = log.state("o-1")
    assert state.invoice is None
    assert state.draft is not None
    assert state.draft.gross == Decimal("29.90")
    assert state.outstanding == Decimal("29.90")


def test_unpaid_card_order_waits_for_payment_without_draft() -> None:
    log = received(sample_order(payment_status="authorized"))
    assert kinds(log.events("o-1")) == ["OrderReceived", "OrderAccepted"]


def test_received_event_carries_the_order_and_who_took_it_in() -> None:
    first = received().events("o-1")[0]
    assert isinstance(first, OrderReceived)
    assert (first.order_id, first.channel, first.actor, first.at) == ("o-1", "b2b", DESK, NOW)
    assert first.order == sample_order()


def test_receiving_an_invalid_order_built_in_code_is_refused() -> None:
    broken = sample_order(lines=[sample_line(quantity=0)])
    with pytest.raises(InvalidOrder) as caught:
        receive_order(broken, order_id="o-1", channel="b2b", policy=POLICY, now=NOW, actor=DESK)
    assert caught.value.problems[0].path == "$.lines[0].quantity"


def test_pickup_store_is_checked_against_the_configured_stores() -> None:
    order = sample_order(shipping_method="pickup", pickup_location="store-essen")
    policy = OrderPolicy(pickup_locations=frozenset({"store-dortmund"}))
    with pytest.raises(InvalidOrder, match="unknown store"):
        receive_order(order, order_id="o-1", channel="b2b", policy=policy, now=NOW, actor=DESK)


def test_naive_time_is_refused() -> None:
    """A clock without a zone is a bug in the caller, caught before anything is stored."""
    with pytest.raises(ValueError, match="timezone-aware"):
        receive_order(
            sample_order(),
            order_id="o-1",
            channel="b2b",
            policy=POLICY,
            now=datetime(2026, 11, 21, 10),
            actor=DESK,
        )


def test_order_matching_a_hold_rule_is_held_and_not_invoiced_until_released() -> None:
    policy = OrderPolicy(holds=HoldRules(blocked_emails=frozenset({"max@example.com"})))
    log = received(policy=policy)
    assert kinds(log.events("o-1")) == [
        "OrderReceived",
        "OrderAccepted",
        "PaymentRecorded",
        "OrderHeld",
    ]
    held = log.state("o-1")
    assert (held.status, held.held_from) == ("on-hold", "pending")
    assert [reason.code for reason in held.hold_reasons] == ["customer_blocked"]

    events = release_hold(
        held, policy=policy, reason="customer verified", now=NOW, actor="user:anna"
    )
    log.commit("o-1", events)
    assert kinds(events) == ["HoldReleased", "InvoiceIssued"]
    released = log.state("o-1")
    assert (released.status, released.held_from, released.hold_reasons) == ("pending", None, ())
    assert released.history[-1].actor == "user:anna"
    assert released.history[-1].reason == "customer verified"


def test_operator_status_change_is_recorded_with_who_and_why() -> None:
    state = received().state("o-1")
    events = change_status(
        state, "processing", policy=POLICY, reason="routed", now=NOW, actor="user:anna"
    )
    assert events == [
        StatusChanged(
            at=NOW,
            actor="user:anna",
            from_status="pending",
            to_status="processing",
            reason="routed",
        )
    ]
    after = apply(state, events[0])
    assert after.status == "processing"
    assert after.version == state.version + 1


def test_illegal_status_change_is_refused_and_lists_the_allowed_ones() -> None:
    state = received().state("o-1")
    with pytest.raises(IllegalTransition) as caught:
        change_status(state, "closed", policy=POLICY, reason="done", now=NOW, actor="user:anna")
    assert caught.value.allowed == ("processing", "on-hold", "canceled")


@pytest.mark.parametrize(
    ("target", "reason", "error", "code"),
    [
        ("processing", " ", InvalidCommand, "reason_required"),
        ("canceled", "customer asked", Conflict, "use_cancel"),
        ("new", "again", IllegalTransition, "illegal_transition"),
    ],
)
def test_status_change_refusals_have_codes(
    target: str, reason: str, error: type[Exception], code: str
) -> None:
    state = received().state("o-1")
    with pytest.raises(error) as caught:
        change_status(state, target, policy=POLICY, reason=reason, now=NOW, actor="user:anna")
    assert getattr(caught.value, "code", None) == code


def test_order_cannot_complete_with_units_still_open() -> None:
    log = received()
    log.commit(
        "o-1",
        change_status(
            log.state("o-1"), "processing", policy=POLICY, reason="x", now=NOW, actor=DESK
        ),
    )
    with pytest.raises(Conflict) as caught:
        change_status(log.state("o-1"), "complete", policy=POLICY, reason="x", now=NOW, actor=DESK)
    assert caught.value.code == "units_open"


def test_status_route_puts_on_hold_and_releases_to_where_the_order_was() -> None:
    log = received()
    log.commit(
        "o-1",
        change_status(
            log.state("o-1"), "processing", policy=POLICY, reason="x", now=NOW, actor=DESK
        ),
    )
    held = change_status(
        log.state("o-1"), "on-hold", policy=POLICY, reason="fraud check", now=NOW, actor="user:anna"
    )
    assert isinstance(held[0], OrderHeld)
    assert held[0].held_from == "processing"
    assert held[0].reasons[0].code == "manual"
    log.commit("o-1", held)
    with pytest.raises(IllegalTransition):
        hold_order(log.state("o-1"), policy=POLICY, reason="again", now=NOW, actor="user:anna")
    release = change_status(
        log.state("o-1"), "processing", policy=POLICY, reason="ok", now=NOW, actor="user:anna"
    )
    assert release == [HoldReleased(at=NOW, actor="user:anna", to_status="processing", reason="ok")]


def test_refused_move_off_hold_lists_the_release_first() -> None:
    log = received()
    log.commit("o-1", hold_order(log.state("o-1"), policy=POLICY, reason="r", now=NOW, actor=DESK))
    with pytest.raises(IllegalTransition) as caught:
        change_status(
            log.state("o-1"), "processing", policy=POLICY, reason="r", now=NOW, actor=DESK
        )
    assert caught.value.allowed == ("pending", "canceled")


def test_configured_hold_exit_leaves_the_hold_directly() -> None:
    """With the contract's on-hold config, a hold from pending may go straight to processing."""
    machine = build_status_machine(
        [CustomStatus("on-hold", from_=("pending",), to=("processing", "canceled"))]
    )
    policy = OrderPolicy(machine=machine)
    log = received(policy=policy)
    log.commit("o-1", hold_order(log.state("o-1"), policy=policy, reason="r", now=NOW, actor=DESK))
    events = change_status(
        log.state("o-1"), "processing", policy=policy, reason="checked", now=NOW, actor=DESK
    )
    log.commit("o-1", events)
    state = log.state("o-1")
    assert (state.status, state.held_from) == ("processing", None)
    assert invariant_violations(state) == []


def test_release_of_an_order_not_on_hold_is_a_conflict() -> None:
    with pytest.raises(Conflict) as caught:
        release_hold(received().state("o-1"), policy=POLICY, reason="r", now=NOW, actor=DESK)
    assert caught.value.code == "not_on_hold"


def test_full_payment_of_a_card_order_issues_its_invoice() -> None:
    log = received(sample_order(payment_status="pending"))
    first = record_payment(
        log.state("o-1"), Decimal("10.00"), payment_id="p-1", policy=POLICY, now=NOW, actor=DESK
    )
    assert kinds(first) == ["PaymentRecorded"]
    log.commit("o-1", first)
    second = record_payment(
        log.state("o-1"),
        Decimal("19.90"),
        payment_id="p-2",
        policy=POLICY,
        now=NOW,
        actor=DESK,
        reference="psp-4711",
    )
    assert kinds(second) == ["PaymentRecorded", "InvoiceIssued"]
    assert isinstance(second[0], PaymentRecorded)
    assert second[0].reference == "psp-4711"


def test_payment_of_an_invoice_order_does_not_issue_the_draft() -> None:
    log = received(sample_order(payment_method="invoice", payment_status="pending"))
    events = record_payment(
        log.state("o-1"), Decimal("29.90"), payment_id="p-1", policy=POLICY, now=NOW, actor=DESK
    )
    assert kinds(events) == ["PaymentRecorded"]


@pytest.mark.parametrize(
    ("amount", "payment_id", "error", "code"),
    [
        (Decimal("0"), "p-9", InvalidCommand, "invalid_amount"),
        (Decimal("-5.00"), "p-9", InvalidCommand, "invalid_amount"),
        (Decimal("1.005"), "p-9", InvalidCommand, "invalid_amount"),
        (Decimal("NaN"), "p-9", InvalidCommand, "invalid_amount"),
        (Decimal("1.00"), "intake", DuplicateCommand, "duplicate"),
        (Decimal("1.00"), "", InvalidCommand, "id_required"),
    ],
)
def test_bad_payments_are_refused(
    amount: Decimal, payment_id: str, error: type[Exception], code: str
) -> None:
    state = received().state("o-1")
    with pytest.raises(error) as caught:
        record_payment(state, amount, payment_id=payment_id, policy=POLICY, now=NOW, actor=DESK)
    assert getattr(caught.value, "code", None) == code


def test_shipments_move_the_order_through_processing_to_complete() -> None:
    order = sample_order(lines=[sample_line(quantity=2), sample_line(sku="TEA-1", quantity=1)])
    log = received(order)
    first = record_shipment(
        log.state("o-1"),
        [LineQuantity(0, 1)],
        shipment_id="s-1",
        policy=POLICY,
        now=NOW,
        actor="location/wh-dortmund",
        location="wh-dortmund",
        tracking_number="00340434161094042557",
    )
    assert kinds(first) == ["StatusChanged", "LinesShipped"]
    log.commit("o-1", first)
    second = record_shipment(
        log.state("o-1"),
        [LineQuantity(0, 1), LineQuantity(1, 1)],
        shipment_id="s-2",
        policy=POLICY,
        now=NOW + timedelta(days=1),
        actor="location/wh-dortmund",
    )
    assert kinds(second) == ["LinesShipped", "StatusChanged"]
    log.commit("o-1", second)
    state = log.state("o-1")
    assert state.status == "complete"
    assert [line.shipped for line in state.lines] == [2, 1]
    assert [entry.status for entry in state.history] == [
        "new",
        "pending",
        "processing",
        "complete",
    ]


@pytest.mark.parametrize(
    ("lines", "code", "path"),
    [
        ([LineQuantity(0, 3)], "exceeds_open", "$.lines[0].quantity"),
        ([LineQuantity(5, 1)], "unknown_line", "$.lines[0].line"),
        ([LineQuantity(0, 0)], "invalid_quantity", "$.lines[0].quantity"),
        ([LineQuantity(0, 1), LineQuantity(0, 1)], "duplicate_line", "$.lines[1].line"),
        ([], "no_lines", "$.lines"),
    ],
)
def test_shipment_quantities_are_checked_per_line(
    lines: list[LineQuantity], code: str, path: str
) -> None:
    state = received().state("o-1")
    with pytest.raises(InvalidCommand) as caught:
        record_shipment(state, lines, shipment_id="s-1", policy=POLICY, now=NOW, actor=DESK)
    assert (caught.value.code, caught.value.path) == (code, path)


def test_held_order_cannot_ship_and_shipment_ids_are_unique() -> None:
    log = received()
    state = log.state("o-1")
    log.commit(
        "o-1",
        record_shipment(
            state, [LineQuantity(0, 1)], shipment_id="s-1", policy=POLICY, now=NOW, actor=DESK
        ),
    )
    with pytest.raises(DuplicateCommand):
        record_shipment(
            log.state("o-1"),
            [LineQuantity(0, 1)],
            shipment_id="s-1",
            policy=POLICY,
            now=NOW,
            actor=DESK,
        )
    log.commit("o-1", hold_order(log.state("o-1"), policy=POLICY, reason="r", now=NOW, actor=DESK))
    with pytest.raises(Conflict) as caught:
        record_shipment(
            log.state("o-1"),
            [LineQuantity(0, 1)],
            shipment_id="s-2",
            policy=POLICY,
            now=NOW,
            actor=DESK,
        )
    assert caught.value.code == "not_shippable"


def test_custom_status_orders_can_ship_and_complete() -> None:
    machine = build_status_machine(
        [CustomStatus("awaiting-stock", from_=("pending",), to=("processing", "canceled"))]
    )
    policy = OrderPolicy(machine=machine)
    log = received(policy=policy)
    log.commit(
        "o-1",
        change_status(
            log.state("o-1"), "awaiting-stock", policy=policy, reason="r", now=NOW, actor=DESK
        ),
    )
    events = record_shipment(
        log.state("o-1"),
        [LineQuantity(0, 2)],
        shipment_id="s-1",
        policy=policy,
        now=NOW,
        actor=DESK,
    )
    assert kinds(events) == ["LinesShipped"], "awaiting-stock has no edge to complete"
    log.commit("o-1", events)
    log.commit(
        "o-1",
        change_status(
            log.state("o-1"), "processing", policy=policy, reason="r", now=NOW, actor=DESK
        ),
    )
    log.commit(
        "o-1",
        change_status(log.state("o-1"), "complete", policy=policy, reason="r", now=NOW, actor=DESK),
    )
    assert log.state("o-1").status == "complete"


def test_events_survive_a_round_trip_through_json_and_rebuild_the_same_state() -> None:
    """What the store writes and `db rebuild` reads back folds into the identical state."""
    log = received(sample_order(payment_method="invoice", payment_status="pending"))
    log.commit(
        "o-1",
        record_shipment(
            log.state("o-1"),
            [LineQuantity(0, 2)],
            shipment_id="s-1",
            policy=POLICY,
            now=NOW,
            actor=DESK,
        ),
    )
    events = log.events("o-1")
    payload = b"[" + b",".join(encode_event(event) for event in events) + b"]"
    assert decode_events(payload) == events
    assert fold(decode_events(payload)) == log.state("o-1")
    assert b'"type":"OrderReceived"' in payload


def test_events_from_a_newer_daemon_with_extra_fields_still_decode() -> None:
    payload = msgspec.json.encode(
        {"type": "OrderAccepted", "at": "2026-11-21T10:00:00Z", "actor": DESK, "channel_code": 3}
    )
    assert decode_events(b"[" + payload + b"]") == [
        OrderAccepted(at=datetime(2026, 11, 21, 10, tzinfo=UTC), actor=DESK)
    ]


def test_a_stream_no_decision_could_write_is_reported() -> None:
    with pytest.raises(InconsistentHistory, match="before OrderReceived"):
        fold([OrderAccepted(at=NOW, actor=DESK)])
    state = received().state("o-1")
    with pytest.raises(InconsistentHistory, match="no line 7"):
        apply(state, LinesShipped(at=NOW, actor=DESK, shipment_id="s", lines=(LineQuantity(7, 1),)))
    first = received().events("o-1")[0]
    with pytest.raises(InconsistentHistory, match="received twice"):
        apply(state, first)


def test_decisions_do_not_touch_the_state_they_are_given() -> None:
    state = received().state("o-1")
    before = msgspec.json.encode(state)
    change_status(state, "processing", policy=POLICY, reason="r", now=NOW, actor=DESK)
    with pytest.raises(IllegalTransition):
        change_status(state, "complete", policy=POLICY, reason="r", now=NOW, actor=DESK)
    assert msgspec.json.encode(state) == before


def test_invoice_is_issued_at_intake_with_the_document_and_date() -> None:
    events = received().events("o-1")
    invoice = events[-1]
    assert isinstance(invoice, InvoiceIssued)
    assert invoice.issue_date.isoformat() == "2026-11-21"
    assert invoice.document.gross == Decimal("29.90")
    assert not isinstance(invoice, InvoiceDrafted)


def test_shipped_unpaid_order_completes_only_when_its_money_arrives() -> None:
    """An invoice order that shipped stays in processing; the payment completes it."""
    order = sample_order(payment_method="invoice", payment_status="pending")
    log = received(order)
    shipped = record_shipment(
        log.state("o-1"),
        [LineQuantity(0, 2)],
        shipment_id="s-1",
        policy=POLICY,
        now=NOW,
        actor="location/wh-dortmund",
    )
    log.commit("o-1", shipped)
    assert log.state("o-1").status == "processing"
    paid = record_payment(
        log.state("o-1"), order.payment.amount, payment_id="p-1", policy=POLICY, now=NOW, actor=DESK
    )
    assert kinds(paid) == ["PaymentRecorded", "StatusChanged"]
    log.commit("o-1", paid)
    assert log.state("o-1").status == "complete"
