"""Invoices and credit notes: tax per rate from gross prices, rules by payment method, and
gapless numbers per series and year."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from somsd.domain.cancellation import cancel_order
from somsd.domain.documents import build_document, shipping_by_rate
from somsd.domain.errors import Conflict
from somsd.domain.events import (
    UNNUMBERED,
    CreditNoteIssued,
    InvoiceIssued,
    OrderAccepted,
    OrderEvent,
)
from somsd.domain.invoicing import issue_invoice
from somsd.domain.lifecycle import hold_order, receive_order
from somsd.domain.numbering import (
    NumberSeries,
    assign_number,
    format_number,
    number_documents,
    numbering_key,
    numbering_problems,
    parse_number,
)
from somsd.domain.order import Order
from somsd.domain.policy import InvoicingPolicy, OrderPolicy
from somsd.domain.testing import InMemoryOrderLog, sample_line, sample_order

D = Decimal
NOW = datetime(2026, 11, 21, 10, tzinfo=UTC)
POLICY = OrderPolicy()
MIXED = sample_order(
    lines=[
        sample_line("BOOK-1", 1, "50.00", "7", "Book"),
        sample_line("MUG-1", 4, "25.00", "19", "Mug"),
    ],
    shipping_price="6.00",
)


def received(order: Order, policy: OrderPolicy = POLICY) -> InMemoryOrderLog:
    log = InMemoryOrderLog()
    log.commit(
        "o-1",
        receive_order(order, order_id="o-1", channel="shop", policy=policy, now=NOW, actor="desk"),
    )
    return log


def test_tax_is_extracted_per_rate_and_shipping_follows_the_goods() -> None:
    """Shipping 6.00 splits 2:1 like the goods (100.00 at 19 %, 50.00 at 7 %)."""
    everything = {0: 1, 1: 4}
    assert shipping_by_rate(MIXED, everything) == [(D(7), D("2.00")), (D(19), D("4.00"))]
    document = build_document(
        MIXED, "invoice", everything, shipping=shipping_by_rate(MIXED, everything)
    )
    assert [(t.rate, t.gross, t.tax, t.net) for t in document.taxes] == [
        (D(7), D("52.00"), D("3.40"), D("48.60")),
        (D(19), D("104.00"), D("16.61"), D("87.39")),
    ]
    assert (document.gross, document.tax, document.net) == (D("156.00"), D("20.01"), D("135.99"))
    assert [(line.line, line.tax_rate, line.gross) for line in document.lines] == [
        (0, D(7), D("50.00")),
        (1, D(19), D("100.00")),
        (None, D(7), D("2.00")),
        (None, D(19), D("4.00")),
    ]


def test_line_taxes_add_up_to_the_rate_subtotal() -> None:
    """Three lines of 0.10 at 19 % hold 0.05 tax in total, not 3 x 0.02 = 0.06."""
    order = sample_order(
        lines=[sample_line(f"S-{i}", 1, "0.10") for i in range(3)], shipping_price="0"
    )
    document = build_document(order, "invoice", {0: 1, 1: 1, 2: 1})
    assert document.tax == D("0.05")
    assert sum(line.tax for line in document.lines) == D("0.05")
    assert [line.net + line.tax for line in document.lines] == [D("0.10")] * 3


def test_free_order_puts_shipping_at_its_highest_rate() -> None:
    order = sample_order(
        lines=[sample_line("A", 1, "0.00", "7"), sample_line("B", 1, "0.00", "19")],
        shipping_price="4.90",
    )
    assert shipping_by_rate(order, {0: 1, 1: 1}) == [(D(19), D("4.90"))]
    assert shipping_by_rate(order, {0: 1}) == [(D(7), D("4.90"))]


def test_shipping_follows_only_the_goods_actually_invoiced() -> None:
    """Without the book (7 %), all shipping is taxed at 19 %, as only mugs are invoiced."""
    assert shipping_by_rate(MIXED, {0: 0, 1: 4}) == [(D(19), D("6.00"))]


def test_refunded_shipping_reverses_exactly_the_invoiced_shipping_tax() -> None:
    log = received(MIXED)
    invoice = log.state("o-1").invoice
    assert invoice is not None
    events = log.commit(
        "o-1",
        cancel_order(
            log.state("o-1"), refund_id="r-1", policy=POLICY, reason="r", now=NOW, actor="u"
        ),
    )
    note = next(event for event in events if isinstance(event, CreditNoteIssued))
    assert note.document.shipping == invoice.document.shipping
    assert note.document.taxes == invoice.document.taxes


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=20),
            st.decimals(min_value=0, max_value=999, places=2),
            st.sampled_from([D(0), D(7), D(19), D("5.5")]),
        ),
        min_size=1,
        max_size=6,
    ),
    shipping=st.decimals(min_value=0, max_value=50, places=2),
)
def test_document_totals_always_add_up(
    lines: list[tuple[int, Decimal, Decimal]], shipping: Decimal
) -> None:
    """Lines sum to the rate subtotals and subtotals to the totals, to the cent, always."""
    order = sample_order(
        lines=[
            sample_line(f"S-{i}", quantity, str(price), str(rate))
            for i, (quantity, price, rate) in enumerate(lines)
        ],
        shipping_price=str(shipping),
    )
    units = {i: line.quantity for i, line in enumerate(order.lines)}
    document = build_document(order, "invoice", units, shipping=shipping_by_rate(order, units))
    assert document.gross == order.payment.amount
    assert document.net + document.tax == document.gross
    assert sum(t.gross for t in document.taxes) == document.gross
    assert sum(t.tax for t in document.taxes) == document.tax
    for subtotal in document.taxes:
        group = [line for line in document.lines if line.tax_rate == subtotal.rate]
        assert sum(line.gross for line in group) == subtotal.gross
        assert sum(line.tax for line in group) == subtotal.tax
        assert all(line.net + line.tax == line.gross for line in group)


def test_operator_issues_the_draft_of_an_invoice_order() -> None:
    log = received(sample_order(payment_method="invoice", payment_status="pending"))
    events = issue_invoice(log.state("o-1"), policy=POLICY, now=NOW, actor="user:anna")
    assert [type(event).__name__ for event in events] == ["InvoiceIssued"]
    log.commit("o-1", events)
    state = log.state("o-1")
    assert state.draft is None
    assert state.invoice is not None
    assert state.invoice.number == "RE-2026-000001"
    assert [line.invoiced for line in state.lines] == [2]
    with pytest.raises(Conflict) as caught:
        issue_invoice(state, policy=POLICY, now=NOW, actor="user:anna")
    assert caught.value.code == "already_invoiced"


def test_held_and_free_orders_are_not_invoiced() -> None:
    log = received(sample_order(payment_method="invoice", payment_status="pending"))
    log.commit("o-1", hold_order(log.state("o-1"), policy=POLICY, reason="r", now=NOW, actor="u"))
    with pytest.raises(Conflict) as caught:
        issue_invoice(log.state("o-1"), policy=POLICY, now=NOW, actor="u")
    assert caught.value.code == "not_invoiceable"

    free = received(
        sample_order(
            lines=[sample_line(unit_price="0.00")], shipping_price="0", payment_method="invoice"
        )
    )
    assert free.state("o-1").draft is None
    with pytest.raises(Conflict) as caught:
        issue_invoice(free.state("o-1"), policy=POLICY, now=NOW, actor="u")
    assert caught.value.code == "nothing_to_invoice"


def test_auto_methods_come_from_config() -> None:
    """With `auto_methods = ["paypal"]` a paid card order waits for an operator like any other."""
    policy = OrderPolicy(invoicing=InvoicingPolicy(auto_methods=frozenset({"paypal"})))
    log = received(sample_order(), policy)
    assert [type(e).__name__ for e in log.events("o-1")][-1] == "InvoiceDrafted"


def test_invoice_date_and_numbering_year_follow_the_business_time_zone() -> None:
    """23:30 UTC on New Year's Eve is already next year in Germany (UTC+1 in winter)."""
    berlin_winter = timezone(timedelta(hours=1))
    policy = OrderPolicy(invoicing=InvoicingPolicy(timezone=berlin_winter))
    log = InMemoryOrderLog()
    events = receive_order(
        sample_order(),
        order_id="o-1",
        channel="shop",
        policy=policy,
        now=datetime(2026, 12, 31, 23, 30, tzinfo=UTC),
        actor="desk",
    )
    stored = log.commit("o-1", events)
    invoice = stored[-1]
    assert isinstance(invoice, InvoiceIssued)
    assert invoice.issue_date == date(2027, 1, 1)
    assert invoice.number == "RE-2027-000001"


