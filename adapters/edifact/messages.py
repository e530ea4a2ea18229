"""From ORDERS to the canonical order, and the answers: ORDRSP, DESADV, INVOIC (EANCOM D.96A).

Amounts in INVOIC are the domain's `InvoiceDocument` figures (net per line, tax per rate,
totals), never recomputed; EDIFACT wants net prices, so a line's net price is its net divided
by its quantity, rounded to four decimals (PRI AAA is informative; MOA 203 is the amount).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from pydifact.segments import Segment

from adapters.edifact.eancom import OrdersIn
from somsd.domain.documents import InvoiceDocument
from somsd.domain.money import round_money
from somsd.domain.order import Address, Customer, Order, OrderLine, Payment, Shipping

__all__ = ["Partner", "desadv", "invoic", "ordrsp", "to_canonical"]


@dataclass(frozen=True)
class Partner:
    """A trading partner from the config: its GLN and who it is as a customer."""

    gln: str
    name: str
    email: str
    address: Address
    tax_rate: Decimal = Decimal(19)  # for lines without a TAX segment
    customer_id: str = ""


def _gross(net: Decimal, rate: Decimal, currency: str) -> Decimal:
    return round_money(net * (100 + rate) / 100, currency)


def to_canonical(orders: OrdersIn, partner: Partner, *, received_at: datetime) -> Order:
    """The canonical order of one ORDERS message (external id: sender GLN + order number)."""
    lines = tuple(
        OrderLine(
            sku=line.supplier_article or line.gtin,
            name=line.description or line.supplier_article or line.gtin,
            quantity=line.quantity,
            unit_price=_gross(
                line.net_price or Decimal(0), line.tax_rate or partner.tax_rate, orders.currency
            ),
            tax_rate=line.tax_rate if line.tax_rate is not None else partner.tax_rate,
        )
        for line in orders.lines
    )
    total = sum((line.unit_price * line.quantity for line in lines), Decimal(0))
    placed = received_at
    if len(orders.order_date) == 8 and orders.order_date.isdigit():
        placed = datetime.strptime(orders.order_date, "%Y%m%d").replace(tzinfo=UTC)
    return Order(
        external_id=f"{orders.sender}:{orders.order_number}",
        number=orders.order_number,
        placed_at=placed,
        currency=orders.currency,
        customer=Customer(
            id=partner.customer_id or partner.gln, email=partner.email, name=partner.name
        ),
        billing_address=partner.address,
        shipping_address=partner.address,
        lines=lines,
        shipping=Shipping(method="standard", price=Decimal("0.00")),
        payment=Payment(method="invoice", status="pending", amount=total),
    )


def _header(
    kind_code: str, number: str, at: datetime, order_number: str, parties: Sequence[tuple[str, str]]
) -> list[Segment]:
    segments = [
        Segment("BGM", kind_code, number, "9"),
        Segment("DTM", ["137", at.strftime("%Y%m%d"), "102"]),
        Segment("RFF", ["ON", order_number]),
    ]
    segments.extend(Segment("NAD", role, [gln, "", "9"]) for role, gln in parties)
    return segments


def ordrsp(orders: OrdersIn, *, number: str, at: datetime, supplier: str) -> list[Segment]:
    """Order response: accepted as ordered (BGM 231, 29 = accepted without amendment)."""
    body = [
        Segment("BGM", "231", number, "29"),
        Segment("DTM", ["137", at.strftime("%Y%m%d"), "102"]),
        Segment("RFF", ["ON", orders.order_number]),
        Segment("NAD", "BY", [orders.buyer, "", "9"]),
        Segment("NAD", "SU", [supplier, "", "9"]),
    ]
    for line in orders.lines:
        body.append(
            Segment("LIN", str(line.line), "5", [line.gtin or line.supplier_article, "SRV"])
        )
        body.append(Segment("QTY", ["21", str(line.quantity), "PCE"]))
    body.extend([Segment("UNS", "S"), Segment("CNT", ["2", str(len(orders.lines))])])
    return body


def desadv(
    *,
    number: str,
    at: datetime,
    order_number: str,
    buyer: str,
    supplier: str,
    delivery_party: str,
    lines: Sequence[tuple[str, int]],
) -> list[Segment]:
    """Despatch advice for one shipment: (article, units) per line, one package level."""
    body = _header(
        "351", number, at, order_number, (("BY", buyer), ("SU", supplier), ("DP", delivery_party))
    )
    body.insert(2, Segment("DTM", ["11", at.strftime("%Y%m%d"), "102"]))
    body.append(Segment("CPS", "1"))
    for index, (article, units) in enumerate(lines, start=1):
        body.append(Segment("LIN", str(index), "", [article, "SRV"]))
        body.append(Segment("QTY", ["12", str(units), "PCE"]))
    body.append(Segment("CNT", ["2", str(len(lines))]))
    return body


def _amount(value: Decimal) -> str:
    return f"{value:.2f}"


def invoic(
    document: InvoiceDocument,
    *,
    number: str,
    at: datetime,
    order_number: str,
    buyer: str,
    supplier: str,
    preceding_invoice: str = "",
) -> list[Segment]:
    """INVOIC for an invoice (380) or credit note (381) with the domain's amounts."""
    code = "381" if document.kind == "credit_note" else "380"
    body = _header(code, number, at, order_number, (("BY", buyer), ("SU", supplier), ("IV", buyer)))
    if preceding_invoice:
        body.insert(3, Segment("RFF", ["IV", preceding_invoice]))
    body.append(Segment("CUX", ["2", document.currency, "4"]))
    for index, line in enumerate(document.lines, start=1):
        article = line.sku or "SHIPPING"
        price = (line.net / line.quantity).quantize(Decimal("0.0001"))
        body.extend(
            [
                Segment("LIN", str(index), "", [article, "SRV"]),
                Segment("IMD", "F", "", ["", "", "", line.name[:35]]),
                Segment("QTY", ["47", str(line.quantity), "PCE"]),
                Segment("MOA", ["203", _amount(line.net)]),
                Segment("PRI", ["AAA", f"{price}"]),
                Segment("TAX", "7", "VAT", "", "", ["", "", "", f"{line.tax_rate.normalize():f}"]),
            ]
        )
    body.extend(
        [
            Segment("UNS", "S"),
            Segment("CNT", ["2", str(len(document.lines))]),
            Segment("MOA", ["77", _amount(document.gross)]),
            Segment("MOA", ["79", _amount(document.net)]),
            Segment("MOA", ["125", _amount(document.net)]),
            Segment("MOA", ["124", _amount(document.tax)]),
        ]
    )
    for subtotal in document.taxes:
        body.append(
            Segment("TAX", "7", "VAT", "", "", ["", "", "", f"{subtotal.rate.normalize():f}"])
        )
    return body
