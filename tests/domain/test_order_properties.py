"""Order life as a hypothesis state machine: random operators, shops and warehouses act on many
orders at once, and after every step the books must still be right.

What must hold after any sequence of operations (refused commands included):
- no order reaches an illegal state (`invariant_violations` is empty, the status is one of the
  machine's) and every status change emitted was an edge of the machine (or a hold release to
  where the hold came from);
- invoice and credit-note numbers are gapless and unique per series and year, across all orders,
  including across a year boundary;
- refunds never exceed what was paid, per order;
- returns never claim more than was shipped, per line, counted from the returns themselves;
- replaying the stored events (after a JSON round trip) rebuilds exactly the same state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from itertools import count
from typing import Any

import msgspec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from somsd.domain.cancellation import cancel_lines, cancel_order
from somsd.domain.errors import DomainError
from somsd.domain.events import (
    CreditNoteIssued,
    HoldReleased,
    InvoiceIssued,
    LineQuantity,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderHeld,
    ReturnedLine,
    StatusChanged,
    decode_events,
    encode_event,
)
from somsd.domain.holds import HoldRules
from somsd.domain.invoicing import issue_invoice
from somsd.domain.lifecycle import (
    change_status,
    hold_order,
    receive_order,
    record_payment,
    record_shipment,
    release_hold,
)
from somsd.domain.money import round_money
from somsd.domain.numbering import numbering_problems, parse_number
from somsd.domain.order import PAYMENT_METHODS, Customer, Order
from somsd.domain.policy import OrderPolicy
from somsd.domain.refunds import record_refund
from somsd.domain.reorder import copy_order
from somsd.domain.returns import (
    approve_return,
    receive_return,
    refund_return,
    reject_return,
    request_return,
)
from somsd.domain.state import OrderState, apply, fold, invariant_violations
from somsd.domain.status import CANCELED, NEW, ON_HOLD, CustomStatus, build_status_machine
from somsd.domain.testing import InMemoryOrderLog, sample_line, sample_order

D = Decimal
MACHINE = build_status_machine(
    [
        CustomStatus(
            "awaiting-stock", from_=("pending", "processing"), to=("processing", "canceled")
        ),
        CustomStatus("on-hold", from_=("awaiting-stock",), to=("processing",)),
    ]
)
POLICY = OrderPolicy(
    machine=MACHINE,
    holds=HoldRules(
        unpaid_limits={"EUR": D("200.00")}, blocked_emails=frozenset({"blocked@example.com"})
    ),
)
CUSTOMERS = [
    Customer(id="77", email="max@example.com", name="Max Muster"),
    Customer(id="13", email="blocked@example.com", name="Blocked"),
]

lines = st.lists(
    st.builds(
        sample_line,
        sku=st.sampled_from(["MUG-1", "TEA-1", "BOOK-1"]),
        quantity=st.integers(min_value=1, max_value=3),
        unit_price=st.sampled_from(["0.00", "0.01", "5.00", "12.50", "99.99"]),
        tax_rate=st.sampled_from(["0", "7", "19"]),
    ),
    min_size=1,
    max_size=3,
)
orders = st.builds(
    sample_order,
    lines=lines,
    shipping_price=st.sampled_from(["0", "4.90"]),
    payment_method=st.sampled_from(sorted(PAYMENT_METHODS)),
    payment_status=st.sampled_from(["paid", "pending", "authorized"]),
    # One order in eight from a blocked customer: enough holds, enough orders that flow on.
    customer=st.sampled_from([*[CUSTOMERS[0]] * 7, CUSTOMERS[1]]),
)
picks = st.integers(min_value=0, max_value=1_000)
units = st.integers(min_value=1, max_value=3)
# Line picks wrap around the order's lines, so most commands name a real line; 3 still names a
# line that does not exist for orders with fewer lines, to exercise the refusals.
line_indices = st.integers(min_value=0, max_value=3)
# Cancelling the whole order ends its story early; do it on one roll in four so other rules
# get to act on the order first.
rare = st.integers(min_value=0, max_value=3)


class OrderLife(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log = InMemoryOrderLog()
        # Starts days before New Year so the numbering year changes under way.
        self.now = datetime(2026, 12, 30, 9, tzinfo=UTC)
        self.ids = count(1)
        self.order_ids: list[str] = []

    # -- helpers -------------------------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def pick(self, pick: int) -> OrderState:
        return self.log.state(self.order_ids[pick % len(self.order_ids)])

    def decide(self, state: OrderState, decision: Callable[[], list[OrderEvent]]) -> None:
        """Run a decision; a refusal must change nothing, an answer is committed and checked."""
        before = msgspec_bytes(state)
        try:
            events = decision()
        except DomainError:
            assert msgspec_bytes(self.log.state(state.order_id)) == before
            return
        stored = self.log.commit(state.order_id, events)
        check_transitions(state, stored)

    # -- rules: channels and intake ------------------------------------------------------------

    @initialize(first=orders, second=orders)
    def open_shop(self, first: Order, second: Order) -> None:
        self.take_in(first)
        self.take_in(second)

    @rule(order=orders, roll=rare)
    def receive(self, order: Order, roll: int) -> None:
        # Rare, so that steps mostly act on the orders there are rather than start new ones.
        if not roll:
            self.take_in(order)

    def take_in(self, order: Order) -> None:
        order_id = self.next_id("o")
        events = receive_order(
            order, order_id=order_id, channel="shop", policy=POLICY, now=self.now, actor="shop"
        )
        stored = self.log.commit(order_id, events)
        first = apply(None, stored[0])
        assert first.status == NEW
        check_transitions(first, stored[1:])
        self.order_ids.append(order_id)

    @rule(days=st.integers(min_value=0, max_value=2), hours=st.integers(min_value=0, max_value=23))
    def time_passes(self, days: int, hours: int) -> None:
        self.now += timedelta(days=days, hours=hours)

    # -- rules: operators ----------------------------------------------------------------------

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, status=st.sampled_from(MACHINE.statuses))
    def change_status(self, pick: int, status: str) -> None:
        state = self.pick(pick)
        self.decide(
            state,
            lambda: change_status(
                state, status, policy=POLICY, reason="operator", now=self.now, actor="user:op"
            ),
        )

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, release=st.booleans())
    def hold_or_release(self, pick: int, release: bool) -> None:
        state = self.pick(pick)
        act = release_hold if release else hold_order
        self.decide(
            state, lambda: act(state, policy=POLICY, reason="check", now=self.now, actor="user:op")
        )

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks)
    def issue_invoice(self, pick: int) -> None:
        state = self.pick(pick)
        self.decide(state, lambda: issue_invoice(state, policy=POLICY, now=self.now, actor="erp"))

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, roll=rare)
    def cancel_order(self, pick: int, roll: int) -> None:
        if roll:
            return
        state = self.pick(pick)
        refund_id = self.next_id("r")
        self.decide(
            state,
            lambda: cancel_order(
                state, refund_id=refund_id, policy=POLICY, reason="asked", now=self.now, actor="u"
            ),
        )

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, line=line_indices, quantity=units)
    def cancel_lines(self, pick: int, line: int, quantity: int) -> None:
        state = self.pick(pick)
        line = wrap(line, state)
        quantity = fit(quantity, state, line, "open")
        refund_id = self.next_id("r")
        self.decide(
            state,
            lambda: cancel_lines(
                state,
                [LineQuantity(line, quantity)],
                refund_id=refund_id,
                policy=POLICY,
                reason="stock",
                now=self.now,
                actor="u",
            ),
        )

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, replacement=st.booleans(), roll=rare)
    def copy_order(self, pick: int, replacement: bool, roll: int) -> None:
        if roll:
            return
        state = self.pick(pick)
        new_id = self.next_id("o")
        decision = copy_order(
            state,
            new_order_id=new_id,
            new_external_id=new_id,
            new_number=new_id,
            replacement=replacement,
            policy=POLICY,
            reason="reorder",
            now=self.now,
            actor="u",
        )
        self.log.commit(state.order_id, decision.original)
        self.log.commit(new_id, decision.copy)
        self.order_ids.append(new_id)

    # -- rules: money --------------------------------------------------------------------------

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, kind=st.sampled_from(["outstanding", "half", "cent", "large"]))
    def record_payment(self, pick: int, kind: str) -> None:
        state = self.pick(pick)
        amount = payment_amount(state, kind)
        payment_id = self.next_id("p")
        self.decide(
            state,
            lambda: record_payment(
                state, amount, payment_id=payment_id, policy=POLICY, now=self.now, actor="psp"
            ),
        )

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, kind=st.sampled_from(["outstanding", "half", "cent", "large"]))
    def record_refund(self, pick: int, kind: str) -> None:
        state = self.pick(pick)
        amount = payment_amount(state, kind)
        refund_id = self.next_id("r")
        self.decide(
            state,
            lambda: record_refund(
                state, amount, refund_id=refund_id, reason="goodwill", now=self.now, actor="u"
            ),
        )

    # -- rules: warehouses and returns ---------------------------------------------------------

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, line=line_indices, quantity=units)
    def ship(self, pick: int, line: int, quantity: int) -> None:
        state = self.pick(pick)
        line = wrap(line, state)
        quantity = fit(quantity, state, line, "open")
        shipment_id = self.next_id("s")
        self.decide(
            state,
            lambda: record_shipment(
                state,
                [LineQuantity(line, quantity)],
                shipment_id=shipment_id,
                policy=POLICY,
                now=self.now,
                actor="wh",
            ),
        )

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks)
    def ship_everything(self, pick: int) -> None:
        state = self.pick(pick)
        open_units = [LineQuantity(i, line.open) for i, line in enumerate(state.lines) if line.open]
        shipment_id = self.next_id("s")
        self.decide(
            state,
            lambda: record_shipment(
                state, open_units, shipment_id=shipment_id, policy=POLICY, now=self.now, actor="wh"
            ),
        )

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, line=line_indices, quantity=units)
    def request_return(self, pick: int, line: int, quantity: int) -> None:
        state = self.pick(pick)
        line = wrap(line, state)
        quantity = fit(quantity, state, line, "returnable")
        rma_id = self.next_id("rma")
        self.decide(
            state,
            lambda: request_return(
                state,
                [LineQuantity(line, quantity)],
                rma_id=rma_id,
                reason="too big",
                now=self.now,
                actor="shop",
            ),
        )

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, rma=picks, approve=st.booleans())
    def decide_return(self, pick: int, rma: int, approve: bool) -> None:
        state = self.pick(pick)
        if not state.returns:
            return
        rma_id = state.returns[rma % len(state.returns)].rma_id
        if approve:
            self.decide(
                state, lambda: approve_return(state, rma_id=rma_id, now=self.now, actor="u")
            )
        else:
            self.decide(
                state,
                lambda: reject_return(state, rma_id=rma_id, reason="late", now=self.now, actor="u"),
            )

    @precondition(lambda self: self.order_ids)
    @rule(
        pick=picks,
        rma=picks,
        quantity=units,
        condition=st.sampled_from(["resellable", "damaged"]),
    )
    def receive_return(self, pick: int, rma: int, quantity: int, condition: Any) -> None:
        state = self.pick(pick)
        if not state.returns:
            return
        chosen = state.returns[rma % len(state.returns)]
        received = [
            ReturnedLine(item.line, min(quantity, item.quantity), condition)
            for item in chosen.lines
        ]
        self.decide(
            state,
            lambda: receive_return(state, received, rma_id=chosen.rma_id, now=self.now, actor="wh"),
        )

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, rma=picks)
    def refund_return(self, pick: int, rma: int) -> None:
        state = self.pick(pick)
        if not state.returns:
            return
        rma_id = state.returns[rma % len(state.returns)].rma_id
        refund_id = self.next_id("r")
        self.decide(
            state,
            lambda: refund_return(
                state, rma_id=rma_id, refund_id=refund_id, policy=POLICY, now=self.now, actor="u"
            ),
        )

    @precondition(lambda self: self.order_ids)
    @rule(pick=picks, condition=st.sampled_from(["resellable", "damaged"]))
    def return_everything(self, pick: int, condition: Any) -> None:
        """The whole RMA path in one step, so refunded returns are common, not a rare combo."""
        order_id = self.pick(pick).order_id
        returnable = [
            LineQuantity(i, line.returnable)
            for i, line in enumerate(self.log.state(order_id).lines)
            if line.returnable
        ]
        if not returnable:
            return
        rma_id, refund_id = self.next_id("rma"), self.next_id("r")
        received = [ReturnedLine(item.line, item.quantity, condition) for item in returnable]
        steps: list[Callable[[OrderState], list[OrderEvent]]] = [
            lambda state: request_return(
                state, returnable, rma_id=rma_id, reason="all", now=self.now, actor="shop"
            ),
            lambda state: approve_return(state, rma_id=rma_id, now=self.now, actor="u"),
            lambda state: receive_return(state, received, rma_id=rma_id, now=self.now, actor="wh"),
            lambda state: refund_return(
                state, rma_id=rma_id, refund_id=refund_id, policy=POLICY, now=self.now, actor="u"
            ),
        ]
        for step in steps:
            state = self.log.state(order_id)
            self.decide(state, partial(step, state))

    # -- what must always hold -----------------------------------------------------------------

    @invariant()
    def every_order_is_consistent(self) -> None:
        for order_id in self.order_ids:
            state = self.log.state(order_id)
            assert invariant_violations(state) == [], (order_id, invariant_violations(state))
            assert state.status in MACHINE.statuses
            assert fold(self.log.events(order_id)) == state, "replay gives the same state"

    @invariant()
    def refunds_never_exceed_payments(self) -> None:
        for order_id in self.order_ids:
            state = self.log.state(order_id)
            assert D(0) <= state.refunded <= state.paid

    @invariant()
    def returns_never_exceed_shipments(self) -> None:
        for order_id in self.order_ids:
            state = self.log.state(order_id)
            claimed = [0] * len(state.lines)
            for rma in state.returns:
                if rma.status == "rejected":
                    continue
                for item in rma.lines:
                    claimed[item.line] += (
                        rma.received_quantity(item.line)
                        if rma.status == "refunded"
                        else item.quantity
                    )
            for line, units_claimed in zip(state.lines, claimed, strict=True):
                assert units_claimed <= line.shipped

    @invariant()
    def document_numbers_are_gapless_and_unique(self) -> None:
        numbers: list[str] = []
        for order_id in self.order_ids:
            state = self.log.state(order_id)
            for event in self.log.events(order_id):
                if isinstance(event, InvoiceIssued | CreditNoteIssued):
                    numbers.append(event.number)
                    assert parse_number(event.number)[1] == event.issue_date.year
                if isinstance(event, CreditNoteIssued):
                    assert state.invoice is not None
                    assert event.invoice_number == state.invoice.number
        assert numbering_problems(numbers) == []
        assert len(numbers) == sum(self.log.numbers.counters.values())

    def teardown(self) -> None:
        for order_id in self.order_ids:
            events = self.log.events(order_id)
            payload = b"[" + b",".join(encode_event(event) for event in events) + b"]"
            assert decode_events(payload) == events


def wrap(line: int, state: OrderState) -> int:
    """Most picks name a real line; index 3 stays out of range for orders of up to 3 lines."""
    return line if line == 3 else line % len(state.lines)


def fit(quantity: int, state: OrderState, line: int, counter: str) -> int:
    """Shrink `quantity` to what the line has available, if it has any; mostly-valid commands
    reach deeper states, and the unit tests cover every refusal one by one."""
    if line >= len(state.lines):
        return quantity
    available: int = getattr(state.lines[line], counter)
    return min(quantity, available) if available else quantity


def payment_amount(state: OrderState, kind: str) -> Decimal:
    outstanding = max(state.outstanding, D("0.01"))
    match kind:
        case "outstanding":
            return outstanding
        case "half":
            return max(round_money(outstanding / 2, state.currency), D("0.01"))
        case "cent":
            return D("0.01")
        case _:
            return D("1000.00")


def check_transitions(before: OrderState, events: list[OrderEvent]) -> None:
    """Every status change in `events` is legal from the status the order was in."""
    state = before
    for event in events:
        match event:
            case StatusChanged():
                assert event.from_status == state.status
                assert MACHINE.can(state.status, event.to_status), event
            case OrderHeld():
                assert event.held_from == state.status
                assert MACHINE.can(state.status, ON_HOLD), event
            case HoldReleased():
                assert state.status == ON_HOLD
                assert event.to_status == state.held_from
            case OrderCanceled():
                assert event.from_status == state.status
                assert MACHINE.can(state.status, CANCELED), event
            case OrderAccepted():
                assert state.status == NEW
            case _:
                pass
        state = apply(state, event)


def msgspec_bytes(state: OrderState) -> bytes:
    return msgspec.json.encode(state)


OrderLife.TestCase.settings = settings(max_examples=120, stateful_step_count=50, deadline=None)
test_order_life_keeps_the_books_right = OrderLife.TestCase
