"""Decisions over an order's life: intake, status changes, holds, payments, shipments.

Every decision has the same shape, which is what the order desk actor relies on:

    events = change_status(state, "processing", policy=policy, reason=..., now=now, actor=...)

It takes the current state (or, for intake, the order), the command's arguments, the injected
`now` and ids, and the `OrderPolicy`; it returns the events to append — already consistent with
each other — or raises a `DomainError` and changes nothing. The actor appends the events (the
store numbers invoices on commit) and folds the committed events into its state with `apply`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Final

import msgspec

from somsd.domain.errors import Conflict, IllegalTransition, InvalidCommand, InvalidOrder
from somsd.domain.events import (
    AddressCorrected,
    HoldReleased,
    LineQuantity,
    LinesShipped,
    OrderAccepted,
    OrderEvent,
    OrderHeld,
    OrderReceived,
    PaymentRecorded,
    StatusChanged,
)
from somsd.domain.guards import requested_units, require_amount, require_new_id, require_reason
from somsd.domain.holds import HoldReason, evaluate_holds
from somsd.domain.invoicing import draft_invoice, invoice_when_paid
from somsd.domain.order import Address, Order, validate_order
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import Decision, OrderState
from somsd.domain.status import CANCELED, CLOSED, COMPLETE, NEW, ON_HOLD, PENDING, PROCESSING

__all__ = [
    "INTAKE_PAYMENT_ID",
    "allowed_transitions",
    "change_status",
    "correct_address",
    "hold_for",
    "hold_order",
    "receive_order",
    "record_payment",
    "record_shipment",
    "release_hold",
]

# The payment an order arrives with already paid (`payment.status == "paid"`) is recorded under
# this id, so a later report of the same capture by the channel can be told apart by its own id.
INTAKE_PAYMENT_ID = "intake"
# Returns still running; closing the order would strand them.
_UNSETTLED_RETURN: Final = frozenset({"requested", "approved", "received"})


def receive_order(
    order: Order,
    *,
    order_id: str,
    channel: str,
    policy: OrderPolicy,
    now: datetime,
    actor: str,
    copied_from: str | None = None,
    replacement: bool = False,
    validated: bool = False,
    extra_holds: Sequence[HoldReason] = (),
) -> list[OrderEvent]:
    """Take in a decoded order: the whole new stream, ready to append in one transaction.

    OrderReceived, then OrderAccepted (status pending); PaymentRecorded when the order arrives
    paid; OrderHeld when a hold rule fires; and the invoice (paid auto-method order) or its
    draft (every other method). Raises `InvalidOrder` for an order that fails validation —
    adapters build orders in code, so the desk cannot assume they were decoded and checked.
    """
    # `validated`: the caller decoded the order with `decode_order` under this policy's pickup
    # locations, so checking again would only repeat the work (3 % of intake, measured).
    problems = (
        [] if validated else validate_order(order, known_pickup_locations=policy.pickup_locations)
    )
    if problems:
        raise InvalidOrder(problems)
    decision = Decision.start(
        OrderReceived(
            at=now,
            actor=actor,
            order_id=order_id,
            channel=channel,
            order=order,
            copied_from=copied_from,
            replacement=replacement,
        )
    )
    decision.emit(OrderAccepted(at=now, actor=actor))
    if order.payment.status == "paid" and order.payment.amount > 0:
        decision.emit(
            PaymentRecorded(
                at=now, actor=actor, payment_id=INTAKE_PAYMENT_ID, amount=order.payment.amount
            )
        )
    # `extra_holds`: what the channel's mapper found doubtful (an unknown SKU, totals that do
    # not add up); the order is taken in, and held for an operator, with those reasons.
    reasons = [*extra_holds, *evaluate_holds(order, policy.holds)]
    if reasons:
        decision.emit(OrderHeld(at=now, actor=actor, held_from=PENDING, reasons=tuple(reasons)))
    invoice_when_paid(decision, policy=policy, now=now, actor=actor)
    draft_invoice(decision, policy=policy, now=now, actor=actor)
    return decision.events


def change_status(
    state: OrderState, target: str, *, policy: OrderPolicy, reason: str, now: datetime, actor: str
) -> list[OrderEvent]:
    """An operator's (or an actor's) status change along an edge of the status machine.

    Going on hold and releasing a hold are routed to `hold_order` and `release_hold`, so
    `POST /v1/orders/{id}/status` can serve them. Cancelling is refused here: it settles
    invoices and refunds, so it is `cancel_order`'s job. Completing needs every unit shipped or
    canceled; closing needs every return refunded or rejected.
    """
    reason = require_reason(reason)
    if target == ON_HOLD:
        return hold_order(state, policy=policy, reason=reason, now=now, actor=actor)
    if state.status == ON_HOLD and target == state.held_from:
        return release_hold(state, policy=policy, reason=reason, now=now, actor=actor)
    if target == CANCELED:
        raise Conflict(
            "cancel through the cancel action, which settles invoices and refunds",
            code="use_cancel",
        )
    if not policy.machine.can(state.status, target):
        raise IllegalTransition(state.status, target, allowed_transitions(state, policy))
    if target == COMPLETE and state.units_open:
        raise Conflict(
            f"{state.units_open} unit(s) are neither shipped nor canceled; record the shipment "
            "or cancel them first",
            code="units_open",
        )
    unsettled = [rma.rma_id for rma in state.returns if rma.status in _UNSETTLED_RETURN]
    if target == CLOSED and unsettled:
        raise Conflict(
            f"returns {', '.join(unsettled)} are not settled; refund or reject them first",
            code="returns_open",
        )
    decision = Decision(state)
    decision.emit(
        StatusChanged(
            at=now, actor=actor, from_status=state.status, to_status=target, reason=reason
        )
    )
    invoice_when_paid(decision, policy=policy, now=now, actor=actor)
    return decision.events


def allowed_transitions(state: OrderState, policy: OrderPolicy) -> tuple[str, ...]:
    """Where `change_status` can take the order now: the machine's edges, and for a held order
    first the status a release returns it to (what an operator UI offers, what a 409 lists)."""
    allowed = policy.machine.allowed(state.status)
    if state.status == ON_HOLD and state.held_from is not None:
        return (state.held_from, *(status for status in allowed if status != state.held_from))
    return allowed


def hold_order(
    state: OrderState, *, policy: OrderPolicy, reason: str, now: datetime, actor: str
) -> list[OrderEvent]:
    """An operator puts the order on hold; releasing returns it to its current status."""
    reason = require_reason(reason)
    policy.machine.check(state.status, ON_HOLD)
    return [
        OrderHeld(
            at=now,
            actor=actor,
            held_from=state.status,
            reasons=(HoldReason("manual", reason),),
        )
    ]


def hold_for(
    state: OrderState,
    reasons: Sequence[HoldReason],
    *,
    policy: OrderPolicy,
    now: datetime,
    actor: str,
) -> list[OrderEvent]:
    """A system (a carrier refusing the address) holds the order with its own reasons.

    The codes count like intake's: an `address_incomplete` hold is released by an address
    correction that clears it. An order already on hold stays as it is (a `Conflict`).
    """
    if not reasons:
        raise InvalidCommand("a hold needs at least one reason", path="$.reasons")
    if state.status == ON_HOLD:
        raise Conflict("the order is on hold already", code="already_on_hold")
    policy.machine.check(state.status, ON_HOLD)
    return [OrderHeld(at=now, actor=actor, held_from=state.status, reasons=tuple(reasons))]


def release_hold(
    state: OrderState, *, policy: OrderPolicy, reason: str, now: datetime, actor: str
) -> list[OrderEvent]:
    """Return a held order to the status it was held from (and invoice it if it is paid)."""
    reason = require_reason(reason)
    if state.status != ON_HOLD or state.held_from is None:
        raise Conflict(f'order is "{state.status}", not on hold', code="not_on_hold")
    decision = Decision(state)
    decision.emit(HoldReleased(at=now, actor=actor, to_status=state.held_from, reason=reason))
    invoice_when_paid(decision, policy=policy, now=now, actor=actor)
    return decision.events


_ADDRESS_HOLD: Final = "address_incomplete"


def correct_address(
    state: OrderState,
    *,
    billing_address: Address | None,
    shipping_address: Address | None,
    policy: OrderPolicy,
    reason: str,
    now: datetime,
    actor: str,
) -> list[OrderEvent]:
    """Replace the billing and/or shipping address, validated like intake, and re-check holds.

    Refused for a final order (it was delivered or canceled: the address is history) and for a
    correction that changes nothing. An order held only for its address is released when the
    new address clears that rule; one held for other reasons stays held, with the address
    reason gone from what a release has to overrule.
    """
    reason = require_reason(reason)
    if billing_address is None and shipping_address is None:
        raise InvalidCommand("give billing_address, shipping_address or both", path="$")
    if policy.machine.is_final(state.status):
        raise Conflict(f'order is "{state.status}"; its address can not change', code="final")
    corrected = msgspec.structs.replace(
        state.order,
        billing_address=billing_address or state.order.billing_address,
        shipping_address=shipping_address or state.order.shipping_address,
    )
    if corrected == state.order:
        raise Conflict("the address is already so; nothing to correct", code="unchanged")
    problems = [
        problem
        for problem in validate_order(corrected, known_pickup_locations=policy.pickup_locations)
        if problem.path.startswith(("$.billing_address", "$.shipping_address"))
    ]
    if problems:
        raise InvalidOrder(problems)
    decision = Decision(state)
    decision.emit(
        AddressCorrected(
            at=now,
            actor=actor,
            billing_address=billing_address,
            shipping_address=shipping_address,
            reason=reason,
        )
    )
    held_for = {hold.code for hold in state.hold_reasons}
    if state.status == ON_HOLD and state.held_from is not None and held_for == {_ADDRESS_HOLD}:
        still = [r for r in evaluate_holds(corrected, policy.holds) if r.code == _ADDRESS_HOLD]
        if not still:
            decision.emit(
                HoldReleased(
                    at=now,
                    actor=actor,
                    to_status=state.held_from,
                    reason=f"address corrected: {reason}",
                )
            )
            invoice_when_paid(decision, policy=policy, now=now, actor=actor)
    return decision.events


def record_payment(
    state: OrderState,
    amount: Decimal,
    *,
    payment_id: str,
    policy: OrderPolicy,
    now: datetime,
    actor: str,
    reference: str = "",
) -> list[OrderEvent]:
    """Money arrived. Recorded in any status — money that came is a fact, even for a canceled
    order (an operator refunds it with `record_refund`); a full payment of an auto-method order
    issues its invoice."""
    require_new_id("payment", payment_id, state.payment_ids)
    require_amount(amount, state.currency)
    decision = Decision(state)
    decision.emit(
        PaymentRecorded(
            at=now, actor=actor, payment_id=payment_id, amount=amount, reference=reference
        )
    )
    invoice_when_paid(decision, policy=policy, now=now, actor=actor)
    complete_if_done(decision, policy=policy, now=now, actor=actor, reason="paid in full")
    return decision.events


def record_shipment(
    state: OrderState,
    lines: Sequence[LineQuantity],
    *,
    shipment_id: str,
    policy: OrderPolicy,
    now: datetime,
    actor: str,
    location: str = "",
    tracking_number: str = "",
) -> list[OrderEvent]:
    """Units left a location. The first shipment of a pending order moves it to processing;
    the one that leaves nothing open completes it (where the status machine allows)."""
    require_new_id("shipment", shipment_id, state.shipment_ids)
    if state.status in (NEW, ON_HOLD) or policy.machine.is_final(state.status):
        raise Conflict(f'an order in "{state.status}" cannot ship', code="not_shippable")
    units = requested_units(state, lines, lambda line: line.open, "open")
    decision = Decision(state)
    if state.status == PENDING and policy.machine.can(PENDING, PROCESSING):
        decision.emit(
            StatusChanged(
                at=now, actor=actor, from_status=PENDING, to_status=PROCESSING, reason="shipping"
            )
        )
    decision.emit(
        LinesShipped(
            at=now,
            actor=actor,
            shipment_id=shipment_id,
            lines=tuple(LineQuantity(line, quantity) for line, quantity in units.items()),
            location=location,
            tracking_number=tracking_number,
        )
    )
    complete_if_done(decision, policy=policy, now=now, actor=actor, reason="all units shipped")
    return decision.events


def complete_if_done(
    decision: Decision, *, policy: OrderPolicy, now: datetime, actor: str, reason: str
) -> None:
    """Complete the order once nothing is left to ship, something shipped and it is paid.

    Payment is part of "done" (the issue's lifecycle): an invoice order that shipped stays in
    processing until its money is recorded, which is what makes unpaid shipped orders visible
    to operators as `status=processing`. An operator can still complete it by hand.
    """
    state = decision.state
    if (
        state.units_open == 0
        and state.units_shipped
        and state.paid_in_full
        and policy.machine.can(state.status, COMPLETE)
    ):
        decision.emit(
            StatusChanged(
                at=now, actor=actor, from_status=state.status, to_status=COMPLETE, reason=reason
            )
        )
