"""Canonical order intake: every validation rule names the JSON path of what it refuses."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from somsd.domain.errors import InvalidOrder, Problem
from somsd.domain.order import Order, decode_order, order_gross, validate_order
from somsd.domain.testing import CONTRACT_EXAMPLE, sample_line, sample_order

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def contract_example() -> dict[str, Any]:
    document: dict[str, Any] = msgspec.json.decode(CONTRACT_EXAMPLE)
    return document


def body_with(changes: dict[str, Any], *, remove: tuple[str, ...] = ()) -> bytes:
    """The contract example with values set (or removed) at dotted paths like lines[0].sku."""
    document = contract_example()
    for path, value in changes.items():
        parent, key = _locate(document, path)
        parent[key] = value
    for path in remove:
        parent, key = _locate(document, path)
        del parent[key]
    return msgspec.json.encode(document)


def _locate(document: Any, path: str) -> tuple[Any, Any]:
    steps: list[str | int] = [name if name else int(index) for name, index in _STEP.findall(path)]
    node = document
    for step in steps[:-1]:
        node = node[step]
    return node, steps[-1]


def problems_of(body: bytes, **kwargs: Any) -> list[Problem]:
    with pytest.raises(InvalidOrder) as caught:
        decode_order(body, **kwargs)
    return list(caught.value.problems)


def test_contract_example_is_a_valid_order() -> None:
    """The webhook body from the contract decodes into the canonical order as written."""
    order = decode_order(CONTRACT_EXAMPLE)
    assert order.external_id == "1042"
    assert order.placed_at == datetime(2026, 11, 21, 10, tzinfo=UTC)
    assert order.lines[0].unit_price == Decimal("12.50")
    assert order.lines[0].tax_rate == Decimal(19)
    assert order.shipping.pickup_location is None
    assert order_gross(order) == Decimal("29.90") == order.payment.amount
    assert order == sample_order()


# (what to change, JSON path of the problem, words the message must contain)
RULES: list[tuple[dict[str, Any], str, str]] = [
    ({"lines": []}, "$.lines", "at least one line"),
    ({"lines[0].quantity": 0}, "$.lines[0].quantity", "must be from 1"),
    ({"lines[0].quantity": -3}, "$.lines[0].quantity", "not -3"),
    ({"lines[0].quantity": 10_000_000}, "$.lines[0].quantity", "1000000"),
    ({"currency": "EUX"}, "$.currency", 'unknown currency "EUX"'),
    ({"currency": "eur"}, "$.currency", "ISO 4217"),
    ({"payment.amount": "29.92"}, "$.payment.amount", "does not match lines plus shipping"),
    ({"payment.amount": "24.90"}, "$.payment.amount", "29.90 EUR"),
    ({"shipping.method": "pickup"}, "$.shipping.pickup_location", "required"),
    (
        {"shipping.method": "pickup", "shipping.pickup_location": ""},
        "$.shipping.pickup_location",
        "required",
    ),
    ({"shipping.pickup_location": "store-essen"}, "$.shipping.pickup_location", "only allowed"),
    ({"payment.method": "bitcoin"}, "$.payment.method", "Invalid enum value 'bitcoin'"),
    ({"payment.status": "maybe"}, "$.payment.status", "Invalid enum value"),
    ({"shipping.method": "drone"}, "$.shipping.method", "Invalid enum value"),
    ({"lines[0].unit_price": "-12.50"}, "$.lines[0].unit_price", "must not be negative"),
    ({"lines[0].unit_price": "12.505"}, "$.lines[0].unit_price", "finer than the minor unit"),
    ({"lines[0].unit_price": "NaN"}, "$.lines[0].unit_price", "decimal amount"),
    ({"lines[0].unit_price": "Infinity"}, "$.lines[0].unit_price", "decimal amount"),
    ({"lines[0].unit_price": "1e13"}, "$.lines[0].unit_price", "largest amount"),
    ({"shipping.price": "-4.90"}, "$.shipping.price", "must not be negative"),
    ({"payment.amount": "-29.90"}, "$.payment.amount", "must not be negative"),
    ({"lines[0].tax_rate": "119"}, "$.lines[0].tax_rate", "percentage from 0 to 100"),
    ({"lines[0].tax_rate": "-7"}, "$.lines[0].tax_rate", "percentage"),
    ({"billing_address.country": "de"}, "$.billing_address.country", "ISO 3166-1 alpha-2"),
    ({"shipping_address.country": "DEU"}, "$.shipping_address.country", "alpha-2"),
    ({"shipping_address.country": "XX"}, "$.shipping_address.country", '"XX"'),
    ({"lines[0].sku": "  "}, "$.lines[0].sku", "must not be empty"),
    ({"external_id": ""}, "$.external_id", "must not be empty"),
    ({"number": ""}, "$.number", "must not be empty"),
    ({"customer.email": "max.example.com"}, "$.customer.email", "not an e-mail address"),
    ({"placed_at": "2026-11-21T10:00:00"}, "$.placed_at", "UTC offset"),
    # Shape errors found by msgspec, converted to the same Problem form.
    ({"lines[0].quantity": "2"}, "$.lines[0].quantity", "Expected `int`, got `str`"),
    ({"lines[0].quantity": 2.0}, "$.lines[0].quantity", "got `float`"),
    ({"lines[0].quantity": True}, "$.lines[0].quantity", "got `bool`"),
    ({"lines[0].unit_price": "12,50"}, "$.lines[0].unit_price", "Invalid decimal"),
    ({"placed_at": "yesterday"}, "$.placed_at", "datetime"),
    ({"customer": None}, "$.customer", "Expected `object`, got `null`"),
]


@pytest.mark.parametrize(
    ("changes", "path", "words"), RULES, ids=[f"{path}:{words}" for _, path, words in RULES]
)
def test_each_rule_reports_its_json_path(changes: dict[str, Any], path: str, words: str) -> None:
    """A broken field is refused with exactly its path and a message saying what is wrong."""
    problems = problems_of(body_with(changes))
    assert [problem.path for problem in problems] == [path], problems
    assert words in problems[0].message


@pytest.mark.parametrize(
    ("removed", "path"),
    [
        ("customer", "$.customer"),
        ("lines[0].sku", "$.lines[0].sku"),
        ("payment", "$.payment"),
        ("shipping.price", "$.shipping.price"),
    ],
)
def test_missing_field_is_reported_at_the_field_itself(removed: str, path: str) -> None:
    problems = problems_of(body_with({}, remove=(removed,)))
    assert problems == [Problem(path, "required field is missing")]


def test_malformed_json_is_a_bad_request_not_a_validation_failure() -> None:
    """The HTTP layer answers 400 for `malformed_json` and 422 for `invalid_order`."""
    with pytest.raises(InvalidOrder) as caught:
        decode_order(CONTRACT_EXAMPLE[:-5])
    assert caught.value.code == "malformed_json"
    assert caught.value.problems[0].path == "$"
    with pytest.raises(InvalidOrder) as caught:
        decode_order(b"[]")
    assert caught.value.code == "invalid_order"
    assert caught.value.problems == (Problem("$", "Expected `object`, got `array`"),)


def test_all_semantic_problems_are_reported_in_one_answer() -> None:
    """A shop developer fixes a broken payload in one round trip, not one field at a time."""
    body = body_with(
        {
            "currency": "EUX",
            "customer.email": "nobody",
            "lines[0].quantity": 0,
            "shipping.method": "pickup",
        }
    )
    paths = [problem.path for problem in problems_of(body)]
    assert paths == [
        "$.currency",
        "$.customer.email",
        "$.lines[0].quantity",
        "$.shipping.pickup_location",
    ]


def test_totals_may_differ_by_one_cent_of_per_line_rounding() -> None:
    """A shop that rounds per line may be one minor unit off; that is accepted as sent."""
    for amount in ("29.89", "29.91"):
        assert decode_order(body_with({"payment.amount": amount})).payment.amount == Decimal(amount)


def test_totals_tolerance_follows_the_currency_minor_unit() -> None:
    body = body_with(
        {
            "currency": "JPY",
            "lines[0].unit_price": "1250",
            "shipping.price": "490",
            "payment.amount": "2991",
        }
    )
    assert decode_order(body).currency == "JPY"
    problems = problems_of(body_with({"currency": "JPY", "payment.amount": "29.90"}))
    assert {problem.path for problem in problems} == {
        "$.lines[0].unit_price",
        "$.shipping.price",
        "$.payment.amount",
    }, "12.50 JPY has a fraction a yen does not have"


def test_pickup_location_must_be_a_known_store_when_stores_are_configured() -> None:
    body = body_with({"shipping.method": "pickup", "shipping.pickup_location": "store-dortmund"})
    problems = problems_of(body, known_pickup_locations={"store-essen"})
    assert problems == [
        Problem("$.shipping.pickup_location", 'unknown store "store-dortmund"; known: store-essen')
    ]
    order = decode_order(body, known_pickup_locations={"store-dortmund", "store-essen"})
    assert order.shipping.pickup_location == "store-dortmund"


def test_placed_at_is_normalised_to_utc() -> None:
    order = decode_order(body_with({"placed_at": "2026-11-21T12:00:00+02:00"}))
    assert order.placed_at == datetime(2026, 11, 21, 10, tzinfo=UTC)
    assert order.placed_at.tzinfo is UTC


def test_money_given_as_json_numbers_is_read_exactly() -> None:
    """The contract asks for strings; numbers are accepted but never go through float."""
    order = decode_order(
        body_with({"lines[0].unit_price": 12.5, "shipping.price": 4.9, "payment.amount": 29.90})
    )
    assert order.lines[0].unit_price == Decimal("12.5")
    assert order.payment.amount == Decimal("29.90")


def test_unknown_fields_are_ignored_so_newer_writers_stay_readable() -> None:
    order = decode_order(body_with({"loyalty_points": 12, "lines[0].colour": "blue"}))
    assert order.lines[0].sku == "MUG-1"


def test_orders_built_in_code_are_checked_for_enum_values_too() -> None:
    """Adapters construct Structs in Python, where msgspec does not check Literal types."""
    order = sample_order()
    broken = msgspec.structs.replace(
        order,
        payment=msgspec.structs.replace(order.payment, method="bitcoin"),
        shipping=msgspec.structs.replace(order.shipping, method="drone"),
    )
    assert [problem.path for problem in validate_order(broken)] == [
        "$.shipping.method",
        "$.payment.method",
    ]


def test_zero_price_lines_are_valid() -> None:
    """Free items and free replacements are orders too."""
    order = sample_order(lines=[sample_line(unit_price="0.00")], shipping_price="0")
    assert validate_order(order) == []


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["NaN", "-0", "1e400", "12.505", "2026-11-21T10:00:00Z", "pickup"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = [
    "external_id",
    "placed_at",
    "currency",
    "customer",
    "customer.email",
    "billing_address.country",
    "lines",
    "lines[0]",
    "lines[0].quantity",
    "lines[0].unit_price",
    "lines[0].tax_rate",
    "shipping",
    "shipping.method",
    "shipping.price",
    "shipping.pickup_location",
    "payment.method",
    "payment.amount",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, min_size=1, max_size=4))
def test_any_mangled_body_is_either_an_order_or_invalid_order(changes: dict[str, Any]) -> None:
    """Whatever a shop sends, intake answers with an order or a located problem, never a crash
    (the HTTP layer turns anything else into a 500)."""
    try:
        body = body_with(changes)
    except (TypeError, KeyError, IndexError):
        return  # an earlier change replaced the parent of a later path
    problems: tuple[Problem, ...] = ()
    try:
        order = decode_order(body)
    except InvalidOrder as exc:
        problems = exc.problems
    else:
        assert isinstance(order, Order)
        assert validate_order(order) == []
        return
    assert problems
    assert all(problem.path.startswith("$") for problem in problems)
