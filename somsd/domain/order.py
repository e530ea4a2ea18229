"""The canonical order: the one shape every channel's order is mapped to, and its validation.

The Structs mirror the webhook body in `shared/design/contract.md` field for field, so the JSON
a shop posts, the `OrderReceived` event that stores it and the order an adapter builds in code
are the same value. Intake is two steps with different jobs:

- `decode_order(body)` checks the *shape* with msgspec (types, required fields) and then the
  *meaning* with `validate_order`; it raises one `InvalidOrder` carrying every problem with its
  JSON path, which is what the HTTP layer answers 400/422 with.
- `validate_order(order)` checks the meaning only, and returns all problems instead of stopping
  at the first, so a shop developer fixes a broken payload in one round trip. Adapters that
  build orders in code (Smartstore, SelectLine) call it too: a Struct constructed in Python is
  not type-checked at run time, so it repeats the enum checks msgspec did for JSON.

Unknown fields are ignored, not rejected: an `OrderReceived` event written by a newer somsd must
still decode in an older one (msgspec's schema-evolution rules), and the same Struct serves both.

"Totals" — the contract has no totals block, so the one sum an order states is
`payment.amount`: it must equal the lines' gross (unit_price x quantity) plus the shipping
price, within one minor unit of the currency (0.01 EUR). One cent is the difference a shop can
honestly produce by deriving gross prices from net ones line by line; anything larger is a
mapping bug or a discount the contract cannot express, and is refused rather than silently
invoiced wrong. The same cent of tolerance makes such an order count as paid in full
(`OrderState.paid_in_full`); invoices are always computed from the lines, never from the amount.
Money amounts must not be finer than the currency's minor unit ("12.505" EUR is refused, "12.50"
and "12.5" are the same amount) so that every later sum is exact.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final, Literal, get_args

import msgspec

from somsd.domain.countries import is_country_code
from somsd.domain.errors import InvalidOrder, Problem
from somsd.domain.money import is_known_currency, minor_unit, round_money, sum_money

__all__ = [
    "MAX_AMOUNT",
    "MAX_QUANTITY",
    "PAYMENT_METHODS",
    "PAYMENT_STATUSES",
    "SHIPPING_METHODS",
    "Address",
    "Customer",
    "Order",
    "OrderLine",
    "Payment",
    "PaymentMethod",
    "PaymentStatus",
    "Shipping",
    "ShippingMethod",
    "decode_order",
    "line_gross",
    "lines_gross",
    "order_gross",
    "validate_order",
]

ShippingMethod = Literal["standard", "express", "pickup"]
PaymentMethod = Literal["creditcard", "paypal", "invoice", "banktransfer", "check", "cod"]
PaymentStatus = Literal["pending", "authorized", "paid", "refunded"]

SHIPPING_METHODS: Final = frozenset(get_args(ShippingMethod))
PAYMENT_METHODS: Final = frozenset(get_args(PaymentMethod))
PAYMENT_STATUSES: Final = frozenset(get_args(PaymentStatus))

# Plausibility ceilings. No shop order holds a million units of a line or a trillion of money;
# values beyond are data errors, and capping them keeps every product of quantity and price
# inside the 28 significant digits money arithmetic uses (10^6 x 10^12 = 10^18).
MAX_QUANTITY: Final = 1_000_000
MAX_AMOUNT: Final = Decimal(10) ** 12
# Tax rates are percentages with at most four decimals ("19", "7.7", "8.1234"): finer is no
# rate any tax authority sets, and an unbounded exponent ("1e-999999") makes arithmetic slow.
TAX_RATE_QUANTUM: Final = Decimal("0.0001")


# What the OpenAPI document states about numbers. Schema only (`extra_json_schema`): decoding
# stays as it is, so `validate_order` reports every problem at once with its own message, and
# stored `OrderReceived` events always decode.
Quantity = Annotated[int, msgspec.Meta(extra_json_schema={"minimum": 1, "maximum": MAX_QUANTITY})]
Money = Annotated[
    Decimal,
    msgspec.Meta(
        extra_json_schema={
            "pattern": r"^[0-9]{1,13}(\.[0-9]{1,3})?$",
            "description": "a decimal string in the currency's minor units, at most 10^12",
        }
    ),
]
TaxRate = Annotated[
    Decimal,
    msgspec.Meta(
        extra_json_schema={
            "pattern": r"^(100(\.0{1,4})?|[0-9]{1,2}(\.[0-9]{1,4})?)$",
            "description": 'a percentage from 0 to 100 with at most four decimals: "19"',
        }
    ),
]


class Customer(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    id: str | None = None  # guests have no customer number in the shop
    email: str
    name: str


class Address(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    name: str
    company: str | None = None
    street: str
    zip: str
    city: str
    country: str  # ISO 3166-1 alpha-2, uppercase


class OrderLine(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    sku: str
    name: str
    quantity: Quantity
    unit_price: Money  # gross, in the order's currency
    tax_rate: TaxRate  # percent: "19" means 19 %


class Shipping(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    method: ShippingMethod
    price: Money  # gross
    pickup_location: str | None = None  # the store's location name when method is "pickup"


class Payment(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    method: PaymentMethod
    status: PaymentStatus
    amount: Money  # what the customer pays (or paid) for the whole order, gross


class Order(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    external_id: str  # the channel's id; unique per channel (the event store enforces that)
    number: str  # the order number the customer sees
    placed_at: datetime  # timezone-aware; `decode_order` normalises it to UTC
    currency: str  # ISO 4217
    customer: Customer
    billing_address: Address
    shipping_address: Address
    lines: tuple[OrderLine, ...]
    shipping: Shipping
    payment: Payment


def line_gross(line: OrderLine, quantity: int, currency: str) -> Decimal:
    """Gross amount of `quantity` units of a line (exact when the unit price is valid)."""
    return round_money(line.unit_price * quantity, currency)


def lines_gross(order: Order) -> Decimal:
    """Sum of every line's gross amount, without shipping."""
    return sum_money(
        (line_gross(line, line.quantity, order.currency) for line in order.lines), order.currency
    )


