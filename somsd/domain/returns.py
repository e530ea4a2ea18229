"""Returns (RMA): requested -> approved | rejected; approved -> received -> refunded.

- `request_return` claims shipped units; the claims of all returns that were not rejected can
  never exceed what shipped, per line. A rejection frees its claim; so does a refund for the
  units that were announced but never arrived.
- `receive_return` records what came back, per line and condition ("resellable" goes back to
  stock, "damaged" is written off — the inventory actor acts on it); at most what was requested.
- `refund_return` credits the received units (both conditions: the customer's right of
  withdrawal does not depend on the state the goods arrive in; deductions for damage are an
  operator's separate decision): a credit note if the order was invoiced, and a refund of what
  the customer has now overpaid (`refunds.settle`). Outbound shipping is not credited.

Returns do not move the order's status: a complete order stays complete while its returns run;
closing it is an operator's decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from somsd.domain.errors import Conflict, InvalidCommand
from somsd.domain.events import (
    LineQuantity,
    OrderEvent,
    ReturnApproved,
    ReturnedLine,
    ReturnReceived,
    ReturnRefunded,
    ReturnRejected,
    ReturnRequested,
)
from somsd.domain.guards import requested_units, require_new_id, require_reason
from somsd.domain.money import sum_money
from somsd.domain.order import line_gross
from somsd.domain.policy import OrderPolicy
from somsd.domain.refunds import settle
from somsd.domain.state import Decision, OrderState, ReturnState, ReturnStatus
from somsd.domain.status import CLOSED

__all__ = ["approve_return", "receive_return", "refund_return", "reject_return", "request_return"]


def request_return(
    state: OrderState,
    lines: Sequence[LineQuantity],
    *,
    rma_id: str,
    reason: str,
    now: datetime,
    actor: str,
) -> list[OrderEvent]:
    """A customer (or an operator for them) announces units to send back."""
    require_new_id("return", rma_id, {rma.rma_id for rma in state.returns})
    reason = require_reason(reason)
    if state.status == CLOSED:
        raise Conflict("order is closed; no more returns", code="order_closed")
    units = requested_units(state, lines, lambda line: line.returnable, "returnable")
    return [
        ReturnRequested(
            at=now,
            actor=actor,
            rma_id=rma_id,
            lines=tuple(LineQuantity(line, quantity) for line, quantity in units.items()),
            reason=reason,
        )
    ]


def approve_return(
    state: OrderState, *, rma_id: str, now: datetime, actor: str, reason: str = ""
) -> list[OrderEvent]:
    _require_return(state, rma_id, "requested")
    return [ReturnApproved(at=now, actor=actor, rma_id=rma_id, reason=reason.strip())]


def reject_return(
    state: OrderState, *, rma_id: str, reason: str, now: datetime, actor: str
) -> list[OrderEvent]:
    reason = require_reason(reason)
    _require_return(state, rma_id, "requested")
    return [ReturnRejected(at=now, actor=actor, rma_id=rma_id, reason=reason)]


def receive_return(
    state: OrderState,
    lines: Sequence[ReturnedLine],
    *,
    rma_id: str,
    now: datetime,
    actor: str,
) -> list[OrderEvent]:
    """What arrived, per line and condition; one line may appear once per condition."""
    rma = _require_return(state, rma_id, "approved")
    requested = {item.line: item.quantity for item in rma.lines}
    received: dict[int, int] = {}
    seen: set[tuple[int, str]] = set()
    for position, item in enumerate(lines):
        path = f"$.lines[{position}]"
        if item.line not in requested:
            raise InvalidCommand(
                f"return {rma_id} did not ask to return line {item.line}",
                code="line_not_in_return",
                path=f"{path}.line",
            )
        if (item.line, item.condition) in seen:
            raise InvalidCommand(
                f"line {item.line} is named twice as {item.condition}; give its total once",
                code="duplicate_line",
                path=f"{path}.line",
            )
        seen.add((item.line, item.condition))
        if item.quantity < 1:
            raise InvalidCommand(
                f"quantity must be at least 1, not {item.quantity}",
                code="invalid_quantity",
                path=f"{path}.quantity",
            )
        received[item.line] = received.get(item.line, 0) + item.quantity
        if received[item.line] > requested[item.line]:
            raise InvalidCommand(
                f"line {item.line}: {received[item.line]} unit(s) received, but return {rma_id} "
                f"announced {requested[item.line]}",
                code="exceeds_requested",
                path=f"{path}.quantity",
            )
    if not received:
        raise InvalidCommand("name at least one line", code="no_lines", path="$.lines")
    return [ReturnReceived(at=now, actor=actor, rma_id=rma_id, lines=tuple(lines))]


def refund_return(
    state: OrderState,
    *,
    rma_id: str,
    refund_id: str,
    policy: OrderPolicy,
    now: datetime,
    actor: str,
    reason: str = "",
) -> list[OrderEvent]:
    """Settle a received return: credit its units and refund what the customer overpaid."""
    rma = _require_return(state, rma_id, "received")
    require_new_id("refund", refund_id, state.refund_ids)
    units: dict[int, int] = {}
    for item in rma.received:
        units[item.line] = units.get(item.line, 0) + item.quantity
    order = state.order
    amount = sum_money(
        (
            line_gross(order.lines[line], quantity, order.currency)
            for line, quantity in units.items()
        ),
        order.currency,
    )
    decision = Decision(state)
    decision.emit(ReturnRefunded(at=now, actor=actor, rma_id=rma_id, amount=amount))
    settle(
        decision,
        cause="return",
        credited_units=units,
        credit_shipping=False,
        refund_id=refund_id,
        reason=reason.strip() or f"return {rma_id}",
        policy=policy,
        now=now,
        actor=actor,
        rma_id=rma_id,
    )
    return decision.events


def _require_return(state: OrderState, rma_id: str, expected: ReturnStatus) -> ReturnState:
    rma = state.find_return(rma_id)
    if rma is None:
        raise InvalidCommand(
            f'order has no return "{rma_id}"', code="unknown_return", path="$.rma_id"
        )
    if rma.status != expected:
        raise Conflict(f'return {rma_id} is "{rma.status}", not "{expected}"', code="return_state")
    return rma
