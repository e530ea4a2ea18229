"""Money: rounding, tax extraction and allocation never lose or invent a minor unit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from somsd.domain.money import (
    CURRENCY_EXPONENTS,
    allocate,
    is_known_currency,
    minor_unit,
    minor_unit_exponent,
    round_money,
    split_evenly,
    sum_money,
    tax_from_gross,
)

D = Decimal
# Bounded so the whole domain suite stays well under 30 s on the 2-core CI machine.
FAST = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("EUR", 2), ("USD", 2), ("CHF", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3)],
)
def test_minor_unit_exponent_follows_iso_4217(currency: str, exponent: int) -> None:
    """Each currency rounds to its own minor unit, not always to cents."""
    assert minor_unit_exponent(currency) == exponent
    assert minor_unit(currency) == D(1).scaleb(-exponent)


@pytest.mark.parametrize("code", ["EUX", "eur", "", "XXX", "XAU", "HRK", "EURO"])
def test_unknown_withdrawn_and_non_price_codes_are_not_currencies(code: str) -> None:
    """Typos, lowercase, metals, test codes and withdrawn currencies are refused."""
    assert not is_known_currency(code)
    with pytest.raises(ValueError, match="unknown currency"):
        minor_unit(code)


def test_currency_table_is_plausible() -> None:
    """Every code is three uppercase letters and the table covers the world's currencies."""
    assert all(len(code) == 3 and code.isupper() for code in CURRENCY_EXPONENTS)
    assert 150 < len(CURRENCY_EXPONENTS) < 200
    assert set(CURRENCY_EXPONENTS.values()) == {0, 2, 3}


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("2.345", "EUR", "2.35"),
        ("2.344", "EUR", "2.34"),
        ("2.5", "JPY", "3"),
        ("-2.345", "EUR", "-2.35"),
        ("0.0005", "KWD", "0.001"),
        ("10", "EUR", "10.00"),
    ],
)
def test_round_money_rounds_half_up_to_the_minor_unit(
    amount: str, currency: str, expected: str
) -> None:
    """Half-up, as German tax offices round, not the stdlib's half-even."""
    rounded = round_money(D(amount), currency)
    assert rounded == D(expected)
    assert str(rounded) == expected


def test_sum_money_rounds_once_at_the_end() -> None:
    """Three thirds of a cent sum to one cent, not to zero."""
    assert sum_money([D("0.003"), D("0.003"), D("0.004")], "EUR") == D("0.01")


@pytest.mark.parametrize(
    ("gross", "rate", "tax"),
    [
        ("119.00", "19", "19.00"),
        ("107.00", "7", "7.00"),
        ("29.90", "19", "4.77"),
        ("12.50", "19", "2.00"),
        ("0.01", "19", "0.00"),
        ("10.00", "0", "0.00"),
    ],
)
def test_tax_is_extracted_from_gross_prices(gross: str, rate: str, tax: str) -> None:
    """German shops quote gross: tax = gross - gross / (1 + rate)."""
    assert tax_from_gross(D(gross), D(rate), "EUR") == D(tax)


def test_tax_rate_outside_a_percentage_is_refused() -> None:
    with pytest.raises(ValueError, match="percentage"):
        tax_from_gross(D("10.00"), D("101"), "EUR")


@FAST
@given(
    gross=st.decimals(min_value=0, max_value=10**9, places=2),
    rate=st.decimals(min_value=0, max_value=100, places=2),
)
def test_extracted_tax_is_within_half_a_cent_of_the_exact_value(
    gross: Decimal, rate: Decimal
) -> None:
    """The one rounding step is the only error, and it is at most half a minor unit."""
    tax = tax_from_gross(gross, rate, "EUR")
    exact = gross * rate / (100 + rate)
    assert D(0) <= tax <= gross
    assert abs(tax - exact) <= D("0.005")


def test_allocate_distributes_leftover_cents_to_the_largest_remainders() -> None:
    """10.00 in thirds: 3.34, 3.33, 3.33 — the first of equal remainders gets the cent."""
    assert allocate(D("10.00"), [D(1), D(1), D(1)], "EUR") == [D("3.34"), D("3.33"), D("3.33")]
    assert allocate(D("1.00"), [D(1), D(2)], "EUR") == [D("0.33"), D("0.67")]
    assert allocate(D("5"), [D(1), D(1)], "JPY") == [D(3), D(2)]


def test_allocate_splits_a_credit_like_its_absolute_value() -> None:
    assert allocate(D("-10.00"), [D(1), D(1), D(1)], "EUR") == [
        D("-3.34"),
        D("-3.33"),
        D("-3.33"),
    ]


@pytest.mark.parametrize(
    ("total", "weights", "message"),
    [
        (D("1.005"), [D(1)], "minor units"),
        (D("1.00"), [D(0), D(0)], "all be zero"),
        (D("1.00"), [D(1), D(-1)], "negative"),
    ],
)
def test_allocate_refuses_what_it_cannot_split_exactly(
    total: Decimal, weights: list[Decimal], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        allocate(total, weights, "EUR")


@FAST
@given(
    total=st.decimals(min_value=-(10**9), max_value=10**9, places=2),
    weights=st.lists(
        st.decimals(min_value=0, max_value=10**6, places=2), min_size=1, max_size=12
    ).filter(lambda ws: sum(ws) > 0),
)
def test_allocation_sums_exactly_and_is_fair_to_the_cent(
    total: Decimal, weights: list[Decimal]
) -> None:
    """Parts add up to the total, each within one cent of its exact proportional share."""
    parts = allocate(total, weights, "EUR")
    assert len(parts) == len(weights)
    assert sum(parts) == total
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        assert round_money(part, "EUR") == part
        assert abs(part - total * weight / weight_sum) < D("0.01")
    assert allocate(total, weights, "EUR") == parts, "same input, same split"


@FAST
@given(
    total=st.integers(min_value=0, max_value=10**9),
    parts=st.integers(min_value=1, max_value=50),
    currency=st.sampled_from(["EUR", "JPY", "KWD"]),
)
def test_split_evenly_parts_differ_by_at_most_one_minor_unit(
    total: int, parts: int, currency: str
) -> None:
    amount = D(total).scaleb(-minor_unit_exponent(currency))
    split = split_evenly(amount, parts, currency)
    assert sum(split) == amount
    assert max(split) - min(split) <= minor_unit(currency)
    assert split == sorted(split, reverse=True)