def order_gross(order: Order) -> Decimal:
    """What the order costs the customer: lines plus shipping, gross."""
    return round_money(lines_gross(order) + order.shipping.price, order.currency)


_order_decoder = msgspec.json.Decoder(Order)
_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
# Deliberately loose: one "@", something on both sides, a dot in the domain, no spaces. Stricter
# checks refuse real addresses (RFC 5321 allows far more than shops' regexes do); delivery
# problems are the mail server's to report.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def decode_order(body: bytes, *, known_pickup_locations: Collection[str] | None = None) -> Order:
    """Decode a webhook body into an `Order`, or raise `InvalidOrder` listing every problem.

    The returned order's `placed_at` is in UTC whatever offset the shop sent.
    """
    try:
        order = _order_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidOrder([_problem_from_msgspec(exc)]) from exc
    except msgspec.DecodeError as exc:
        raise InvalidOrder([Problem("$", f"not valid JSON: {exc}")], code="malformed_json") from exc
    except RecursionError:
        # msgspec stops at the interpreter's recursion limit; an order nests four levels.
        raise InvalidOrder(
            [Problem("$", "JSON nested too deeply to decode; an order nests a few levels")],
            code="malformed_json",
        ) from None
    problems = validate_order(order, known_pickup_locations=known_pickup_locations)
    if problems:
        raise InvalidOrder(problems)
    return msgspec.structs.replace(order, placed_at=order.placed_at.astimezone(UTC))


def _problem_from_msgspec(exc: msgspec.ValidationError) -> Problem:
    """Turn "Expected `int`, got `str` - at `$.lines[0].quantity`" into a `Problem`."""
    match = _MSGSPEC_PATH.match(str(exc))
    assert match is not None, "the pattern matches any string"
    path = match.group("path") or "$"
    message = match.group("message")
    missing = _MISSING_FIELD.match(message)
    if missing is not None:
        # Point at the missing field itself, as every other problem points at its value.
        return Problem(f"{path}.{missing.group('field')}", "required field is missing")
    return Problem(path, message)


def validate_order(
    order: Order, *, known_pickup_locations: Collection[str] | None = None
) -> list[Problem]:
    """Every rule the order breaks, in document order; an empty list means it can be taken in.

    `known_pickup_locations`, when given, are the store names a pickup order may name.
    """
    problems: list[Problem] = []
    currency = _check_header(order, problems)
    amounts_valid = currency is not None
    amounts_valid &= _check_lines(order.lines, currency, problems)
    amounts_valid &= _check_shipping(order.shipping, currency, known_pickup_locations, problems)
    amounts_valid &= _check_payment(order.payment, currency, problems)
    # The totals check only means something when every term is a valid amount; otherwise it
    # would add a second, confusing problem for the one already reported.
    if amounts_valid and currency is not None and order.lines:
        expected = order_gross(order)
        if abs(order.payment.amount - expected) > minor_unit(currency):
            problems.append(
                Problem(
                    "$.payment.amount",
                    f"{order.payment.amount} does not match lines plus shipping "
                    f"({expected} {currency}); they may differ by at most {minor_unit(currency)}",
                )
            )
    return problems


