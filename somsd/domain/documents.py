"""Invoice and credit-note content: lines, tax per rate, totals — arithmetic only, no numbers.

An `InvoiceDocument` is what an invoice or a credit note says (EN 16931 calls both invoices, type
codes 380 and 381). Its number is not part of it: numbers are allocated gaplessly when the event
that issues the document is committed (see `numbering`), while a draft has none at all.

How tax is computed, and why this way: German shops quote gross prices, so tax is *extracted*
per tax rate from the gross sum of that rate (§14 Abs. 4 Nr. 8 UStG asks for the tax amount per
rate, and summing per-line rounded taxes can be a cent off it). The rate's tax is then allocated
back to the lines in proportion to their gross, so every line shows a net and tax that add up
exactly to the per-rate subtotal, and the subtotals to the document totals.

Shipping has no tax rate in the canonical order: as an ancillary service it follows the goods
it ships (German "Nebenleistung" rule). With mixed rates the shipping price is split across the
rates in proportion to the gross of the invoiced goods at each rate (the split the BMF accepts
for mixed deliveries). A credit note that refunds shipping copies the invoice's shipping lines,
so it reverses exactly the tax that was invoiced. If the goods are all free, shipping takes
their highest rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal

import msgspec

from somsd.domain.money import ZERO, allocate, round_money, sum_money, tax_from_gross
from somsd.domain.order import Address, Customer, Order, line_gross

__all__ = [
    "DocumentKind",
    "DocumentLine",
    "InvoiceDocument",
    "TaxSubtotal",
    "build_document",
    "shipping_by_rate",
]

DocumentKind = Literal["invoice", "credit_note"]


class DocumentLine(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    line: int | None  # index into the order's lines; None for the shipping line
    sku: str
    name: str
    quantity: int
    unit_price: Decimal  # gross
    tax_rate: Decimal  # percent
    net: Decimal
    tax: Decimal
    gross: Decimal


class TaxSubtotal(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    rate: Decimal
    net: Decimal
    tax: Decimal
    gross: Decimal


class InvoiceDocument(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The content of an invoice or credit note; amounts are positive for both kinds."""

    kind: DocumentKind
    currency: str
    customer: Customer
    billing_address: Address
    lines: tuple[DocumentLine, ...]
    taxes: tuple[TaxSubtotal, ...]  # one per rate, ascending
    net: Decimal
    tax: Decimal
    gross: Decimal

    def quantity_of(self, line: int) -> int:
        """Units of order line `line` this document covers."""
        return sum(item.quantity for item in self.lines if item.line == line)

    @property
    def shipping(self) -> list[tuple[Decimal, Decimal]]:
        """The shipping parts as (tax rate, gross), to credit exactly what was invoiced."""
        return [(item.tax_rate, item.gross) for item in self.lines if item.line is None]

    @property
    def includes_shipping(self) -> bool:
        return any(item.line is None for item in self.lines)


def shipping_by_rate(order: Order, quantities: Mapping[int, int]) -> list[tuple[Decimal, Decimal]]:
    """The shipping price split into (tax rate, gross part) pairs, ascending by rate.

    Split in proportion to the gross of `quantities` (the units being billed) per rate; if those
    are all free, the whole price goes to the highest rate among them (or among all lines).
    """
    weights: dict[Decimal, Decimal] = {}
    for index, quantity in quantities.items():
        if quantity > 0:
            line = order.lines[index]
            gross = line_gross(line, quantity, order.currency)
            weights[line.tax_rate] = weights.get(line.tax_rate, ZERO) + gross
    if sum(weights.values(), ZERO) == 0:
        candidates = list(weights) or [line.tax_rate for line in order.lines]
        return [(max(candidates), order.shipping.price)]
    rates = sorted(weights)
    parts = allocate(order.shipping.price, [weights[rate] for rate in rates], order.currency)
    return [(rate, part) for rate, part in zip(rates, parts, strict=True) if part > 0]


def build_document(
    order: Order,
    kind: DocumentKind,
    quantities: Mapping[int, int],
    *,
    shipping: Sequence[tuple[Decimal, Decimal]] = (),
) -> InvoiceDocument:
    """The document for `quantities` (order line index -> units) of `order`, plus `shipping`.

    `shipping` holds (tax rate, gross) parts: `shipping_by_rate` for an invoice, the invoice's
    own shipping lines for a credit note that refunds shipping. Lines with zero units are left
    out; free lines (a zero-price replacement) are kept, as a document must list what shipped.
    """
    currency = order.currency
    # (order line index or None, sku, name, quantity, unit gross price, rate, gross)
    items: list[tuple[int | None, str, str, int, Decimal, Decimal, Decimal]] = []
    for index in sorted(quantities):
        quantity = quantities[index]
        if quantity <= 0:
            continue
        line = order.lines[index]
        items.append(
            (
                index,
                line.sku,
                line.name,
                quantity,
                line.unit_price,
                line.tax_rate,
                line_gross(line, quantity, currency),
            )
        )
    name = f"shipping ({order.shipping.method})"
    items.extend((None, "", name, 1, part, rate, part) for rate, part in shipping if part > 0)

    lines: list[DocumentLine] = []
    taxes: list[TaxSubtotal] = []
    for rate in sorted({item[5] for item in items}):
        group = [item for item in items if item[5] == rate]
        gross = sum_money((item[6] for item in group), currency)
        tax = tax_from_gross(gross, rate, currency)
        weights = [item[6] for item in group]
        line_taxes = allocate(tax, weights, currency) if gross > 0 else [ZERO] * len(group)
        taxes.append(TaxSubtotal(rate=rate, net=gross - tax, tax=tax, gross=gross))
        lines.extend(
            DocumentLine(
                line=index,
                sku=sku,
                name=name,
                quantity=quantity,
                unit_price=unit_price,
                tax_rate=rate,
                net=item_gross - item_tax,
                tax=item_tax,
                gross=item_gross,
            )
            for (index, sku, name, quantity, unit_price, _, item_gross), item_tax in zip(
                group, line_taxes, strict=True
            )
        )
    # Back into order-line order, shipping last, so the document reads like the order.
    lines.sort(key=lambda item: (item.line is None, item.line or 0, item.tax_rate))
    gross_total = sum_money((subtotal.gross for subtotal in taxes), currency)
    tax_total = sum_money((subtotal.tax for subtotal in taxes), currency)
    return InvoiceDocument(
        kind=kind,
        currency=currency,
        customer=order.customer,
        billing_address=order.billing_address,
        lines=tuple(lines),
        taxes=tuple(taxes),
        net=round_money(gross_total - tax_total, currency),
        tax=tax_total,
        gross=gross_total,
    )
