"""What a shop channel must be told, and how far a shop's catalogue has drifted: pure rules.

Two decisions live here, both without I/O so they can be property-tested:

- `plan_order_effects`: from the events an order desk is about to commit, the effects on the
  shop the order came from (payment paid, shipment with tracking, cancel, complete, notes).
  Each has an idempotency key derived from the order and the event that caused it, so a
  redelivery of the same effect carries the same key, and a different effect never shares one.
  Effects the shop itself caused (the actor is `channel:<name>`) are not sent back: a cancel
  read from the shop must not be echoed as a Cancel.
- `reconcile`: the shop's products and combinations against somsd's truth (the channel's ATP
  per SKU, shown iff sellable), giving the fixes to send and the report's counts and SKUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

import msgspec

from somsd.domain.events import (
    HoldReleased,
    LinesShipped,
    OrderCanceled,
    OrderEvent,
    OrderHeld,
    PaymentRecorded,
    StatusChanged,
)
from somsd.domain.lifecycle import INTAKE_PAYMENT_ID
from somsd.domain.state import OrderState
from somsd.domain.status import CANCELED, COMPLETE

__all__ = [
    "DEFAULT_STATUS_MAP",
    "ChannelEffect",
    "ReconcileFix",
    "ReconcileReport",
    "ShopItem",
    "SoldOutAction",
    "VisibilityChange",
    "channel_actor",
    "delivered_effect",
    "plan_order_effects",
    "reconcile",
    "shown_state",
    "visibility_change",
]

SoldOutAction = Literal["unpublish", "hide", "disable_buy"]
EffectKind = Literal["payment_paid", "add_shipment", "deliver", "cancel", "complete", "note"]

# somsd status -> the shop's order status, where the shop has an action that gets there.
# Statuses without a shop counterpart reach the shop as an order note.
DEFAULT_STATUS_MAP: Final[Mapping[str, str]] = {COMPLETE: "complete", CANCELED: "cancelled"}


def channel_actor(channel: str) -> str:
    """The `actor`/`user` name of changes that came from the shop behind `channel`."""
    return f"channel:{channel}"


class ChannelEffect(msgspec.Struct, frozen=True, kw_only=True):
    """One change to make in the shop (the outbox payload of `channel/<name>` order effects)."""

    type: Literal["order_effect"] = "order_effect"
    kind: EffectKind
    order_id: str  # somsd's
    external_id: str  # the shop's stable key (Smartstore: OrderGuid)
    number: str  # the shop's order number
    key: str  # idempotency key: stable per (order, cause)
    shipment_id: str = ""  # somsd's fulfilment id (add_shipment, deliver)
    tracking_number: str = ""
    note: str = ""


def _effect(
    state: OrderState,
    kind: EffectKind,
    cause: str,
    *,
    shipment_id: str = "",
    tracking_number: str = "",
    note: str = "",
) -> ChannelEffect:
    return ChannelEffect(
        kind=kind,
        order_id=state.order_id,
        external_id=state.order.external_id,
        number=state.order.number,
        key=f"channel/{state.channel}/{state.order_id}/{kind}/{cause}",
        shipment_id=shipment_id,
        tracking_number=tracking_number,
        note=note,
    )


def delivered_effect(state: OrderState, shipment_id: str) -> ChannelEffect:
    """The shop's Deliver for a parcel of this order that reached the customer."""
    return _effect(state, "deliver", shipment_id, shipment_id=shipment_id)


