"""A location's count against shipments we have not heard of yet (the "undercount window").

A 3PL's count as of T already lacks every unit it shipped by T. If our book applied that count
while such a shipment was still unread, the units would be missing twice: gone from on hand
*and* still reserved, so ATP would read low and the reservations would look oversold (and be
given up, sending the units out again elsewhere). `actors.location` therefore hands a count
over only after reading the feed past it. These properties pin down why that is enough: with
every shipment dated up to T applied before the count of T - whatever else arrives early, late
or out of order - the book's ATP is exact at every step, and no count flags a false oversell.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from somsd.domain.atp import (
    StockBook,
    StockCount,
    StockLine,
    StockReport,
    StockReserved,
    StockShipped,
    apply_stock_event,
    receive_stock_report,
    reserve_stock,
)

T0 = datetime(2026, 12, 7, 8, tzinfo=UTC)
SKU, WH = "MUG", "wh"


def _at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def _book(on_hand: int, quantities: list[int]) -> tuple[StockBook, list[StockReserved]]:
    book = StockBook()
    counted = receive_stock_report(book, StockReport(WH, T0, (StockCount(SKU, on_hand),)))
    assert counted.counted is not None
    apply_stock_event(book, counted.counted)
    reserved = []
    for n, quantity in enumerate(quantities):
        decided = reserve_stock(book, f"r{n}", WH, (StockLine(SKU, quantity),))
        assert isinstance(decided, StockReserved)
        apply_stock_event(book, decided)
        reserved.append(decided)
    return book, reserved


Feed = list[StockShipped | StockReport]


@st.composite
def warehouse(draw: st.DrawFn) -> tuple[int, list[int], Feed, list[int]]:
    """Stock, reservations, what the 3PL did (ships and counts, a minute apart) and the order
    our book hears of it: any order in which a count comes after every shipment up to it."""
    on_hand = draw(st.integers(0, 30))
    quantities = draw(st.lists(st.integers(1, 5), max_size=8))
    quantities = [q for n, q in enumerate(quantities) if sum(quantities[: n + 1]) <= on_hand]
    physical, feed = on_hand, list[StockShipped | StockReport]()
    unshipped = list(range(len(quantities)))
    steps = draw(st.lists(st.sampled_from(["ship", "count"]), max_size=12))
    for minute, step in enumerate(steps, start=1):
        if step == "ship" and unshipped:
            n = unshipped.pop(draw(st.integers(0, len(unshipped) - 1)))
            physical -= quantities[n]
            feed.append(StockShipped(f"r{n}", WH, (StockLine(SKU, quantities[n]),), _at(minute)))
        else:
            feed.append(StockReport(WH, _at(minute), (StockCount(SKU, physical),)))
    priorities = draw(st.lists(st.integers(), min_size=len(feed), max_size=len(feed)))
    delivered: list[int] = []
    waiting = set(range(len(feed)))
    shipped_at = {j: e.at for j, e in enumerate(feed) if isinstance(e, StockShipped)}

    def ready(i: int) -> bool:
        item = feed[i]
        if isinstance(item, StockShipped):
            return True
        return all(j not in waiting for j, at in shipped_at.items() if at <= item.as_of)

    while waiting:
        first = min((i for i in waiting if ready(i)), key=lambda i: (priorities[i], i))
        waiting.remove(first)
        delivered.append(first)
    return on_hand, quantities, feed, delivered


@given(warehouse())
def test_counts_read_after_the_feed_keep_atp_exact_and_flag_no_false_oversell(
    case: tuple[int, list[int], Feed, list[int]],
) -> None:
    on_hand, quantities, feed, delivered = case
    book, _ = _book(on_hand, quantities)
    truth = on_hand - sum(quantities)  # shipping moves units out of on hand and reserved alike
    assert book.atp_for(SKU, WH) == truth
    for index in delivered:
        item = feed[index]
        if isinstance(item, StockReport):
            decision = receive_stock_report(book, item)
            assert decision.oversold == ()
            if decision.counted is not None:
                apply_stock_event(book, decision.counted)
        else:
            apply_stock_event(book, item)
        assert book.atp_for(SKU, WH) == truth


def test_a_count_read_before_a_shipment_it_includes_reads_low_and_flags_a_false_oversell() -> None:
    """The window the ordering closes: 10 on hand, all reserved and shipped by minute 1."""
    book, _ = _book(10, [10])
    shipped = StockShipped("r0", WH, (StockLine(SKU, 10),), _at(1))
    decision = receive_stock_report(book, StockReport(WH, _at(2), (StockCount(SKU, 0),)))
    assert [over.reserved for over in decision.oversold] == [10]  # not oversold: shipped
    assert decision.counted is not None
    apply_stock_event(book, decision.counted)
    assert book.atp_for(SKU, WH) == -10  # undercount until the shipment is read
    apply_stock_event(book, shipped)
    assert book.atp_for(SKU, WH) == 0
