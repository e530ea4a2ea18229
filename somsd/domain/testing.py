"""Ready-made canonical orders for tests, simulators and the demo.

Shipped with the product (like `structlog.testing`) because the order desk's tests, the webhook
simulator and `somsd demo` all need valid orders, and every copy of "a valid order" written by
hand drifts from the contract. `CONTRACT_EXAMPLE` is the webhook body from
`shared/design/contract.md` byte for byte in content; `sample_order` builds variations of it
whose `payment.amount` always matches lines plus shipping. `InMemoryOrderLog` does for decision
functions what the event store does — number documents on commit, keep streams, fold state — so
a test can drive a whole order life without SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

import msgspec

from somsd.domain.events import OrderEvent
from somsd.domain.numbering import NumberSeries, number_documents
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
    order_gross,
)
from somsd.domain.state import OrderState, apply

__all__ = ["CONTRACT_EXAMPLE", "InMemoryOrderLog", "sample_line", "sample_order"]

CONTRACT_EXAMPLE = b"""{
  "external_id": "1042", "number": "1042", "placed_at": "2026-11-21T10:00:00Z", "currency": "EUR",
  "customer": {"id": "77", "email": "max@example.com", "name": "Max Muster"},
  "billing_address":  {"name": "Max Muster", "company": null, "street": "Hauptstr. 1",
                       "zip": "10115", "city": "Berlin", "country": "DE"},
  "shipping_address": {"name": "Max Muster", "company": null, "street": "Hauptstr. 1",
                       "zip": "10115", "city": "Berlin", "country": "DE"},
  "lines": [{"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": "12.50",
             "tax_rate": "19"}],
  "shipping": {"method": "standard", "price": "4.90", "pickup_location": null},
  "payment": {"method": "creditcard", "status": "paid", "amount": "29.90"}
}"""

_ADDRESS = Address(
    name="Max Muster", street="Hauptstr. 1", zip="10115", city="Berlin", country="DE"
)


def sample_line(
    sku: str = "MUG-1",
    quantity: int = 2,
    unit_price: str = "12.50",
    tax_rate: str = "19",
    name: str = "Mug",
) -> OrderLine:
    return OrderLine(
        sku=sku,
        name=name,
        quantity=quantity,
        unit_price=Decimal(unit_price),
        tax_rate=Decimal(tax_rate),
    )


def sample_order(
    *,
    external_id: str = "1042",
    lines: Sequence[OrderLine] | None = None,
    shipping_method: ShippingMethod = "standard",
    shipping_price: str = "4.90",
    pickup_location: str | None = None,
    payment_method: PaymentMethod = "creditcard",
    payment_status: PaymentStatus = "paid",
    currency: str = "EUR",
    customer: Customer | None = None,
    billing_address: Address = _ADDRESS,
    shipping_address: Address = _ADDRESS,
    placed_at: datetime = datetime(2026, 11, 21, 10, tzinfo=UTC),
) -> Order:
    """The contract's example order, varied by the arguments; the payment amount always fits."""
    draft = Order(
        external_id=external_id,
        number=external_id,
        placed_at=placed_at,
        currency=currency,
        customer=customer or Customer(id="77", email="max@example.com", name="Max Muster"),
        billing_address=billing_address,
        shipping_address=shipping_address,
        lines=tuple(lines) if lines is not None else (sample_line(),),
        shipping=Shipping(
            method=shipping_method,
            price=Decimal(shipping_price),
            pickup_location=pickup_location,
        ),
        payment=Payment(method=payment_method, status=payment_status, amount=Decimal(0)),
    )
    payment = msgspec.structs.replace(draft.payment, amount=order_gross(draft))
    return msgspec.structs.replace(draft, payment=payment)


class InMemoryOrderLog:
    """Order streams in memory, committed the way the event store commits them.

    `commit` numbers unnumbered invoices and credit notes from one shared `NumberSeries` (as
    the store does inside its transaction), appends to the stream and folds the state.
    """

    def __init__(self) -> None:
        self.numbers = NumberSeries()
        self.streams: dict[str, list[OrderEvent]] = {}
        self.states: dict[str, OrderState] = {}

    def commit(self, order_id: str, events: Iterable[OrderEvent]) -> list[OrderEvent]:
        """Append `events` to `order_id`'s stream; returns them as stored (numbered)."""
        numbered, numbers = number_documents(list(events), self.numbers)
        state = self.states.get(order_id)
        for event in numbered:
            state = apply(state, event)
        if state is None:
            return []
        self.numbers = numbers
        self.states[order_id] = state
        self.streams.setdefault(order_id, []).extend(numbered)
        return numbered

    def state(self, order_id: str) -> OrderState:
        return self.states[order_id]

    def events(self, order_id: str) -> list[OrderEvent]:
        return list(self.streams.get(order_id, []))
