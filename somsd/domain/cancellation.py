"""Cancelling a whole order or some of its units, before or after invoicing and payment.

Only units that have not shipped can be canceled: what left the warehouse comes back through a
return (`returns`), which checks what was actually received. Therefore:

- `cancel_order` needs nothing shipped; it cancels every open unit, voids a draft invoice, and
  settles (`refunds.settle`): a credit note for everything invoiced and not yet credited,
  shipping included, and a refund of everything paid and not yet refunded.
- `cancel_lines` cancels some open units. If that covers every unit and nothing shipped, it is
  a whole-order cancellation and answers exactly as `cancel_order`. Otherwise: a credit note for
  the canceled units if invoiced (shipping stays billed — the rest still ships), the draft
  refreshed if not, a refund of whatever the customer has now overpaid, and completion when the
  cancellation leaves nothing open of an order that shipped the rest.

The refund id is passed in even when no refund results (nothing paid), so the desk need not
know in advance whether money flows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from somsd.domain.errors import Conflict
from somsd.domain.events import LineQuantity, LinesCanceled, OrderCanceled, OrderEvent
from somsd.domain.guards import requested_units, require_new_id, require_reason
from somsd.domain.invoicing import draft_invoice
from somsd.domain.lifecycle import complete_if_done
from somsd.domain.policy import OrderPolicy
from somsd.domain.refunds import settle
from somsd.domain.state import Decision, OrderState
from somsd.domain.status import CANCELED

__all__ = ["cancel_lines", "cancel_order"]


def cancel_order(
    state: OrderState,
    *,
    refund_id: str,
    policy: OrderPolicy,
    reason: str,
    now: datetime,
    actor: str,
) -> list[OrderEvent]:
    """Cancel every unit of an order of which nothing has shipped."""
    reason = require_reason(reason)
    _require_cancelable(state)
    if state.units_shipped:
        raise Conflict(
            f"{state.units_shipped} unit(s) already shipped; cancel the open lines instead and "
            "take the shipped units back as a return",
            code="already_shipped",
        )
    policy.machine.check(state.status, CANCELED)
    require_new_id("refund", refund_id, state.refund_ids)
    decision = Decision(state)
    decision.emit(
        OrderCanceled(
            at=now,
            actor=actor,
            from_status=state.status,
            reason=reason,
            lines=tuple(
                LineQuantity(index, line.open)
                for index, line in enumerate(state.lines)
                if line.open
            ),
        )
    )
    settle(
        decision,
        cause="cancellation",
        credited_units={
            index: line.invoiced - line.credited for index, line in enumerate(decision.state.lines)
        },
        credit_shipping=True,
        refund_id=refund_id,
        reason=reason,
        policy=policy,
        now=now,
        actor=actor,
    )
    return decision.events


def cancel_lines(
    state: OrderState,
    lines: Sequence[LineQuantity],
    *,
    refund_id: str,
    policy: OrderPolicy,
    reason: str,
    now: datetime,
    actor: str,
) -> list[OrderEvent]:
    """Cancel some open (unshipped) units of an order."""
    reason = require_reason(reason)
    _require_cancelable(state)
    units = requested_units(state, lines, lambda line: line.open, "open")
    if not state.units_shipped and sum(units.values()) == state.units_open:
        return cancel_order(
            state, refund_id=refund_id, policy=policy, reason=reason, now=now, actor=actor
        )
    require_new_id("refund", refund_id, state.refund_ids)
    decision = Decision(state)
    decision.emit(
        LinesCanceled(
            at=now,
            actor=actor,
            reason=reason,
            lines=tuple(LineQuantity(line, quantity) for line, quantity in units.items()),
        )
    )
    if state.draft is not None:
        draft_invoice(decision, policy=policy, now=now, actor=actor)
    settle(
        decision,
        cause="cancellation",
        credited_units=units,
        credit_shipping=False,
        refund_id=refund_id,
        reason=reason,
        policy=policy,
        now=now,
        actor=actor,
    )
    complete_if_done(decision, policy=policy, now=now, actor=actor, reason="rest canceled")
    return decision.events


def _require_cancelable(state: OrderState) -> None:
    if state.canceled:
        raise Conflict("order is already canceled", code="already_canceled")
    if state.units_open == 0:
        raise Conflict(
            f'order is "{state.status}" with nothing left to ship; take units back as a return',
            code="nothing_open",
        )
