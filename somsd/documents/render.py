"""Invoice, credit-note ("Rechnungskorrektur"), delivery-note and pick-list PDFs (reportlab).

Pure: a request and the channel's seller template in, PDF/A-3b bytes out. The same input always
gives the same bytes (reportlab's invariant mode, dates from the document, `pdfa.make_pdfa`).
Fonts: Bitstream Vera, the TrueType family reportlab ships (reportlab/fonts, Bitstream Vera
licence: free to use, embed and redistribute), embedded as subsets; no base-14 font is ever
referenced, which PDF/A forbids.

Wording follows §14 UStG: seller and buyer with full address, the seller's tax number or VAT
ID, the invoice date and a unique number, quantity and kind of goods, the delivery date, net
per tax rate, the rate and the tax amount; a correction is titled "Rechnungskorrektur" and
names the invoice it corrects (§14 Abs. 4 / §31 Abs. 5 UStDV).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Final

import reportlab
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from somsd.documents.cii import build_cii, is_xrechnung
from somsd.documents.model import InvoiceRequest, PackingRequest, Seller, line_name
from somsd.documents.pdfa import make_pdfa
from somsd.domain.order import Address

__all__ = [
    "FONT",
    "FONT_BOLD",
    "RenderedInvoice",
    "format_amount",
    "render_invoice",
    "render_invoice_pdf",
    "render_packing",
]

FONT: Final = "SomsdVera"
FONT_BOLD: Final = "SomsdVeraBold"
_FONTS_DIR: Final = Path(reportlab.__file__).parent / "fonts"
_LEFT: Final = 20 * mm
_RIGHT: Final = A4[0] - 20 * mm
_BOTTOM: Final = 30 * mm
_ROW: Final = 5.2 * mm


@cache
def _register_fonts() -> None:
    pdfmetrics.registerFont(TTFont(FONT, str(_FONTS_DIR / "Vera.ttf")))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(_FONTS_DIR / "VeraBd.ttf")))


def format_amount(amount: Decimal, currency: str = "EUR") -> str:
    """German notation: 1.234,56 EUR."""
    text = f"{amount:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")
    return f"{text} {currency}"


def _format_quantity(value: Decimal | int) -> str:
    return f"{value}".replace(".", ",")


def _format_date(day: date) -> str:
    return f"{day:%d.%m.%Y}"


def _rate(rate: Decimal) -> str:
    return f"{rate.normalize():f}".replace(".", ",") + " %"


class _Page:
    """A canvas that knows where the next row goes and starts a new page when full."""

    def __init__(self, title: str, seller: Seller) -> None:
        _register_fonts()
        self.buffer = io.BytesIO()
        # invariant: no clock, no random ID in what reportlab writes (make_pdfa fixes both).
        self.canvas = Canvas(
            self.buffer, pagesize=A4, invariant=True, initialFontName=FONT, initialFontSize=9
        )
        self.canvas.setTitle(title)
        self.canvas.setAuthor(seller.name)
        self.seller = seller
        self.y = A4[1] - 20 * mm
        self.page = 1

    def text(self, x: float, value: str, *, bold: bool = False, size: float = 9) -> None:
        self.canvas.setFont(FONT_BOLD if bold else FONT, size)
        self.canvas.drawString(x, self.y, value)

    def right(self, x: float, value: str, *, bold: bool = False, size: float = 9) -> None:
        self.canvas.setFont(FONT_BOLD if bold else FONT, size)
        self.canvas.drawRightString(x, self.y, value)

    def down(self, rows: float = 1) -> None:
        self.y -= rows * _ROW
        if self.y < _BOTTOM:
            self.footer()
            self.canvas.showPage()
            self.page += 1
            self.y = A4[1] - 25 * mm

    def footer(self) -> None:
        seller = self.seller
        parts = [f"{seller.name} · {seller.street} · {seller.zip} {seller.city}"]
        ids = []
        if seller.vat_id:
            ids.append(f"USt-IdNr. {seller.vat_id}")
        if seller.tax_number:
            ids.append(f"Steuernummer {seller.tax_number}")
        if ids:
            parts.append(" · ".join(ids))
        if seller.iban:
            bank = f"{seller.bank_name} · " if seller.bank_name else ""
            parts.append(
                f"{bank}IBAN {seller.iban}" + (f" · BIC {seller.bic}" if seller.bic else "")
            )
        if seller.footer:
            parts.append(seller.footer)
        self.canvas.setFont(FONT, 7)
        y = 20 * mm
        for part in parts:
            self.canvas.drawString(_LEFT, y, part)
            y -= 3.5 * mm
        self.canvas.drawRightString(_RIGHT, 20 * mm, f"Seite {self.page}")

    def finish(self) -> bytes:
        self.footer()
        self.canvas.showPage()
        self.canvas.save()
        return self.buffer.getvalue()


def _letterhead(
    page: _Page, address: Address, title: str, facts: Sequence[tuple[str, str]]
) -> None:
    seller = page.seller
    if seller.logo_png:
        logo = ImageReader(io.BytesIO(seller.logo_png))
        width, height = logo.getSize()
        scale = min(50 * mm / width, 20 * mm / height)
        page.canvas.drawImage(
            logo,
            _RIGHT - width * scale,
            page.y - height * scale + 5 * mm,
            width * scale,
            height * scale,
            mask="auto",
        )
    page.text(_LEFT, seller.name, bold=True, size=12)
    page.down(1.4)
    page.text(_LEFT, f"{seller.name} · {seller.street} · {seller.zip} {seller.city}", size=7)
    page.down(1.6)
    for line in (
        address.company,
        address.name,
        address.street,
        f"{address.zip} {address.city}",
        address.country,
    ):
        if line:
            page.text(_LEFT, line)
            page.down()
    page.down()
    page.text(_LEFT, title, bold=True, size=14)
    page.down(1.6)
    for label, value in facts:
        page.text(_LEFT, label)
        page.text(_LEFT + 40 * mm, value)
        page.down()
    page.down(0.5)


# Column x positions of the line table: position, article, description, quantity, unit
# price, tax rate, amount (the last four right-aligned).
_COLUMNS: Final = (
    _LEFT,
    _LEFT + 10 * mm,
    _LEFT + 38 * mm,
    _LEFT + 100 * mm,
    _LEFT + 124 * mm,
    _LEFT + 138 * mm,
    _RIGHT,
)


def _invoice_table(page: _Page, request: InvoiceRequest) -> None:
    document = request.document
    pos, sku, name, quantity, price, rate, amount = _COLUMNS
    headings = ("Pos.", "Art.-Nr.", "Bezeichnung")
    for x, heading in zip((pos, sku, name), headings, strict=True):
        page.text(x, heading, bold=True)
    page.right(quantity, "Menge", bold=True)
    page.right(price, "Einzelpreis", bold=True)
    page.right(rate, "USt", bold=True)
    page.right(amount, "Gesamt brutto", bold=True)
    page.canvas.line(_LEFT, page.y - 1.5 * mm, _RIGHT, page.y - 1.5 * mm)
    page.down(1.2)
    for index, line in enumerate(document.lines, start=1):
        page.text(pos, str(index))
        page.text(sku, line.sku[:16])
        page.text(name, line_name(line)[:44])
        page.right(quantity, _format_quantity(line.quantity))
        page.right(price, format_amount(line.unit_price, document.currency))
        page.right(rate, _rate(line.tax_rate))
        page.right(amount, format_amount(line.gross, document.currency))
        page.down()
    page.canvas.line(_LEFT, page.y + 3.5 * mm, _RIGHT, page.y + 3.5 * mm)
    page.down(0.4)


def _totals(page: _Page, request: InvoiceRequest) -> None:
    document = request.document
    currency = document.currency
    label_x = _LEFT + 95 * mm
    page.text(label_x, "Summe netto")
    page.right(_RIGHT, format_amount(document.net, currency))
    page.down()
    for subtotal in document.taxes:
        page.text(
            label_x, f"USt {_rate(subtotal.rate)} auf {format_amount(subtotal.net, currency)}"
        )
        page.right(_RIGHT, format_amount(subtotal.tax, currency))
        page.down()
    page.text(label_x, "Gesamtbetrag", bold=True)
    page.right(_RIGHT, format_amount(document.gross, currency), bold=True)
    page.down()
    prepaid = min(request.prepaid, document.gross)
    if prepaid > 0:
        page.text(label_x, "bereits bezahlt")
        page.right(_RIGHT, format_amount(prepaid, currency))
        page.down()
        page.text(label_x, "Zahlbetrag", bold=True)
        page.right(_RIGHT, format_amount(document.gross - prepaid, currency), bold=True)
        page.down()
    page.down()


def _payment_text(page: _Page, request: InvoiceRequest) -> None:
    seller = page.seller
    document = request.document
    due = document.gross - min(request.prepaid, document.gross)
    if document.kind == "credit_note":
        lines = [
            f"Diese Rechnungskorrektur berichtigt die Rechnung Nr. {request.preceding_invoice}.",
            f"Der Betrag von {format_amount(document.gross, document.currency)} "
            "wird Ihnen erstattet.",
        ]
    elif due > 0:
        lines = [
            f"Bitte überweisen Sie den Betrag innerhalb von {seller.payment_terms_days} Tagen "
            f"ohne Abzug unter Angabe der Rechnungsnummer {request.number}."
        ]
        if seller.iban:
            lines.append(f"IBAN {seller.iban}" + (f", BIC {seller.bic}" if seller.bic else ""))
    else:
        lines = ["Der Rechnungsbetrag ist bereits bezahlt. Vielen Dank für Ihren Einkauf."]
    delivered = request.delivery_date or request.issue_date
    lines.append(f"Liefer-/Leistungsdatum: {_format_date(delivered)}")
    for line in lines:
        page.text(_LEFT, line)
        page.down()


class RenderedInvoice:
    """The rendered bytes of one invoice or credit note."""

    __slots__ = ("pdf", "xml", "xml_name")

    def __init__(self, pdf: bytes, xml: bytes, xml_name: str) -> None:
        self.pdf = pdf
        self.xml = xml
        self.xml_name = xml_name


def _invoice_title(request: InvoiceRequest) -> str:
    return "Rechnungskorrektur" if request.document.kind == "credit_note" else "Rechnung"


def render_invoice_pdf(request: InvoiceRequest, seller: Seller, xml: bytes) -> bytes:
    """The PDF/A-3b of `request` with `xml` (its CII) embedded."""
    title = _invoice_title(request)
    document = request.document
    page = _Page(f"{title} {request.number}", seller)
    facts = [(f"{title} Nr.", request.number), ("Datum", _format_date(request.issue_date))]
    if document.kind == "credit_note":
        facts.append(("zur Rechnung Nr.", request.preceding_invoice))
    facts.append(("Bestellnummer", request.order_number))
    if document.customer.id:
        facts.append(("Kundennummer", document.customer.id))
    if request.buyer_reference:
        facts.append(("Leitweg-ID", request.buyer_reference))
    _letterhead(page, document.billing_address, title, facts)
    _invoice_table(page, request)
    _totals(page, request)
    _payment_text(page, request)
    xrechnung = is_xrechnung(request)
    return make_pdfa(
        page.finish(),
        title=f"{title} {request.number}",
        day=request.issue_date,
        xml=xml,
        attachment="xrechnung.xml" if xrechnung else "factur-x.xml",
        conformance="XRECHNUNG" if xrechnung else "EN 16931",
    )


def render_invoice(request: InvoiceRequest, seller: Seller) -> RenderedInvoice:
    """CII XML and the PDF/A-3b that embeds it (PDF + CII + embed, the whole pipeline)."""
    xml = build_cii(request, seller)
    name = "xrechnung.xml" if is_xrechnung(request) else "factur-x.xml"
    return RenderedInvoice(render_invoice_pdf(request, seller, xml), xml, name)


def render_packing(request: PackingRequest, seller: Seller) -> bytes:
    """A pick list (with bins, for the warehouse) or a delivery note (in the parcel), PDF/A-3b."""
    title = "Lieferschein" if request.kind == "delivery_note" else "Pickliste"
    page = _Page(f"{title} {request.number}", seller)
    facts = [
        (f"{title} Nr.", request.number),
        ("Datum", _format_date(request.issue_date)),
        ("Bestellnummer", request.order_number),
    ]
    _letterhead(page, request.address, title, facts)
    pos, sku, name, quantity = _LEFT, _LEFT + 10 * mm, _LEFT + 45 * mm, _LEFT + 135 * mm
    page.text(pos, "Pos.", bold=True)
    page.text(sku, "Art.-Nr.", bold=True)
    page.text(name, "Bezeichnung", bold=True)
    page.right(quantity, "Menge", bold=True)
    if request.kind == "pick_list":
        page.text(quantity + 8 * mm, "Lagerplatz", bold=True)
    page.down(1.2)
    for index, line in enumerate(request.lines, start=1):
        page.text(pos, str(index))
        page.text(sku, line.sku[:20])
        page.text(name, line.name[:50])
        page.right(quantity, _format_quantity(line.quantity))
        if request.kind == "pick_list":
            page.text(quantity + 8 * mm, line.bin)
            page.canvas.rect(_RIGHT - 4 * mm, page.y - 0.5 * mm, 3.5 * mm, 3.5 * mm)
        page.down()
    return make_pdfa(page.finish(), title=f"{title} {request.number}", day=request.issue_date)