def test_number_series_counts_per_series_and_year_and_never_changes_in_place() -> None:
    empty = NumberSeries()
    first, after_first = empty.next_number("RE", 2026)
    second, after_second = after_first.next_number("RE", 2026)
    credit, after_credit = after_second.next_number("GS", 2026)
    next_year, _ = after_credit.next_number("RE", 2027)
    assert (first, second, credit, next_year) == (
        "RE-2026-000001",
        "RE-2026-000002",
        "GS-2026-000001",
        "RE-2027-000001",
    )
    assert empty.last_number("RE", 2026) == 0, "a rolled-back transaction keeps the old value"
    assert after_credit.counters == {("RE", 2026): 2, ("GS", 2026): 1}
    assert NumberSeries.from_numbers([first, second, credit]) == after_credit


@pytest.mark.parametrize(
    ("series", "year", "sequence"),
    [("re", 2026, 1), ("RE-X", 2026, 1), ("RE", 26, 1), ("RE", 2026, 0)],
)
def test_malformed_numbers_are_refused(series: str, year: int, sequence: int) -> None:
    with pytest.raises(ValueError, match=r"series|document number"):
        format_number(series, year, sequence)


def test_numbers_parse_back_into_their_parts() -> None:
    assert parse_number("GS-2026-000042") == ("GS", 2026, 42)
    assert parse_number("RE-2026-1000000") == ("RE", 2026, 1_000_000)
    with pytest.raises(ValueError, match="not a document number"):
        parse_number("RE-2026-42")


