"""Hold rules: incomplete addresses, large unpaid orders and blocked customers are held."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from somsd.domain.holds import HoldReason, HoldRules, evaluate_holds
from somsd.domain.order import Address, Customer
from somsd.domain.testing import sample_line, sample_order

ADDRESS = Address(name="Max Muster", street="Hauptstr. 1", zip="10115", city="Berlin", country="DE")
LIMITS = HoldRules(unpaid_limits={"EUR": Decimal("500.00")})


def test_a_complete_paid_order_is_not_held() -> None:
    assert evaluate_holds(sample_order(), LIMITS) == []


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"street": " "}, "$.billing_address.street"),
        ({"name": ""}, "$.billing_address.name"),
        ({"zip": ""}, "$.billing_address.zip"),
        ({"city": ""}, "$.billing_address.city"),
        ({"zip": "1011"}, "$.billing_address.zip"),
        ({"country": "AT", "zip": "10115"}, "$.billing_address.zip"),
        ({"country": "NL", "zip": "10115"}, "$.billing_address.zip"),
    ],
)
def test_incomplete_billing_address_is_held_with_the_field_at_fault(
    changes: dict[str, str], path: str
) -> None:
    order = sample_order(billing_address=msgspec.structs.replace(ADDRESS, **changes))
    reasons = evaluate_holds(order, HoldRules())
    assert [(reason.code, reason.path) for reason in reasons] == [("address_incomplete", path)]


@pytest.mark.parametrize(
    ("country", "zip_code"), [("DE", "10115"), ("AT", "1010"), ("NL", "1011 AB"), ("FR", "75001")]
)
def test_plausible_postcodes_pass(country: str, zip_code: str) -> None:
    address = msgspec.structs.replace(ADDRESS, country=country, zip=zip_code)
    assert evaluate_holds(sample_order(shipping_address=address), HoldRules()) == []


def test_pickup_orders_need_no_shipping_address() -> None:
    blank = Address(name="", street="", zip="", city="", country="DE")
    pickup = sample_order(
        shipping_method="pickup", pickup_location="store-essen", shipping_address=blank
    )
    assert evaluate_holds(pickup, HoldRules()) == []
    shipped = sample_order(shipping_address=blank)
    assert {reason.path for reason in evaluate_holds(shipped, HoldRules())} == {
        "$.shipping_address.name",
        "$.shipping_address.street",
        "$.shipping_address.zip",
        "$.shipping_address.city",
    }


def test_large_unpaid_invoice_order_is_held() -> None:
    large = sample_order(
        lines=[sample_line(quantity=40)], payment_method="invoice", payment_status="pending"
    )
    assert evaluate_holds(large, LIMITS) == [
        HoldReason(
            "unpaid_over_limit",
            "504.90 EUR unpaid by invoice exceeds the limit of 500.00 EUR",
            "$.payment.amount",
        )
    ]


@pytest.mark.parametrize(
    ("quantity", "method", "status", "currency", "held"),
    [
        (40, "invoice", "pending", "EUR", True),
        (40, "cod", "pending", "EUR", True),
        (39, "invoice", "pending", "EUR", False),  # 492.40: under the limit
        (40, "invoice", "paid", "EUR", False),  # paid already
        (40, "creditcard", "authorized", "EUR", False),  # not a method that ships unpaid
        (40, "banktransfer", "pending", "EUR", False),  # prepayment: waits, ships after money
        (40, "invoice", "pending", "CHF", False),  # no limit configured for CHF
    ],
)
def test_unpaid_limit_applies_to_unpaid_methods_in_the_limits_currency(
    quantity: int, method: str, status: str, currency: str, held: bool
) -> None:
    order = sample_order(
        lines=[sample_line(quantity=quantity)],
        payment_method=method,  # type: ignore[arg-type]
        payment_status=status,  # type: ignore[arg-type]
        currency=currency,
    )
    assert bool(evaluate_holds(order, LIMITS)) is held


def test_blocked_email_matches_regardless_of_case_and_spaces() -> None:
    rules = HoldRules(blocked_emails=frozenset({" Max@Example.COM "}))
    reasons = evaluate_holds(sample_order(), rules)
    assert [(reason.code, reason.path) for reason in reasons] == [
        ("customer_blocked", "$.customer.email")
    ]


def test_blocked_customer_id_is_held_and_guests_are_not_matched() -> None:
    rules = HoldRules(blocked_customer_ids=frozenset({"77"}))
    assert [reason.path for reason in evaluate_holds(sample_order(), rules)] == ["$.customer.id"]
    guest = sample_order(customer=Customer(id=None, email="guest@example.com", name="Guest"))
    assert evaluate_holds(guest, rules) == []


def test_every_reason_is_reported() -> None:
    order = sample_order(
        lines=[sample_line(quantity=40)],
        payment_method="invoice",
        payment_status="pending",
        billing_address=msgspec.structs.replace(ADDRESS, street=""),
    )
    rules = msgspec.structs.replace(LIMITS, blocked_emails=frozenset({"max@example.com"}))
    assert [reason.code for reason in evaluate_holds(order, rules)] == [
        "address_incomplete",
        "unpaid_over_limit",
        "customer_blocked",
    ]


def test_hold_rules_decode_from_config_and_refuse_unknown_keys() -> None:
    rules = msgspec.convert(
        {"unpaid_limits": {"EUR": "1000.00"}, "blocked_emails": ["a@b.de"]}, HoldRules
    )
    assert rules.unpaid_limits == {"EUR": Decimal("1000.00")}
    assert rules.unpaid_methods == {"invoice", "cod"}
    with pytest.raises(msgspec.ValidationError, match="unpaid_limit"):
        msgspec.convert({"unpaid_limit": "1000"}, HoldRules)
