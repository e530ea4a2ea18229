"""Properties of the pure SelectLine planning: stock rows to reports, order events to ERP
documents, open items to payments."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.selectline.planning import (
    DeliveryNotPlaceable,
    PostSalesOrder,
    PostShipment,
    SalesOrderIncomplete,
    delivery_articles,
    delivery_positions,
    payment_from_open_item,
    plan_erp_effects,
    stock_reports,
    tracking_number,
)
from adapters.selectline.wire import (
    Article,
    DocumentPositionReadModel,
    JournalModelRead,
    OpenItemAmount,
    OpenItemDto,
    Stock,
)
from somsd.domain.events import LineQuantity, LinesShipped, OrderEvent, PaymentRecorded
from somsd.domain.lifecycle import receive_order
from somsd.domain.order import Order
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import OrderState, apply
from somsd.domain.testing import InMemoryOrderLog, sample_line, sample_order

AT = datetime(2026, 12, 7, 10, tzinfo=UTC)
ARTICLES = [f"A{i}" for i in range(6)]
WAREHOUSES = ["200", "400", "500"]

stock_rows = st.lists(
    st.builds(
        Stock,
        ArticleNumber=st.sampled_from([*ARTICLES, "GHOST"]),
        Number=st.sampled_from(WAREHOUSES),
        AvailableStock=st.integers(-5, 50).map(Decimal),
    ),
    max_size=30,
)
articles = st.lists(
    st.builds(
        Article,
        Number=st.sampled_from(ARTICLES),
        IsShopActive=st.booleans(),
        IsInactive=st.booleans(),
    ),
    unique_by=lambda a: a.Number,
    max_size=6,
)


@given(stock_rows, articles)
def test_a_report_sums_the_good_rows_of_the_mapped_warehouses(
    rows: list[Stock], catalogue: list[Article]
) -> None:
    reading = stock_reports(
        rows, catalogue, ["200", "400"], {"wh": ["200", "400"]}, sku="number", as_of=AT
    )
    (report,) = reading.reports
    counts = {count.sku: count.on_hand for count in report.counts}
    assert report.complete
    assert set(counts) == {a.Number for a in catalogue}  # every article, nothing unknown
    for article in catalogue:
        expected = sum(
            int(r.AvailableStock or 0)
            for r in rows
            if r.ArticleNumber == article.Number
            and r.Number in ("200", "400")
            and (r.AvailableStock or 0) >= 0
        )
        sellable = article.IsShopActive and not article.IsInactive
        assert counts[article.Number] == (expected if sellable else 0)
    skipped = [p for p in reading.problems if p.kind in ("unknown_article", "negative_stock")]
    known = {a.Number for a in catalogue}
    assert len(skipped) == sum(
        1
        for r in rows
        if r.Number in ("200", "400")
        and (r.ArticleNumber not in known or (r.AvailableStock or 0) < 0)
    )


def test_a_mapped_warehouse_the_erp_lacks_is_a_problem_not_a_crash() -> None:
    reading = stock_reports([], [], ["200"], {"wh": ["200", "999"]}, sku="number", as_of=AT)
    assert [(p.kind, p.warehouse) for p in reading.problems] == [("missing_warehouse", "999")]


def received(order: Order) -> tuple[OrderState, list[OrderEvent]]:
    """The order taken in, as the desk would: its state and the events that did it."""
    log = InMemoryOrderLog()
    events = log.commit(
        "o1",
        receive_order(order, order_id="o1", channel="b2b", policy=OrderPolicy(), now=AT, actor="t"),
    )
    return log.state("o1"), events


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(1, 2)), min_size=1, max_size=4))
def test_each_shipment_plans_one_l_r_with_its_units_and_stable_keys(
    parcels: list[tuple[int, int]],
) -> None:
    order = sample_order(lines=[sample_line(quantity=9), sample_line(sku="CUP-2", quantity=9)])
    state, events = received(order)
    planned = plan_erp_effects(None, state, events)
    assert [type(e) for e in planned] == [PostSalesOrder]
    keys = {planned[0].key}
    for index, (line, quantity) in enumerate(parcels):
        event = LinesShipped(
            at=AT,
            actor="test",
            shipment_id=f"s{index}",
            lines=(LineQuantity(line=line, quantity=quantity),),
        )
        after = apply(state, event)
        (effect,) = plan_erp_effects(state, after, [event])
        assert isinstance(effect, PostShipment)
        assert [(x.line, x.quantity) for x in effect.lines] == [(line, quantity)]
        assert effect.first == (index == 0)
        assert plan_erp_effects(state, after, [event]) == [effect]  # same input, same plan
        keys.add(effect.key)
        state = after
    assert len(keys) == len(parcels) + 1  # distinct per cause: no outbox key collides


@given(st.lists(st.integers(1, 5000), min_size=1, max_size=5))
def test_payments_from_an_open_item_add_up_to_what_the_erp_says_is_paid(
    payments_in_cents: list[int],
) -> None:
    state, _ = received(sample_order(payment_method="invoice", payment_status="pending"))
    total = Decimal(sum(payments_in_cents)) / 100
    paid = Decimal(0)
    for cents in payments_in_cents:
        paid += Decimal(cents) / 100
        item = OpenItemDto(
            OpenItemNumber=7,
            OpenItemDocument="RRE000001",
            YourOrder=state.order.number,
            Amount=OpenItemAmount(Sum=total, Outstanding=total - paid),
        )
        payment = payment_from_open_item("sl", item, state)
        assert payment is not None
        state = apply(
            state,
            PaymentRecorded(
                at=AT, actor="erp", payment_id=payment.payment_id, amount=payment.amount
            ),
        )
        # The same poll again records nothing.
        assert payment_from_open_item("sl", item, state) is None
    assert state.paid == total


# -- fulfilments of a selectline location --------------------------------------------------


def _sales_order(
    lines: list[tuple[str, int, int]], *, shipping_taken: int | None
) -> list[DocumentPositionReadModel]:
    """Article positions (sku as article number, quantity, already taken over) + shipping."""
    positions = [
        DocumentPositionReadModel(
            Identifier=f"p{i}",
            PositionKind="A",
            ArticleNumber=sku,
            Quantity=Decimal(quantity),
            QuantityTakenOverByDocumentSuccessor=Decimal(taken),
        )
        for i, (sku, quantity, taken) in enumerate(lines)
    ]
    if shipping_taken is not None:
        positions.append(
            DocumentPositionReadModel(
                Identifier="ship",
                PositionKind="E",
                ArticleNumber="VERSAND",
                Quantity=Decimal(1),
                QuantityTakenOverByDocumentSuccessor=Decimal(shipping_taken),
            )
        )
    return positions


order_lines = st.lists(
    st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(1, 5)).flatmap(
        lambda line: st.tuples(st.just(line[0]), st.just(line[1]), st.integers(0, line[1]))
    ),
    min_size=1,
    max_size=5,
)


@given(order_lines, st.data(), st.sampled_from([None, 0, 1]))
def test_a_delivery_note_takes_exactly_the_fulfilments_units_from_what_is_open(
    lines: list[tuple[str, int, int]], data: st.DataObject, shipping_taken: int | None
) -> None:
    positions = _sales_order(lines, shipping_taken=shipping_taken)
    skus = [sku for sku, _, _ in lines]
    open_units: dict[str, int] = {}
    for sku, quantity, taken in lines:
        open_units[sku] = open_units.get(sku, 0) + quantity - taken
    asked = {
        sku: data.draw(st.integers(0, units + 1), label=sku) for sku, units in open_units.items()
    }
    fulfilment = [(sku, units) for sku, units in asked.items() if units > 0]
    shipping = shipping_taken is not None
    if any(asked[sku] > open_units[sku] for sku in asked):
        with pytest.raises(DeliveryNotPlaceable):
            delivery_positions(positions, skus, fulfilment, shipping=shipping)
        return
    wanted = delivery_positions(positions, skus, fulfilment, shipping=shipping)
    taken: dict[str, Decimal] = {}
    for position, quantity in wanted:
        assert quantity > 0
        open_here = (position.Quantity or 0) - (position.QuantityTakenOverByDocumentSuccessor or 0)
        assert quantity <= open_here
        if position.PositionKind == "A":
            sku = position.ArticleNumber or ""
            taken[sku] = taken.get(sku, Decimal(0)) + quantity
    assert taken == {sku: Decimal(units) for sku, units in fulfilment}
    assert any(p.PositionKind == "E" for p, _ in wanted) == (shipping_taken == 0)
    assert delivery_articles(positions, skus, fulfilment, shipping=shipping) == taken


def test_an_incomplete_sales_order_makes_the_delivery_note_wait() -> None:
    positions = _sales_order([("A", 2, 0)], shipping_taken=None)
    with pytest.raises(SalesOrderIncomplete):
        delivery_positions(positions, ["A", "B"], [("A", 1)], shipping=False)
    with pytest.raises(SalesOrderIncomplete):
        delivery_positions(positions, ["A"], [("A", 1)], shipping=True)
    with pytest.raises(DeliveryNotPlaceable):
        delivery_articles(positions, ["A"], [("Z", 1)], shipping=False)


def test_the_tracking_number_is_the_last_journal_labelled_as_one() -> None:
    journals = [
        JournalModelRead(Label="Notiz", Text="Kunde rief an"),
        JournalModelRead(Label="Sendungsnummer", Text=" 0034 ", CategoryLabel="DHL"),
        JournalModelRead(Label="tracking", Text="0099"),
        JournalModelRead(Label="Sendungsnummer", Text="  "),
    ]
    assert tracking_number(journals) == ("0099", None)
    assert tracking_number(journals[:2]) == ("0034", "DHL")
    assert tracking_number([]) == (None, None)
