"""The pure channel rules: shop effects of order events, and reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from somsd.domain.channel_sync import (
    ReconcileFix,
    ShopItem,
    SoldOutAction,
    plan_order_effects,
    reconcile,
    visibility_change,
)
from somsd.domain.events import OrderEvent
from somsd.domain.holds import HoldReason
from somsd.domain.lifecycle import receive_order, record_payment
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import OrderState, apply
from somsd.domain.testing import sample_order

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

skus = st.text(alphabet="ABCDEFGH0123456789-", min_size=1, max_size=6)


@st.composite
def catalogues(draw: st.DrawFn) -> tuple[list[ShopItem], dict[str, int]]:
    shop_skus = draw(st.lists(skus, unique=True, max_size=30))
    items = [
        ShopItem(
            sku=sku,
            kind=draw(st.sampled_from(["product", "combination"])),
            id=index + 1,
            product_id=index + 1,
            stock=draw(st.integers(-3, 20)),
            shown=draw(st.booleans()),
        )
        for index, sku in enumerate(shop_skus)
    ]
    somsd_skus = draw(st.lists(skus, unique=True, max_size=30))
    atp = {sku: draw(st.integers(-2, 20)) for sku in somsd_skus}
    return items, atp


def apply_fixes(items: list[ShopItem], fixes: list[ReconcileFix]) -> list[ShopItem]:
    by_id = {(fix.kind, fix.id): fix for fix in fixes}
    fixed: list[ShopItem] = []
    for item in items:
        fix = by_id.get((item.kind, item.id))
        if fix is None:
            fixed.append(item)
            continue
        fixed.append(
            ShopItem(
                sku=item.sku,
                kind=item.kind,
                id=item.id,
                product_id=item.product_id,
                stock=item.stock if fix.stock is None else fix.stock,
                shown=item.shown if fix.show is None else fix.show,
            )
        )
    return fixed


@given(catalogues())
def test_fixes_remove_all_drift_and_a_second_run_finds_none(
    catalogue: tuple[list[ShopItem], dict[str, int]],
) -> None:
    items, atp = catalogue
    report, fixes = reconcile(items, atp)
    assert report.checked == len(items)
    again, more = reconcile(apply_fixes(items, fixes), atp)
    assert more == []
    assert again.wrongly_hidden == again.wrongly_shown == again.stock_corrected == ()
    assert again.unknown_in_shop == report.unknown_in_shop
    assert again.missing_in_shop == report.missing_in_shop


@given(catalogues())
def test_counts_partition_what_was_found(catalogue: tuple[list[ShopItem], dict[str, int]]) -> None:
    items, atp = catalogue
    report, fixes = reconcile(items, atp)
    shop = {item.sku for item in items}
    assert set(report.unknown_in_shop) == shop - atp.keys()
    assert set(report.missing_in_shop) == atp.keys() - shop
    assert not set(report.wrongly_hidden) & set(report.wrongly_shown)
    assert len(fixes) == len(
        set(report.wrongly_hidden) | set(report.wrongly_shown) | set(report.stock_corrected)
    )
    for sku in report.wrongly_hidden:
        assert atp[sku] > 0
    for sku in report.wrongly_shown:
        assert atp[sku] <= 0
    # Unknown SKUs are never touched.
    assert not {fix.sku for fix in fixes} & set(report.unknown_in_shop)


def test_combinations_take_stock_but_never_visibility() -> None:
    item = ShopItem(sku="C-1", kind="combination", id=7, product_id=3, stock=5, shown=True)
    report, fixes = reconcile([item], {"C-1": 0})
    assert report.wrongly_shown == ()
    assert fixes == [ReconcileFix(sku="C-1", kind="combination", id=7, product_id=3, stock=0)]


actions = st.sampled_from(["unpublish", "hide", "disable_buy"])


@given(actions, st.booleans())
def test_a_product_the_merchant_hid_is_never_shown_by_a_stock_push(
    action: SoldOutAction, hidden_by_somsd_before: bool
) -> None:
    # Merchant-hidden: not shown, and somsd did not hide it.
    hide = visibility_change("hide", shown_now=False, hidden_by_somsd=False, action=action)
    assert hide.fields == {}
    assert not hide.hidden_by_somsd
    show = visibility_change("show", shown_now=False, hidden_by_somsd=False, action=action)
    assert show.fields == {}


@given(actions, st.sampled_from(["Full", "SearchResults", "ProductPage"]))
def test_sold_out_then_restocked_comes_back_as_it_was(action: SoldOutAction, before: str) -> None:
    hide = visibility_change(
        "hide", shown_now=True, hidden_by_somsd=False, action=action, visibility_now=before
    )
    assert hide.hidden_by_somsd
    assert hide.fields
    show = visibility_change(
        "show",
        shown_now=False,
        hidden_by_somsd=hide.hidden_by_somsd,
        action=action,
        previous=hide.previous,
    )
    assert not show.hidden_by_somsd
    if action == "hide":
        assert show.fields == {"Visibility": before}
    elif action == "unpublish":
        assert show.fields == {"Published": True}
    else:
        assert show.fields == {"DisableBuyButton": False}


def _received(channel: str = "shop") -> OrderState:
    order = sample_order()
    order = msgspec.structs.replace(
        order, payment=msgspec.structs.replace(order.payment, method="invoice", status="pending")
    )
    events = receive_order(
        order, order_id="o-1", channel=channel, policy=OrderPolicy(), now=NOW, actor="order-desk"
    )
    state: OrderState | None = None
    for event in events:
        state = apply(state, event)
    assert state is not None
    return state


def _after(state: OrderState, events: list[OrderEvent]) -> OrderState:
    for event in events:
        state = apply(state, event)
    return state


@given(st.lists(st.sampled_from(["user:anna", "channel:shop", "fulfilments"]), max_size=6))
def test_effects_are_sent_for_what_somsd_did_with_stable_distinct_keys(actors: list[str]) -> None:
    state = _received()
    planned: list[str] = []
    for number, actor in enumerate(actors):
        events = record_payment(
            state,
            Decimal("0.01"),
            payment_id=f"p-{number}",
            policy=OrderPolicy(),
            now=NOW,
            actor=actor,
        )
        state = _after(state, events)
        effects = plan_order_effects(state, events)
        assert effects == plan_order_effects(state, events)  # a redelivery: the same keys
        if actor == "channel:shop":
            assert effects == []  # what the shop told us is not sent back
        else:
            assert [e.kind for e in effects] == ["payment_paid"]
        planned.extend(e.key for e in effects)
    assert len(planned) == len(set(planned))


def test_a_paid_order_taken_in_on_hold_sends_only_the_hold_note() -> None:
    order = sample_order()  # paid by credit card
    events = receive_order(
        order,
        order_id="o-2",
        channel="shop",
        policy=OrderPolicy(),
        now=NOW,
        actor="order-desk",
        extra_holds=[HoldReason("totals_mismatch", "the shop's total differs by 5.00")],
    )
    state: OrderState | None = None
    for event in events:
        state = apply(state, event)
    assert state is not None
    assert state.paid > 0
    [effect] = plan_order_effects(state, events)
    assert effect.kind == "note"
    assert "5.00" in effect.note
