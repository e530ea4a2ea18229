"""What a rendered document needs besides the domain's `InvoiceDocument`: who sells, the
number and dates the event fixed, how the customer pays, and for XRechnung the buyer reference.

Everything here comes from an issued event plus config, so rendering the same event with the
same template again gives the same bytes (GoBD: reproducible).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

import msgspec

from somsd.domain.documents import DocumentLine, InvoiceDocument
from somsd.domain.order import Address

__all__ = [
    "InvoiceRequest",
    "PackingLine",
    "PackingRequest",
    "PaymentMeansCode",
    "Seller",
    "line_name",
    "payment_means_code",
]

# UNTDID 4461 payment means, as EN 16931 BT-81 wants them.
PaymentMeansCode = Literal["10", "20", "58", "68", "97"]

_MEANS: dict[str, PaymentMeansCode] = {
    "banktransfer": "58",  # SEPA credit transfer
    "invoice": "58",  # pay on invoice = the customer transfers to our account
    # Card payments are captured by the shop's payment service provider: somsd never sees the
    # card number that codes 48/54 require (BT-87, XRechnung BR-DE-24-a), so "online payment".
    "creditcard": "68",
    "paypal": "68",  # online payment service
    "cod": "10",  # in cash, at the door
    "check": "20",  # cheque
}


def line_name(line: DocumentLine) -> str:
    """What a document calls a line: the domain's shipping line "shipping (standard)" reads
    "Versand (standard)" on a German invoice, in the PDF and the XML alike."""
    if line.line is None and line.name.startswith("shipping"):
        return "Versand" + line.name.removeprefix("shipping")
    return line.name


def payment_means_code(method: str) -> PaymentMeansCode:
    """The BT-81 code for a canonical payment method; 97 (clearing between partners) if unknown."""
    return _MEANS.get(method, "97")


class Seller(msgspec.Struct, frozen=True, kw_only=True):
    """The seller as one channel's template shows it (from `[documents]` in the config)."""

    name: str
    street: str
    zip: str
    city: str
    country: str = "DE"
    vat_id: str = ""  # BT-31, e.g. DE123456789
    tax_number: str = ""  # BT-32, the Steuernummer
    email: str = ""  # BT-34 (electronic address, scheme EM) and BT-43
    contact_name: str = ""  # BT-41
    phone: str = ""  # BT-42
    bank_name: str = ""
    iban: str = ""  # BT-84
    bic: str = ""  # BT-86
    payment_terms_days: int = 14
    footer: str = ""  # free text under the totals (register court, managing director, ...)
    logo_png: bytes = b""  # shown top right when set


class InvoiceRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One issued invoice or credit note, ready to render."""

    number: str  # BT-1
    issue_date: date  # BT-2
    document: InvoiceDocument
    order_number: str  # BT-13: the order the customer placed
    delivery_date: date | None = None  # BT-72; None: delivered on the issue date
    shipping_address: Address | None = None  # BG-15, when it differs from the billing address
    payment_method: str = "banktransfer"
    prepaid: Decimal = Decimal(0)  # BT-113: already paid (card, PayPal captured)
    preceding_invoice: str = ""  # BT-25: the invoice a credit note corrects
    buyer_reference: str = ""  # BT-10, the Leitweg-ID; set: the XML is XRechnung 3.0


class PackingLine(msgspec.Struct, frozen=True, kw_only=True):
    sku: str
    name: str
    quantity: int
    bin: str = ""  # where the picker finds it


class PackingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A pick list (for the warehouse) or delivery note (in the parcel)."""

    kind: Literal["pick_list", "delivery_note"]
    number: str  # the shipment or fulfilment id
    order_number: str
    issue_date: date
    address: Address
    lines: tuple[PackingLine, ...]