def test_number_documents_numbers_only_unnumbered_documents_in_order() -> None:
    template = received(sample_order()).events("o-1")[-1]
    assert isinstance(template, InvoiceIssued)
    fresh: list[OrderEvent] = [
        OrderAccepted(at=NOW, actor="x"),
        _unnumbered(template),
        _unnumbered(template),
        template,  # already numbered: passes through
    ]
    numbered, numbers = number_documents(fresh, NumberSeries({("RE", 2026): 7}))
    assert [getattr(event, "number", None) for event in numbered] == [
        None,
        "RE-2026-000008",
        "RE-2026-000009",
        "RE-2026-000001",
    ]
    assert numbers.last_number("RE", 2026) == 9


def test_a_stamper_can_number_one_event_at_a_time() -> None:
    """What a store projection with its own counter table does inside the transaction."""
    invoice = received(sample_order()).events("o-1")[-1]
    assert isinstance(invoice, InvoiceIssued)
    fresh = _unnumbered(invoice)
    assert numbering_key(fresh) == ("RE", 2026)
    assert numbering_key(invoice) is None, "already numbered"
    assert numbering_key(OrderAccepted(at=NOW, actor="x")) is None
    stamped = assign_number(fresh, format_number("RE", 2026, 42))
    assert isinstance(stamped, InvoiceIssued)
    assert (stamped.number, stamped.document) == ("RE-2026-000042", invoice.document)


def _unnumbered(invoice: InvoiceIssued) -> InvoiceIssued:
    return InvoiceIssued(
        at=invoice.at,
        actor=invoice.actor,
        series=invoice.series,
        number=UNNUMBERED,
        issue_date=invoice.issue_date,
        document=invoice.document,
    )


def test_numbering_problems_finds_gaps_and_duplicates() -> None:
    problems = numbering_problems(
        ["RE-2026-000001", "RE-2026-000003", "RE-2026-000003", "GS-2026-000002", "junk"]
    )
    assert problems == [
        '"junk" is not a document number like "RE-2026-000001"',
        "GS-2026-000001 is missing",
        "RE-2026-000003 issued more than once",
        "RE-2026-000002 is missing",
    ]


@settings(max_examples=100, deadline=None)
@given(
    allocations=st.lists(
        st.tuples(st.sampled_from(["RE", "GS"]), st.integers(min_value=2025, max_value=2028)),
        max_size=60,
    ),
    rollbacks=st.lists(st.booleans(), max_size=60),
)
def test_committed_numbers_are_gapless_and_unique_per_series_and_year(
    allocations: list[tuple[str, int]], rollbacks: list[bool]
) -> None:
    """Allocations whose transaction rolls back leave no gap: the old series value is kept."""
    numbers = NumberSeries()
    committed: list[str] = []
    for index, (series, year) in enumerate(allocations):
        number, after = numbers.next_number(series, year)
        rolled_back = index < len(rollbacks) and rollbacks[index]
        if not rolled_back:
            committed.append(number)
            numbers = after
    assert numbering_problems(committed) == []
    per_key = Counter(parse_number(number)[:2] for number in committed)
    for (series, year), count in per_key.items():
        assert numbers.last_number(series, year) == count


def test_credit_note_refers_to_the_invoice_it_corrects() -> None:
    log = received(sample_order())
    events: list[OrderEvent] = log.commit(
        "o-1",
        cancel_order(
            log.state("o-1"), refund_id="r-1", policy=POLICY, reason="r", now=NOW, actor="u"
        ),
    )
    note = next(event for event in events if isinstance(event, CreditNoteIssued))
    assert note.invoice_number == "RE-2026-000001"
    assert note.number == "GS-2026-000001"
    assert note.document.kind == "credit_note"
