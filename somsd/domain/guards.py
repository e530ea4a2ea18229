"""Preconditions every decision function checks the same way, with the same error codes.

Kept apart so that "quantity too high" reads identically whether it refuses a shipment, a
cancellation or a return, and the HTTP layer sees one code per mistake. Paths point into the
command's JSON body as the operator API receives it (`$.lines[0].quantity`, `$.reason`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from decimal import Decimal

from somsd.domain.errors import DuplicateCommand, InvalidCommand
from somsd.domain.events import LineQuantity
from somsd.domain.money import round_money
from somsd.domain.order import MAX_AMOUNT
from somsd.domain.state import LineState, OrderState

__all__ = ["requested_units", "require_amount", "require_new_id", "require_reason"]


def require_reason(reason: str) -> str:
    """Human decisions are recorded with their reason; an empty one is refused."""
    if not reason.strip():
        raise InvalidCommand(
            "say why: a reason is required", code="reason_required", path="$.reason"
        )
    return reason.strip()


def require_new_id(kind: str, new_id: str, used: Collection[str]) -> None:
    """Refuse an empty id, or one this order has seen (a redelivery or a reused id)."""
    if not new_id.strip():
        raise InvalidCommand(f"a {kind} id is required", code="id_required")
    if new_id in used:
        raise DuplicateCommand(f'{kind} "{new_id}" was already recorded on this order')


def require_amount(amount: Decimal, currency: str, path: str = "$.amount") -> Decimal:
    """A positive, finite amount in whole minor units of `currency`, at most `MAX_AMOUNT`."""
    if not amount.is_finite() or amount <= 0:
        raise InvalidCommand(
            f"amount must be positive, not {amount}", code="invalid_amount", path=path
        )
    if amount > MAX_AMOUNT:
        raise InvalidCommand(
            f"{amount} exceeds the largest amount somsd takes ({MAX_AMOUNT})",
            code="invalid_amount",
            path=path,
        )
    if round_money(amount, currency) != amount:
        raise InvalidCommand(
            f"{amount} is finer than the minor unit of {currency}", code="invalid_amount", path=path
        )
    return amount


def requested_units(
    state: OrderState,
    lines: Iterable[LineQuantity],
    available: Callable[[LineState], int],
    what: str,
) -> dict[int, int]:
    """Check a command's (line, quantity) list against what each line has `available`.

    Returns line index -> units. Refuses an empty list, unknown lines, a line named twice,
    quantities below 1 and quantities above what is available, naming `what` is limited
    ("open", "returnable") so the operator knows which counter stopped them.
    """
    units: dict[int, int] = {}
    for position, item in enumerate(lines):
        path = f"$.lines[{position}]"
        if not 0 <= item.line < len(state.lines):
            raise InvalidCommand(
                f"order has no line {item.line}; its lines are 0 to {len(state.lines) - 1}",
                code="unknown_line",
                path=f"{path}.line",
            )
        if item.line in units:
            raise InvalidCommand(
                f"line {item.line} is named twice; give its total once",
                code="duplicate_line",
                path=f"{path}.line",
            )
        limit = available(state.lines[item.line])
        if item.quantity < 1:
            raise InvalidCommand(
                f"quantity must be at least 1, not {item.quantity}",
                code="invalid_quantity",
                path=f"{path}.quantity",
            )
        if item.quantity > limit:
            raise InvalidCommand(
                f"line {item.line} has {limit} {what} unit(s), not {item.quantity}",
                code=f"exceeds_{what}",
                path=f"{path}.quantity",
            )
        units[item.line] = item.quantity
    if not units:
        raise InvalidCommand("name at least one line", code="no_lines", path="$.lines")
    return units
