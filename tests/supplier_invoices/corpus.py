# ruff: noqa: E501  # the UBL sample is XML text, one element per line
"""The test corpus, made here: fictional suppliers, their invoices as the truth, rendered as
text PDFs in each supplier's own layout (reportlab), as ZUGFeRD PDFs and as XRechnung XML.

Every supplier has a template in config/supplier-templates; extraction must give back exactly
the fields the template declares.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape

import facturx
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from somsd.domain.money import round_money
from somsd.supplier_invoices.einvoice_out import Buyer, build_supplier_cii
from somsd.supplier_invoices.model import (
    GoodsReceiptLine,
    InvoiceLine,
    PurchaseOrderLine,
    SupplierInvoice,
    SupplierRecord,
    TaxBreakdown,
)

TEMPLATE_DIR: Final = Path(__file__).parents[2] / "config" / "supplier-templates"


def de_vat_id(eight: str) -> str:
    """A German VAT ID with its correct ISO 7064 check digit."""
    product = 10
    for char in eight:
        total = (int(char) + product) % 10 or 10
        product = (2 * total) % 11
    return f"DE{eight}{(11 - product) % 10}"


def de_iban(bank_code: str, account: str) -> str:
    bban = f"{bank_code}{int(account):010d}"
    digits = "".join(str(int(c, 36)) for c in bban + "DE00")
    return f"DE{98 - int(digits) % 97:02d}{bban}"


BUYER: Final = Buyer(
    name="Einkauf",
    company="Muster Handel GmbH",
    street="Industriestr. 5",
    zip="20095",
    city="Hamburg",
    country="DE",
    email="einkauf@muster.example",
)


@dataclass(frozen=True)
class Supplier:
    record: SupplierRecord
    layout: str  # "a", "b", "c" (text PDFs), "zugferd", "xml"


def _record(number: str, name: str, vat: str, iban: str, city: str) -> SupplierRecord:
    return SupplierRecord(
        number=number,
        name=name,
        vat_id=vat,
        ibans=(iban,),
        gl_account="3400",
        cost_centre="100",
        email=f"rechnung@{number}.example",
        phone="+49 30 123456",
        contact_name="Buchhaltung",
        street="Lieferweg 1",
        zip="10115",
        city=city,
    )


BUERO: Final = Supplier(
    _record(
        "70001",
        "Muster Bürobedarf GmbH",
        de_vat_id("13669597"),
        de_iban("37040044", "532013000"),
        "Köln",
    ),
    "a",
)
NORDLICHT: Final = Supplier(
    _record(
        "70002",
        "Nordlicht Elektro KG",
        de_vat_id("28111223"),
        de_iban("20050550", "1234567"),
        "Hamburg",
    ),
    "b",
)
KAFFEE: Final = Supplier(
    _record(
        "70003", "Kaffee & Co. OHG", de_vat_id("31415926"), de_iban("10010010", "9876543"), "Bremen"
    ),
    "c",
)
FACTURX: Final = Supplier(
    _record(
        "70004",
        "Zugferd Papier AG",
        de_vat_id("27182818"),
        de_iban("50010517", "5555555"),
        "Frankfurt",
    ),
    "zugferd",
)
XMLSUPPLIER: Final = Supplier(
    _record(
        "70005",
        "XRechnung Logistik GmbH",
        de_vat_id("16180339"),
        de_iban("60050101", "4444444"),
        "Stuttgart",
    ),
    "xml",
)
SUPPLIERS: Final = (BUERO, NORDLICHT, KAFFEE, FACTURX, XMLSUPPLIER)


def make_invoice(
    supplier: Supplier,
    number: str,
    order: str,
    items: list[tuple[str, str, int, str, str]],  # article, name, quantity, price, rate
    *,
    issue_date: date = date(2026, 11, 30),
    iban: str | None = None,
    grand_total_delta: Decimal = Decimal(0),
) -> SupplierInvoice:
    lines = []
    for index, (article, name, quantity, price, rate) in enumerate(items, start=1):
        net = round_money(Decimal(quantity) * Decimal(price), "EUR")
        lines.append(
            InvoiceLine(
                line_id=str(index),
                article=article,
                name=name,
                quantity=Decimal(quantity),
                net_price=Decimal(price),
                net_amount=net,
                tax_rate=Decimal(rate),
            )
        )
    taxes = []
    for percent in sorted({line.tax_rate for line in lines}):
        basis = sum((line.net_amount for line in lines if line.tax_rate == percent), Decimal(0))
        tax = round_money(basis * percent / 100, "EUR")
        taxes.append(TaxBreakdown(rate=percent, basis=basis, tax=tax))
    net = sum((line.net_amount for line in lines), Decimal(0))
    tax = sum((t.tax for t in taxes), Decimal(0))
    gross = net + tax + grand_total_delta
    return SupplierInvoice(
        number=number,
        issue_date=issue_date,
        currency="EUR",
        purchase_order=order,
        seller_name=supplier.record.name,
        seller_vat_id=supplier.record.vat_id,
        iban=iban if iban is not None else supplier.record.ibans[0],
        lines=tuple(lines),
        taxes=tuple(taxes),
        line_total=net,
        tax_basis_total=net,
        tax_total=tax,
        grand_total=gross,
        due_amount=gross,
    )


def de_amount(value: Decimal, thousands: bool = False) -> str:
    text = f"{value:,.2f}" if thousands else f"{value:.2f}"
    return text.replace(",", "_").replace(".", ",").replace("_", ".")


def _canvas() -> tuple[io.BytesIO, Canvas]:
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=True)
    return buffer, canvas


def _layout_a(invoice: SupplierInvoice) -> bytes:
    """Muster Bürobedarf: header block left, a classic table, totals below."""
    buffer, c = _canvas()
    c.setFont("Helvetica-Bold", 14)
    c.drawString(20 * mm, 275 * mm, invoice.seller_name)
    c.setFont("Helvetica", 9)
    c.drawString(20 * mm, 269 * mm, "Lieferweg 1, 50667 Köln")
    c.drawString(20 * mm, 255 * mm, f"Rechnungsnummer: {invoice.number}")
    assert invoice.issue_date is not None
    c.drawString(20 * mm, 250 * mm, f"Rechnungsdatum: {invoice.issue_date:%d.%m.%Y}")
    c.drawString(20 * mm, 245 * mm, f"Ihre Bestellung: {invoice.purchase_order}")
    y = 230 * mm
    for x, text in (
        (20, "Pos"),
        (32, "Artikel"),
        (60, "Bezeichnung"),
        (120, "Menge"),
        (140, "Preis"),
        (170, "Betrag"),
    ):
        c.drawString(x * mm, y, text)
    for line in invoice.lines:
        y -= 6 * mm
        c.drawString(20 * mm, y, line.line_id)
        c.drawString(32 * mm, y, line.article)
        c.drawString(60 * mm, y, line.name)
        c.drawRightString(132 * mm, y, f"{line.quantity}")
        c.drawRightString(160 * mm, y, de_amount(line.net_price))
        c.drawRightString(190 * mm, y, de_amount(line.net_amount))
    y -= 10 * mm
    assert invoice.tax_basis_total is not None
    assert invoice.tax_total is not None
    assert invoice.grand_total is not None
    c.drawString(120 * mm, y, "Nettobetrag")
    c.drawRightString(190 * mm, y, de_amount(invoice.tax_basis_total))
    y -= 5 * mm
    c.drawString(120 * mm, y, "MwSt 19 %")
    c.drawRightString(190 * mm, y, de_amount(invoice.tax_total))
    y -= 5 * mm
    c.drawString(120 * mm, y, "Gesamtbetrag")
    c.drawRightString(190 * mm, y, de_amount(invoice.grand_total))
    c.drawString(20 * mm, 30 * mm, f"USt-IdNr.: {invoice.seller_vat_id}   IBAN: {invoice.iban}")
    c.showPage()
    c.save()
    return buffer.getvalue()


def _layout_b(invoice: SupplierInvoice) -> bytes:
    """Nordlicht Elektro: header right, rate column, a VAT table per rate."""
    buffer, c = _canvas()
    c.setFont("Helvetica", 10)
    c.drawRightString(190 * mm, 280 * mm, invoice.seller_name)
    c.drawRightString(190 * mm, 275 * mm, f"UStID {invoice.seller_vat_id}")
    c.setFont("Helvetica-Bold", 16)
    c.drawString(20 * mm, 255 * mm, "RECHNUNG")
    c.setFont("Helvetica", 9)
    assert invoice.issue_date is not None
    c.drawString(120 * mm, 255 * mm, f"Nr. {invoice.number}")
    c.drawString(120 * mm, 250 * mm, f"vom {invoice.issue_date:%d.%m.%Y}")
    c.drawString(120 * mm, 245 * mm, f"Auftrag {invoice.purchase_order}")
    y = 225 * mm
    for x, text in (
        (20, "Art.-Nr."),
        (50, "Menge"),
        (70, "EP EUR"),
        (95, "USt"),
        (110, "Summe EUR"),
        (140, "Text"),
    ):
        c.drawString(x * mm, y, text)
    y -= 2 * mm
    for line in invoice.lines:
        y -= 6 * mm
        c.drawString(20 * mm, y, line.article)
        c.drawRightString(62 * mm, y, f"{line.quantity}")
        c.drawRightString(88 * mm, y, de_amount(line.net_price))
        c.drawRightString(104 * mm, y, f"{line.tax_rate.normalize()}%")
        c.drawRightString(130 * mm, y, de_amount(line.net_amount))
        c.drawString(140 * mm, y, line.name)
    y -= 10 * mm
    c.drawString(20 * mm, y, "Umsatzsteuer")
    for tax in invoice.taxes:
        y -= 5 * mm
        c.drawString(
            20 * mm,
            y,
            f"{tax.rate.normalize()} % auf {de_amount(tax.basis)} EUR: {de_amount(tax.tax)} EUR",
        )
    y -= 8 * mm
    assert invoice.tax_basis_total is not None
    assert invoice.tax_total is not None
    assert invoice.grand_total is not None
    c.drawString(20 * mm, y, f"Summe netto {de_amount(invoice.tax_basis_total)} EUR")
    y -= 5 * mm
    c.drawString(20 * mm, y, f"Summe USt {de_amount(invoice.tax_total)} EUR")
    y -= 5 * mm
    c.drawString(20 * mm, y, f"Zu zahlen {de_amount(invoice.grand_total)} EUR")
    c.drawString(20 * mm, 25 * mm, f"Bankverbindung: Hamburger Sparkasse, IBAN {invoice.iban}")
    c.showPage()
    c.save()
    return buffer.getvalue()


def _layout_c(invoice: SupplierInvoice) -> bytes:
    """Kaffee & Co.: English key-value header, one line per item with @ and =, thousands."""
    buffer, c = _canvas()
    c.setFont("Courier", 10)
    rows = [
        invoice.seller_name,
        f"VAT ID: {invoice.seller_vat_id}",
        "",
        f"INVOICE {invoice.number}",
        f"Date: {invoice.issue_date:%Y-%m-%d}",
        f"Your order: {invoice.purchase_order}",
        "",
        "Items:",
    ]
    rows += [
        f"{line.article}  {line.name}  {line.quantity} x "
        f"{de_amount(line.net_price, True)} = {de_amount(line.net_amount, True)}"
        for line in invoice.lines
    ]
    assert invoice.tax_basis_total is not None
    assert invoice.tax_total is not None
    assert invoice.grand_total is not None
    rows += [
        "End of items",
        f"Net total: {de_amount(invoice.tax_basis_total, True)}",
        f"VAT 7%: {de_amount(invoice.tax_total, True)}",
        f"Total due: {de_amount(invoice.grand_total, True)} EUR",
        "",
        f"Pay to {invoice.iban}",
    ]
    y = 280 * mm
    for row in rows:
        c.drawString(15 * mm, y, row)
        y -= 5 * mm
    c.showPage()
    c.save()
    return buffer.getvalue()


def zugferd_pdf(invoice: SupplierInvoice, supplier: Supplier) -> bytes:
    visual = _layout_a(invoice)
    xml = build_supplier_cii(invoice, supplier.record, BUYER)
    return bytes(facturx.generate_from_binary(visual, xml, check_xsd=False))


def xrechnung_xml(invoice: SupplierInvoice, supplier: Supplier) -> bytes:
    buyer = Buyer(
        **{
            **{f: getattr(BUYER, f) for f in BUYER.__struct_fields__},
            "reference": "04011000-12345-34",
        }
    )
    return build_supplier_cii(invoice, supplier.record, buyer)


LAYOUTS: Final[dict[str, Callable[[SupplierInvoice], bytes]]] = {
    "a": _layout_a,
    "b": _layout_b,
    "c": _layout_c,
}


def render(invoice: SupplierInvoice, supplier: Supplier) -> bytes:
    if supplier.layout == "zugferd":
        return zugferd_pdf(invoice, supplier)
    if supplier.layout == "xml":
        return xrechnung_xml(invoice, supplier)
    return LAYOUTS[supplier.layout](invoice)


def orders_for(
    invoice: SupplierInvoice, supplier: Supplier, *, received: dict[str, int] | None = None
) -> tuple[list[PurchaseOrderLine], list[GoodsReceiptLine]]:
    """The PO lines and goods receipts that make `invoice` match exactly (or `received`)."""
    orders = [
        PurchaseOrderLine(
            order=invoice.purchase_order,
            article=line.article,
            quantity=line.quantity,
            net_price=line.net_price,
            supplier=supplier.record.number,
        )
        for line in invoice.lines
    ]
    receipts = [
        GoodsReceiptLine(
            order=invoice.purchase_order,
            article=line.article,
            quantity=Decimal((received or {}).get(line.article, int(line.quantity))),
        )
        for line in invoice.lines
    ]
    return orders, receipts


BUERO_ITEMS: Final = [
    ("BB-100", "Kopierpapier A4", 10, "4.20", "19"),
    ("BB-220", "Ordner breit", 25, "2.15", "19"),
]
NORDLICHT_ITEMS: Final = [
    ("NL-7", "LED Panel", 4, "59.90", "19"),
    ("NL-9", "Fachbuch Elektrik", 2, "24.50", "7"),
]
KAFFEE_ITEMS: Final = [
    ("K-ESP-1", "Espresso 1kg", 120, "14.90", "7"),
    ("K-CRM-2", "Crema 1kg", 30, "12.40", "7"),
]
ITEMS: Final = {
    "a": BUERO_ITEMS,
    "b": NORDLICHT_ITEMS,
    "c": KAFFEE_ITEMS,
    "zugferd": BUERO_ITEMS,
    "xml": NORDLICHT_ITEMS,
}


def ubl_xml(invoice: SupplierInvoice) -> bytes:
    """A UBL 2.1 invoice (written by hand here: the builder writes CII only)."""
    lines = "".join(
        f"""<cac:InvoiceLine><cbc:ID>{line.line_id}</cbc:ID>
