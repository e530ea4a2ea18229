"""Random orders and documents for the property tests: several tax rates, discounted lines
(reduced unit prices, free replacement units), shipping, partial credit notes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import strategies as st

from somsd.documents.model import InvoiceRequest
from somsd.domain.documents import build_document, shipping_by_rate
from somsd.domain.order import Customer
from somsd.domain.testing import sample_line, sample_order

RATES = ("0", "7", "19")
PAYMENTS = ("banktransfer", "invoice", "creditcard", "paypal", "cod")


@st.composite
def invoice_requests(draw: st.DrawFn, *, xrechnung: bool | None = None) -> InvoiceRequest:
    count = draw(st.integers(1, 5))
    lines = []
    for index in range(count):
        cents = draw(st.integers(0, 250_000))
        discount = draw(st.sampled_from((0, 0, 10, 25)))  # percent off the list price
        price = (Decimal(cents) * (100 - discount) / 100).quantize(Decimal("0.01")) / 100
        lines.append(
            sample_line(
                sku=f"SKU-{index}",
                name=draw(st.sampled_from(("Becher", "Buch", "Teekanne Ø 12 cm", "Geschenkkarte"))),
                quantity=draw(st.integers(1, 40)),
                unit_price=f"{price:.2f}",
                tax_rate=draw(st.sampled_from(RATES)),
            )
        )
    shipping = draw(st.sampled_from(("0.00", "4.90", "12.99")))
    method = draw(st.sampled_from(PAYMENTS))
    order = sample_order(
        lines=lines,
        shipping_price=shipping,
        payment_method=method,  # type: ignore[arg-type]
        customer=Customer(id="K-77", email="max@example.com", name="Max Muster"),
    )
    quantities = {index: line.quantity for index, line in enumerate(order.lines)}
    invoice = build_document(
        order, "invoice", quantities, shipping=shipping_by_rate(order, quantities)
    )
    credit = draw(st.booleans())
    if xrechnung is None:
        xrechnung = draw(st.booleans())
    buyer_reference = "04011000-12345-67" if xrechnung else ""
    if not credit:
        paid = method in ("creditcard", "paypal")
        return InvoiceRequest(
            number="RE-2026-000042",
            issue_date=date(2026, 12, 7),
            document=invoice,
            order_number=order.number,
            delivery_date=date(2026, 12, 5),
            payment_method=method,
            prepaid=invoice.gross if paid else Decimal(0),
            buyer_reference=buyer_reference,
        )
    returned = {
        index: draw(st.integers(1, line.quantity)) for index, line in enumerate(order.lines)
    }
    refund_shipping = draw(st.booleans())
    note = build_document(
        order, "credit_note", returned, shipping=invoice.shipping if refund_shipping else ()
    )
    return InvoiceRequest(
        number="GS-2026-000007",
        issue_date=date(2026, 12, 9),
        document=note,
        order_number=order.number,
        payment_method=method,
        preceding_invoice="RE-2026-000042",
        buyer_reference=buyer_reference,
    )