def plan_order_effects(
    state: OrderState,
    events: Sequence[OrderEvent],
    *,
    status_map: Mapping[str, str] = DEFAULT_STATUS_MAP,
) -> list[ChannelEffect]:
    """The shop effects of `events` on the order now in `state` (after the events).

    `state.version` is the version after the events; the event's own version (its position)
    goes into the key, so a second payment or shipment gets a new key and a redelivery of the
    same append the same one.
    """
    shop = channel_actor(state.channel)
    first_version = state.version - len(events) + 1
    effects: list[ChannelEffect] = []
    for offset, event in enumerate(events):
        if event.actor == shop:
            continue  # the shop told us; it knows
        cause = str(first_version + offset)
        match event:
            case PaymentRecorded(payment_id=payment_id) if payment_id != INTAKE_PAYMENT_ID:
                effects.append(_effect(state, "payment_paid", payment_id))
            case LinesShipped(shipment_id=shipment_id, tracking_number=tracking):
                effects.append(
                    _effect(
                        state,
                        "add_shipment",
                        shipment_id,
                        shipment_id=shipment_id,
                        tracking_number=tracking,
                    )
                )
            case OrderCanceled(reason=reason):
                effects.append(_effect(state, "cancel", cause, note=reason))
            case StatusChanged(to_status=to_status, reason=reason):
                target = status_map.get(to_status)
                if target == "complete":
                    effects.append(_effect(state, "complete", cause))
                elif target == "cancelled":
                    effects.append(_effect(state, "cancel", cause, note=reason))
                else:
                    text = f"Status: {to_status}" + (f" ({reason})" if reason else "")
                    effects.append(_effect(state, "note", cause, note=text))
            case OrderHeld(reasons=reasons):
                text = "On hold: " + "; ".join(r.message for r in reasons)
                effects.append(_effect(state, "note", cause, note=text))
            case HoldReleased(reason=reason):
                effects.append(_effect(state, "note", cause, note=f"Hold released: {reason}"))
            case _:
                pass
    return effects


# -- reconciliation ---------------------------------------------------------------------------


class ShopItem(msgspec.Struct, frozen=True, kw_only=True):
    """A product or attribute combination as the shop has it."""

    sku: str
    kind: Literal["product", "combination"]
    id: int
    product_id: int  # the product itself for kind product
    stock: int
    shown: bool  # published / visible / buyable, per the channel's sold-out action


class ReconcileFix(msgspec.Struct, frozen=True, kw_only=True):
    """What to send for one item: the stock, and whether to show (True) or hide (False) it."""

    sku: str
    kind: Literal["product", "combination"]
    id: int
    product_id: int
    stock: int | None = None  # None: the stock is right
    show: bool | None = None  # None: visibility is right


class ReconcileReport(msgspec.Struct, frozen=True, kw_only=True):
    checked: int
    wrongly_hidden: tuple[str, ...]
    wrongly_shown: tuple[str, ...]
    stock_corrected: tuple[str, ...]
    unknown_in_shop: tuple[str, ...]  # SKU in the shop that somsd has no stock for
    missing_in_shop: tuple[str, ...]  # stock in somsd, no product in the shop

    def counts(self) -> dict[str, int]:
        return {
            "checked": self.checked,
            "wrongly_hidden": len(self.wrongly_hidden),
            "wrongly_shown": len(self.wrongly_shown),
            "stock_corrected": len(self.stock_corrected),
            "unknown_in_shop": len(self.unknown_in_shop),
            "missing_in_shop": len(self.missing_in_shop),
        }


def shown_state(published: bool, visibility: str, disable_buy: bool, action: SoldOutAction) -> bool:
    """Whether a shop product counts as shown under the channel's sold-out action."""
    if action == "unpublish":
        return published
    if action == "hide":
        return visibility != "Hidden"
    return not disable_buy