<cbc:InvoicedQuantity unitCode="H87">{line.quantity}</cbc:InvoicedQuantity>
<cbc:LineExtensionAmount currencyID="EUR">{line.net_amount}</cbc:LineExtensionAmount>
<cac:Item><cbc:Name>{escape(line.name)}</cbc:Name><cac:SellersItemIdentification><cbc:ID>{line.article}</cbc:ID></cac:SellersItemIdentification>
<cac:ClassifiedTaxCategory><cbc:ID>S</cbc:ID><cbc:Percent>{line.tax_rate}</cbc:Percent><cac:TaxScheme><cbc:ID>VAT</cbc:ID></cac:TaxScheme></cac:ClassifiedTaxCategory></cac:Item>
<cac:Price><cbc:PriceAmount currencyID="EUR">{line.net_price}</cbc:PriceAmount></cac:Price></cac:InvoiceLine>"""
        for line in invoice.lines
    )
    subtotals = "".join(
        f"""<cac:TaxSubtotal><cbc:TaxableAmount currencyID="EUR">{t.basis}</cbc:TaxableAmount>
<cbc:TaxAmount currencyID="EUR">{t.tax}</cbc:TaxAmount><cac:TaxCategory><cbc:ID>S</cbc:ID>
<cbc:Percent>{t.rate}</cbc:Percent><cac:TaxScheme><cbc:ID>VAT</cbc:ID></cac:TaxScheme></cac:TaxCategory></cac:TaxSubtotal>"""
        for t in invoice.taxes
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
<cbc:CustomizationID>urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0</cbc:CustomizationID>
<cbc:ID>{invoice.number}</cbc:ID><cbc:IssueDate>{invoice.issue_date}</cbc:IssueDate>
<cbc:InvoiceTypeCode>380</cbc:InvoiceTypeCode><cbc:DocumentCurrencyCode>EUR</cbc:DocumentCurrencyCode>
<cac:OrderReference><cbc:ID>{invoice.purchase_order}</cbc:ID></cac:OrderReference>
<cac:AccountingSupplierParty><cac:Party><cac:PartyTaxScheme><cbc:CompanyID>{invoice.seller_vat_id}</cbc:CompanyID>
<cac:TaxScheme><cbc:ID>VAT</cbc:ID></cac:TaxScheme></cac:PartyTaxScheme>
<cac:PartyLegalEntity><cbc:RegistrationName>{escape(invoice.seller_name)}</cbc:RegistrationName></cac:PartyLegalEntity></cac:Party></cac:AccountingSupplierParty>
<cac:PaymentMeans><cbc:PaymentMeansCode>58</cbc:PaymentMeansCode><cac:PayeeFinancialAccount><cbc:ID>{invoice.iban}</cbc:ID></cac:PayeeFinancialAccount></cac:PaymentMeans>
<cac:TaxTotal><cbc:TaxAmount currencyID="EUR">{invoice.tax_total}</cbc:TaxAmount>{subtotals}</cac:TaxTotal>
<cac:LegalMonetaryTotal><cbc:LineExtensionAmount currencyID="EUR">{invoice.line_total}</cbc:LineExtensionAmount>
<cbc:TaxExclusiveAmount currencyID="EUR">{invoice.tax_basis_total}</cbc:TaxExclusiveAmount>
<cbc:TaxInclusiveAmount currencyID="EUR">{invoice.grand_total}</cbc:TaxInclusiveAmount>
<cbc:PayableAmount currencyID="EUR">{invoice.due_amount}</cbc:PayableAmount></cac:LegalMonetaryTotal>
{lines}</Invoice>""".encode()


def unknown_supplier_pdf() -> bytes:
    """A text PDF of a supplier no template knows."""
    buffer, c = _canvas()
    c.setFont("Helvetica", 10)
    c.drawString(20 * mm, 270 * mm, "Neuer Lieferant UG, USt-IdNr. DE999999999")
    c.drawString(20 * mm, 260 * mm, "Rechnung 4711 über 100,00 EUR, IBAN DE02120300000000202051")
    c.showPage()
    c.save()
    return buffer.getvalue()


def load_templates() -> list[object]:
    from somsd.supplier_invoices.templates import load_template

    return [load_template(p.name, p.read_text()) for p in sorted(TEMPLATE_DIR.glob("*.yml"))]
