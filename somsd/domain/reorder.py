"""Reorder / copy: a new order made from an existing one, linked both ways.

Two uses, one decision:
- a *repeat order*: the same lines (or some of them) at the original prices, payment pending
  with the original method — the customer pays again;
- a *replacement*: the same lines shipped again for free (lost parcel, broken goods). Every
  price and the payment amount are zero and the payment counts as settled, so the copy gets no
  invoice and no draft, and no hold rule for unpaid totals fires.

The copy is a normal order in the original's channel with its own id, external id and number
(all passed in: the desk allocates them, e.g. "1042-R1"); it goes through the same intake
(`receive_order`), so validation and hold rules apply to it as to any order. The original gets
an `OrderCopied` event, the copy's `OrderReceived` names the original. Both streams should be
appended in one transaction, so neither link exists without the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from somsd.domain.events import LineQuantity, OrderCopied, OrderEvent
from somsd.domain.guards import requested_units, require_reason
from somsd.domain.lifecycle import receive_order
from somsd.domain.money import ZERO
from somsd.domain.order import Order, Payment, order_gross
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import OrderState

__all__ = ["CopyDecision", "copy_order"]


class CopyDecision(msgspec.Struct, frozen=True, kw_only=True):
    """Events for the original order's stream and the whole stream of the new order."""

    original: list[OrderEvent]
    copy: list[OrderEvent]
    order: Order  # the new order, as stored in its OrderReceived


def copy_order(
    state: OrderState,
    *,
    new_order_id: str,
    new_external_id: str,
    new_number: str,
    replacement: bool,
    policy: OrderPolicy,
    reason: str,
    now: datetime,
    actor: str,
    lines: Sequence[LineQuantity] | None = None,
) -> CopyDecision:
    """Copy `state`'s order (all lines, or `lines` with their quantities) as a new order."""
    reason = require_reason(reason)
    original = state.order
    if lines is None:
        units = {index: line.quantity for index, line in enumerate(original.lines)}
    else:
        units = requested_units(state, lines, lambda line: line.ordered, "ordered")
    copied_lines = tuple(
        msgspec.structs.replace(
            original.lines[index],
            quantity=quantity,
            unit_price=ZERO if replacement else original.lines[index].unit_price,
        )
        for index, quantity in sorted(units.items())
    )
    shipping = (
        msgspec.structs.replace(original.shipping, price=ZERO) if replacement else original.shipping
    )
    draft = msgspec.structs.replace(
        original,
        external_id=new_external_id,
        number=new_number,
        placed_at=now.astimezone(UTC),
        lines=copied_lines,
        shipping=shipping,
    )
    payment = Payment(
        method=original.payment.method,
        status="paid" if replacement else "pending",
        amount=order_gross(draft),
    )
    order = msgspec.structs.replace(draft, payment=payment)
    copy = receive_order(
        order,
        order_id=new_order_id,
        channel=state.channel,
        policy=policy,
        now=now,
        actor=actor,
        copied_from=state.order_id,
        replacement=replacement,
    )
    link = OrderCopied(
        at=now, actor=actor, new_order_id=new_order_id, replacement=replacement, reason=reason
    )
    return CopyDecision(original=[link], copy=copy, order=order)
