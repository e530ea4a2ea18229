"""Accounting data for an approved supplier invoice, from config rules: the supplier (creditor)
number, G/L account, cost centre, tax code and company code of every posting line.

One posting per (G/L account, cost centre, tax rate): the gross amount goes to the expense
account against the creditor, and the tax code (DATEV "BU-Schlüssel") tells the accounting
system to split off the input VAT. Rules match by supplier and article prefix; the first rule
that matches wins, the supplier's defaults come last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import msgspec

from somsd.domain.money import round_money
from somsd.supplier_invoices.model import InvoiceLine, SupplierInvoice, SupplierRecord

__all__ = ["AccountingRule", "AccountingRules", "Posting", "UnmappedTaxRate", "postings_for"]


class AccountingRule(msgspec.Struct, frozen=True, kw_only=True):
    supplier: str = ""  # supplier number; empty: any supplier
    article_prefix: str = ""  # BT-155 starts with this; empty: any article
    gl_account: str
    cost_centre: str = ""


class AccountingRules(msgspec.Struct, frozen=True, kw_only=True):
    company_code: str = ""  # the client (DATEV Mandant / SAP Buchungskreis)
    default_gl_account: str = "3400"  # SKR03 Wareneingang 19 % Vorsteuer
    # VAT rate (percent, as text) -> tax code; SKR03 automatic input-VAT keys by default
    tax_codes: Mapping[str, str] = msgspec.field(
        default_factory=lambda: {"19": "9", "7": "8", "0": ""}
    )
    rules: tuple[AccountingRule, ...] = ()


class Posting(msgspec.Struct, frozen=True, kw_only=True):
    company_code: str
    supplier_number: str  # creditor account
    gl_account: str
    cost_centre: str
    tax_rate: Decimal
    tax_code: str
    net: Decimal
    tax: Decimal
    gross: Decimal
    invoice_number: str
    text: str


class UnmappedTaxRate(ValueError):
    """A VAT rate without a tax code in the rules: the posting cannot be made."""


def _rate_key(rate: Decimal) -> str:
    return f"{rate.normalize():f}"


def _account(
    line: InvoiceLine, supplier: SupplierRecord, rules: AccountingRules
) -> tuple[str, str]:
    for rule in rules.rules:
        if rule.supplier and rule.supplier != supplier.number:
            continue
        if rule.article_prefix and not line.article.startswith(rule.article_prefix):
            continue
        return rule.gl_account, rule.cost_centre or supplier.cost_centre
    return supplier.gl_account or rules.default_gl_account, supplier.cost_centre


def postings_for(
    invoice: SupplierInvoice, supplier: SupplierRecord, rules: AccountingRules
) -> list[Posting]:
    """The posting lines of `invoice`; the VAT of each rate is spread over its lines' accounts
    in proportion to their net, the last one taking the rounding rest, so every rate's tax
    adds up exactly to the invoice's BT-117."""
    currency = invoice.currency or "EUR"
    groups: dict[tuple[str, str, Decimal], Decimal] = {}
    for line in invoice.lines:
        account, centre = _account(line, supplier, rules)
        key = (account, centre, line.tax_rate)
        groups[key] = groups.get(key, Decimal(0)) + line.net_amount
    tax_of_rate: dict[Decimal, Decimal] = {tax.rate: tax.tax for tax in invoice.taxes}
    postings: list[Posting] = []
    for rate in sorted({rate for _, _, rate in groups}):
        code = rules.tax_codes.get(_rate_key(rate))
        if code is None:
            raise UnmappedTaxRate(f"no tax code for VAT rate {_rate_key(rate)} %")
        keys = sorted(key for key in groups if key[2] == rate)
        rate_net = sum((groups[key] for key in keys), Decimal(0))
        rate_tax = tax_of_rate.get(rate, round_money(rate_net * rate / 100, currency))
        remaining = rate_tax
        for index, key in enumerate(keys):
            net = groups[key]
            if index == len(keys) - 1:
                tax = remaining
            else:
                tax = round_money(rate_tax * net / rate_net, currency) if rate_net else Decimal(0)
            remaining -= tax
            postings.append(
                Posting(
                    company_code=rules.company_code,
                    supplier_number=supplier.number,
                    gl_account=key[0],
                    cost_centre=key[1],
                    tax_rate=rate,
                    tax_code=code,
                    net=net,
                    tax=tax,
                    gross=net + tax,
                    invoice_number=invoice.number,
                    text=f"{supplier.name or invoice.seller_name} {invoice.number}"[:60],
                )
            )
    return postings


def posting_total(postings: Sequence[Posting]) -> Decimal:
    return sum((posting.gross for posting in postings), Decimal(0))