def _check_header(order: Order, problems: list[Problem]) -> str | None:
    """Check ids, time, currency, customer and countries; return the currency if it is known."""
    if not order.external_id.strip():
        problems.append(Problem("$.external_id", "must not be empty"))
    if not order.number.strip():
        problems.append(Problem("$.number", "must not be empty"))
    if order.placed_at.utcoffset() is None:
        problems.append(Problem("$.placed_at", 'needs a UTC offset, e.g. "2026-11-21T10:00:00Z"'))
    currency: str | None = order.currency
    if not is_known_currency(order.currency):
        problems.append(
            Problem(
                "$.currency",
                f'unknown currency "{order.currency}"; use an ISO 4217 code like "EUR"',
            )
        )
        currency = None
    if not _EMAIL.match(order.customer.email):
        problems.append(
            Problem("$.customer.email", f'"{order.customer.email}" is not an e-mail address')
        )
    for field, address in (
        ("billing_address", order.billing_address),
        ("shipping_address", order.shipping_address),
    ):
        if not is_country_code(address.country):
            problems.append(
                Problem(
                    f"$.{field}.country",
                    f'"{address.country}" is not an ISO 3166-1 alpha-2 country code like "DE"',
                )
            )
    return currency


def _check_lines(lines: Sequence[OrderLine], currency: str | None, problems: list[Problem]) -> bool:
    """Check every line; True if all quantities and prices are usable in the totals check."""
    if not lines:
        problems.append(Problem("$.lines", "an order needs at least one line"))
    amounts_valid = True
    for index, line in enumerate(lines):
        path = f"$.lines[{index}]"
        if not line.sku.strip():
            problems.append(Problem(f"{path}.sku", "must not be empty"))
        if not 1 <= line.quantity <= MAX_QUANTITY:
            problems.append(
                Problem(
                    f"{path}.quantity", f"must be from 1 to {MAX_QUANTITY}, not {line.quantity}"
                )
            )
            amounts_valid = False
        amounts_valid &= _check_money(line.unit_price, currency, f"{path}.unit_price", problems)
        if not line.tax_rate.is_finite() or not 0 <= line.tax_rate <= 100:
            problems.append(
                Problem(
                    f"{path}.tax_rate", f"must be a percentage from 0 to 100, not {line.tax_rate}"
                )
            )
        elif line.tax_rate.quantize(TAX_RATE_QUANTUM) != line.tax_rate:
            problems.append(
                Problem(
                    f"{path}.tax_rate",
                    f'must have at most four decimals (like "19" or "7.7"), not {line.tax_rate}',
                )
            )
    return amounts_valid


def _check_shipping(
    shipping: Shipping,
    currency: str | None,
    known_pickup_locations: Collection[str] | None,
    problems: list[Problem],
) -> bool:
    """Check method, price and pickup store; True if the price is usable."""
    path = "$.shipping.pickup_location"
    if shipping.method not in SHIPPING_METHODS:
        problems.append(
            Problem(
                "$.shipping.method",
                f'unknown shipping method "{shipping.method}"; '
                f"use one of {_choices(SHIPPING_METHODS)}",
            )
        )
    if shipping.method == "pickup":
        if not shipping.pickup_location:
            problems.append(Problem(path, 'required when shipping.method is "pickup"'))
        elif (
            known_pickup_locations is not None
            and shipping.pickup_location not in known_pickup_locations
        ):
            problems.append(
                Problem(
                    path,
                    f'unknown store "{shipping.pickup_location}"; '
                    f"known: {_choices(known_pickup_locations)}",
                )
            )
    elif shipping.pickup_location:
        problems.append(Problem(path, 'only allowed when shipping.method is "pickup"'))
    return _check_money(shipping.price, currency, "$.shipping.price", problems)


def _check_payment(payment: Payment, currency: str | None, problems: list[Problem]) -> bool:
    """Check method, status and amount; True if the amount is usable."""
    if payment.method not in PAYMENT_METHODS:
        problems.append(
            Problem(
                "$.payment.method",
                f'unknown payment method "{payment.method}"; '
                f"use one of {_choices(PAYMENT_METHODS)}",
            )
        )
    if payment.status not in PAYMENT_STATUSES:
        problems.append(
            Problem(
                "$.payment.status",
                f'unknown payment status "{payment.status}"; '
                f"use one of {_choices(PAYMENT_STATUSES)}",
            )
        )
    return _check_money(payment.amount, currency, "$.payment.amount", problems)


def _check_money(amount: Decimal, currency: str | None, path: str, problems: list[Problem]) -> bool:
    """Append a problem unless `amount` is a finite, non-negative amount in `currency`."""
    if not amount.is_finite():
        problems.append(Problem(path, f'must be a decimal amount like "12.50", not {amount}'))
        return False
    if amount < 0:
        problems.append(Problem(path, f"must not be negative, not {amount}"))
        return False
    if amount > MAX_AMOUNT:
        problems.append(
            Problem(path, f"{amount} exceeds the largest amount somsd takes ({MAX_AMOUNT})")
        )
        return False
    if currency is not None and round_money(amount, currency) != amount:
        problems.append(
            Problem(
                path,
                f"{amount} is finer than the minor unit of {currency} ({minor_unit(currency)})",
            )
        )
        return False
    return True


def _choices(names: Collection[str]) -> str:
    return ", ".join(sorted(names))
