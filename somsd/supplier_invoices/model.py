"""The normalised supplier invoice in EN 16931 terms (BT-/BG- numbers in the comments), and
the master data it is checked against: suppliers, purchase orders, goods receipts, tolerances.

Money and quantities are `Decimal`, never float; dates are `date` (an invoice has no time).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

import msgspec

__all__ = [
    "GoodsReceiptLine",
    "InvoiceLine",
    "PurchaseOrderLine",
    "SupplierInvoice",
    "SupplierRecord",
    "TaxBreakdown",
    "Tolerances",
]

SourceKind = Literal["cii", "ubl", "zugferd", "pdf-template"]


class InvoiceLine(msgspec.Struct, frozen=True, kw_only=True):
    """BG-25, one invoice line."""

    line_id: str  # BT-126
    article: str  # BT-155, the seller's item identifier
    name: str = ""  # BT-153
    quantity: Decimal  # BT-129
    unit: str = "H87"  # BT-130, UN/ECE rec 20 (H87 piece)
    net_price: Decimal  # BT-146
    base_quantity: Decimal = Decimal(1)  # BT-149
    net_amount: Decimal  # BT-131
    tax_rate: Decimal  # BT-152, percent
    tax_category: str = "S"  # BT-151
    order_reference: str = ""  # BT-132, the PO this line belongs to when not the header's


class TaxBreakdown(msgspec.Struct, frozen=True, kw_only=True):
    """BG-23, the VAT of one rate."""

    rate: Decimal  # BT-119
    basis: Decimal  # BT-116
    tax: Decimal  # BT-117
    category: str = "S"  # BT-118


class SupplierInvoice(msgspec.Struct, frozen=True, kw_only=True):
    number: str = ""  # BT-1
    issue_date: date | None = None  # BT-2
    type_code: str = "380"  # BT-3
    currency: str = ""  # BT-5
    due_date: date | None = None  # BT-9
    buyer_reference: str = ""  # BT-10
    purchase_order: str = ""  # BT-13
    seller_name: str = ""  # BT-27
    seller_vat_id: str = ""  # BT-31
    seller_tax_number: str = ""  # BT-32
    buyer_name: str = ""  # BT-44
    iban: str = ""  # BT-84
    bic: str = ""  # BT-86
    lines: tuple[InvoiceLine, ...] = ()
    taxes: tuple[TaxBreakdown, ...] = ()
    line_total: Decimal | None = None  # BT-106
    allowances: Decimal = Decimal(0)  # BT-107
    charges: Decimal = Decimal(0)  # BT-108
    tax_basis_total: Decimal | None = None  # BT-109
    tax_total: Decimal | None = None  # BT-110
    grand_total: Decimal | None = None  # BT-112
    prepaid: Decimal = Decimal(0)  # BT-113
    due_amount: Decimal | None = None  # BT-115

    def order_of(self, line: InvoiceLine) -> str:
        """The purchase order of `line`: its own reference (BT-132), else the header's BT-13."""
        return line.order_reference or self.purchase_order


class SupplierRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What we know of one supplier (the creditor master data)."""

    number: str  # our supplier (creditor) number, also the DATEV creditor account
    name: str = ""
    vat_id: str = ""
    ibans: tuple[str, ...] = ()  # the IBANs we pay to; any other one is held
    gl_account: str = ""  # default expense account
    cost_centre: str = ""
    email: str = ""  # for XRechnung output (BT-43)
    phone: str = ""  # BT-42
    contact_name: str = ""  # BT-41
    street: str = ""
    zip: str = ""
    city: str = ""
    country: str = "DE"


class PurchaseOrderLine(msgspec.Struct, frozen=True, kw_only=True):
    order: str  # the PO number (what the supplier quotes as BT-13)
    article: str  # the supplier's article number (BT-155 on its invoice)
    quantity: Decimal  # ordered
    net_price: Decimal  # agreed price per unit
    supplier: str = ""  # supplier number


class GoodsReceiptLine(msgspec.Struct, frozen=True, kw_only=True):
    order: str
    article: str
    quantity: Decimal  # received so far (all receipts of that PO line summed)


class Tolerances(msgspec.Struct, frozen=True, kw_only=True):
    """How far an invoice line may be from its PO and goods receipt and still pass.

    Price: either tolerance suffices (the larger allowance wins), so a cheap item is not held
    for a cent and an expensive one not waved through for a percentage."""

    quantity: Decimal = Decimal(0)  # units over the received (and ordered) quantity
    price_percent: Decimal = Decimal(0)
    price_cents: Decimal = Decimal(0)  # absolute per-unit difference, in minor units