def reconcile(
    items: Iterable[ShopItem],
    atp: Mapping[str, int],
    *,
    hide_sold_out: bool = True,
) -> tuple[ReconcileReport, list[ReconcileFix]]:
    """Compare the shop with somsd's truth; the report and the fixes that remove the drift.

    Truth: every SKU somsd has stock for shows its channel ATP (never below 0) and is shown
    iff that is above 0 (with `hide_sold_out`; otherwise visibility is left alone). A SKU the
    shop has but somsd has no stock record of is reported, never changed: somsd does not know
    it. Combinations are never hidden (visibility belongs to their product).
    """
    checked = 0
    seen: set[str] = set()
    wrongly_hidden: list[str] = []
    wrongly_shown: list[str] = []
    corrected: list[str] = []
    unknown: list[str] = []
    fixes: list[ReconcileFix] = []
    for item in items:
        checked += 1
        seen.add(item.sku)
        want = atp.get(item.sku)
        if want is None:
            unknown.append(item.sku)
            continue
        want = max(want, 0)
        stock = want if item.stock != want else None
        show: bool | None = None
        if hide_sold_out and item.kind == "product":
            sellable = want > 0
            if sellable and not item.shown:
                show = True
                wrongly_hidden.append(item.sku)
            elif not sellable and item.shown:
                show = False
                wrongly_shown.append(item.sku)
        if stock is not None:
            corrected.append(item.sku)
        if stock is not None or show is not None:
            fixes.append(
                ReconcileFix(
                    sku=item.sku,
                    kind=item.kind,
                    id=item.id,
                    product_id=item.product_id,
                    stock=stock,
                    show=show,
                )
            )
    missing = sorted(sku for sku in atp if sku not in seen)
    report = ReconcileReport(
        checked=checked,
        wrongly_hidden=tuple(sorted(wrongly_hidden)),
        wrongly_shown=tuple(sorted(wrongly_shown)),
        stock_corrected=tuple(sorted(corrected)),
        unknown_in_shop=tuple(sorted(unknown)),
        missing_in_shop=tuple(missing),
    )
    return report, fixes


# -- stock pushes -----------------------------------------------------------------------------


class VisibilityChange(msgspec.Struct, frozen=True, kw_only=True):
    """What one stock push does to a product's visibility, and what somsd must remember."""

    fields: dict[str, object]  # the shop fields to PATCH (empty: leave visibility alone)
    hidden_by_somsd: bool  # after this push, somsd is the one who hid the product
    previous: str = ""  # Visibility before somsd hid it (action hide), restored on show


def _hidden_fields(action: SoldOutAction) -> dict[str, object]:
    if action == "unpublish":
        return {"Published": False}
    if action == "hide":
        return {"Visibility": "Hidden"}
    return {"DisableBuyButton": True}


def _shown_fields(action: SoldOutAction, previous: str) -> dict[str, object]:
    if action == "unpublish":
        return {"Published": True}
    if action == "hide":
        return {"Visibility": previous if previous and previous != "Hidden" else "Full"}
    return {"DisableBuyButton": False}


def visibility_change(
    want: Literal["hide", "show"] | None,
    *,
    shown_now: bool,
    hidden_by_somsd: bool,
    action: SoldOutAction,
    visibility_now: str = "Full",
    previous: str = "",
) -> VisibilityChange:
    """Sold out -> hidden (remembered as hidden by somsd); back in stock -> shown again, but
    only if somsd hid it: a product the merchant took down by hand stays down.

    `shown_now` is the product as the shop has it now; `previous` the visibility recorded when
    somsd hid it.
    """
    if want == "hide":
        if not shown_now:
            # Already hidden: by us (keep remembering) or by the merchant (never ours to show).
            return VisibilityChange(fields={}, hidden_by_somsd=hidden_by_somsd, previous=previous)
        return VisibilityChange(
            fields=_hidden_fields(action), hidden_by_somsd=True, previous=visibility_now
        )
    if want == "show":
        if hidden_by_somsd and not shown_now:
            return VisibilityChange(fields=_shown_fields(action, previous), hidden_by_somsd=False)
        # Shown already, or hidden by the merchant: nothing to do, nothing of ours to remember.
        return VisibilityChange(fields={}, hidden_by_somsd=False)
    return VisibilityChange(fields={}, hidden_by_somsd=hidden_by_somsd, previous=previous)
