"""`fake_order`: a realistic canonical order from a seeded random generator.

Pure and deterministic — the same `random.Random` state and arguments give the same order, so
a failing demo or test run can be replayed from its seed. The mix is meant to exercise what
somsd decides on, not to be statistics: mostly one-line orders and some multi-line ones
(routing splits), every payment method a German shop offers here (invoicing rules), some
click & collect orders naming a store (pickup routing), some guests, company customers and
gift orders shipped to another address. Totals are exact: prices are two-decimal gross
amounts and `payment.amount` is computed with the domain's own `order_gross`, so every order
passes `validate_order`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Final

import msgspec

from adapters.webhookshop.catalogue import DEFAULT_CATALOGUE, CatalogueItem
from adapters.webhookshop.people import (
    CITIES,
    COMPANIES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    STREETS,
    ascii_fold,
)
from somsd.domain.order import (
    Address,
    Customer,
    Order,
    OrderLine,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Shipping,
    ShippingMethod,
    lines_gross,
    order_gross,
)

__all__ = ["FREE_SHIPPING_FROM", "SHIPPING_PRICES", "fake_order"]

# Weights of the payment methods: roughly how German online shoppers pay (PayPal and invoice
# lead, cash on delivery is rare but alive). Cheques are not offered by this shop.
_PAYMENT_WEIGHTS: Final[dict[PaymentMethod, int]] = {
    "paypal": 35,
    "creditcard": 25,
    "invoice": 20,
    "banktransfer": 10,
    "cod": 10,
}
# Prepaid methods are captured at checkout; the others are paid later (invoice, bank transfer
# in advance) or on the doorstep (cash on delivery).
_PAYMENT_STATUS: Final[dict[PaymentMethod, PaymentStatus]] = {
    "paypal": "paid",
    "creditcard": "paid",
    "invoice": "pending",
    "banktransfer": "pending",
    "cod": "pending",
    "check": "pending",
}
SHIPPING_PRICES: Final[dict[ShippingMethod, Decimal]] = {
    "standard": Decimal("4.90"),
    "express": Decimal("9.90"),
    "pickup": Decimal("0.00"),
}
FREE_SHIPPING_FROM: Final = Decimal("50.00")  # standard shipping is free from this line total
_QUANTITIES: Final = (1, 1, 1, 1, 1, 1, 1, 2, 2, 3)  # most lines are one unit


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def _address(rng: random.Random, name: str, *, company: str | None) -> Address:
    number = str(rng.randint(1, 120)) + ("a" if rng.random() < 0.1 else "")
    postcode, city = rng.choice(CITIES)
    return Address(
        name=name,
        company=company,
        street=f"{rng.choice(STREETS)} {number}",
        zip=postcode,
        city=city,
        country="DE",
    )


def fake_order(
    rng: random.Random,
    *,
    number: str,
    placed_at: datetime,
    catalogue: Sequence[CatalogueItem] = DEFAULT_CATALOGUE,
    stores: Sequence[str] = (),
    pickup_share: float = 0.15,
    multi_line_share: float = 0.35,
    currency: str = "EUR",
) -> Order:
    """One order numbered `number`; pickup orders (only when `stores` are given) name one.

    `catalogue` prices are taken as gross amounts in `currency`.
    """
    if not catalogue:
        raise ValueError("fake_order needs a catalogue with at least one item")
    first, last = _person(rng)
    name = f"{first} {last}"
    company = rng.choice(COMPANIES) if rng.random() < 0.1 else None
    billing = _address(rng, name, company=company)
    shipping_address = billing
    if rng.random() < 0.1:  # a gift: someone else, somewhere else
        other_first, other_last = _person(rng)
        shipping_address = _address(rng, f"{other_first} {other_last}", company=None)

    line_count = 1
    if len(catalogue) > 1 and rng.random() < multi_line_share:
        line_count = rng.randint(2, min(4, len(catalogue)))
    lines = tuple(
        OrderLine(
            sku=item.sku,
            name=item.name,
            quantity=rng.choice(_QUANTITIES),
            unit_price=item.unit_price,
            tax_rate=item.tax_rate,
        )
        for item in rng.sample(list(catalogue), line_count)
    )

    pickup_location = rng.choice(stores) if stores and rng.random() < pickup_share else None
    methods = list(_PAYMENT_WEIGHTS)
    if pickup_location is not None:
        method: ShippingMethod = "pickup"
        methods.remove("cod")  # nothing is delivered, so nothing is paid on delivery
    else:
        method = "express" if rng.random() < 0.1 else "standard"
    payment_method = rng.choices(methods, weights=[_PAYMENT_WEIGHTS[m] for m in methods])[0]

    draft = Order(
        external_id=number,
        number=number,
        placed_at=placed_at,
        currency=currency,
        customer=Customer(
            id=None if rng.random() < 0.25 else str(rng.randint(1000, 99999)),
            email=f"{ascii_fold(first)}.{ascii_fold(last)}@{rng.choice(EMAIL_DOMAINS)}".lower(),
            name=name,
        ),
        billing_address=billing,
        shipping_address=billing if pickup_location is not None else shipping_address,
        lines=lines,
        shipping=Shipping(
            method=method, price=SHIPPING_PRICES[method], pickup_location=pickup_location
        ),
        payment=Payment(
            method=payment_method, status=_PAYMENT_STATUS[payment_method], amount=Decimal(0)
        ),
    )
    if method == "standard" and lines_gross(draft) >= FREE_SHIPPING_FROM:
        draft = msgspec.structs.replace(
            draft, shipping=msgspec.structs.replace(draft.shipping, price=Decimal("0.00"))
        )
    payment = msgspec.structs.replace(draft.payment, amount=order_gross(draft))
    return msgspec.structs.replace(draft, payment=payment)
