"""Several systems' effects from one change: the desks' hooks composed.

The order desk and the fulfilment desk each have one `effects` hook, called before an append
with the events about to be committed; what it returns goes into the outbox in the same
transaction. More than one system reacts to the same change (the shop hears of a shipment, the
ERP gets its delivery note, the customer gets a mail), and each system's planner stays in its
own module: the composition root lists them here, in a fixed order so the outbox rows of one
change are always written in the same order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from somsd.domain.events import OrderEvent
from somsd.domain.state import OrderState
from somsd.projections.fulfilments import FulfilmentEvent, FulfilmentState
from somsd.store import OutboxItem

__all__ = ["FulfilmentEffects", "OrderEffects", "all_fulfilment_effects", "all_order_effects"]

OrderEffects = Callable[[str, OrderState | None, Sequence[OrderEvent]], list[OutboxItem]]
FulfilmentEffects = Callable[
    [FulfilmentState, Sequence[FulfilmentEvent]], Awaitable[list[OutboxItem]]
]


def all_order_effects(*planners: OrderEffects) -> OrderEffects:
    """One order-desk hook returning every planner's outbox items, in the order given."""

    def effects(
        channel: str, before: OrderState | None, events: Sequence[OrderEvent]
    ) -> list[OutboxItem]:
        items: list[OutboxItem] = []
        for plan in planners:
            items.extend(plan(channel, before, events))
        return items

    return effects


def all_fulfilment_effects(*planners: FulfilmentEffects) -> FulfilmentEffects:
    """One fulfilment-desk hook returning every planner's outbox items, in the order given."""

    async def effects(
        fulfilment: FulfilmentState, events: Sequence[FulfilmentEvent]
    ) -> list[OutboxItem]:
        items: list[OutboxItem] = []
        for plan in planners:
            items.extend(await plan(fulfilment, events))
        return items

    return effects
