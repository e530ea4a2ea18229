"""A parcel label as a PDF page (100 x 150 mm) with reportlab: text, Code 128 and a QR code."""

from __future__ import annotations

import io

from reportlab.graphics import renderPDF
from reportlab.graphics.barcode import code128, qr
from reportlab.graphics.shapes import Drawing
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas

__all__ = ["parcel_label_pdf", "pickup_slip_pdf"]

PAGE = (100 * mm, 150 * mm)


def parcel_label_pdf(
    *,
    carrier: str,
    tracking_number: str,
    sender: list[str],
    receiver: list[str],
    reference: str = "",
    weight_grams: int | None = None,
    tracking_url: str | None = None,
) -> bytes:
    """One label page; CPU-bound (a few ms), so async callers run it in a worker thread."""
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=PAGE, invariant=True)
    page.setTitle(f"{carrier} {tracking_number}")
    width, height = PAGE
    page.setFont("Helvetica-Bold", 20)
    page.drawString(6 * mm, height - 14 * mm, carrier)
    if weight_grams is not None:
        page.setFont("Helvetica", 11)
        page.drawRightString(width - 6 * mm, height - 13 * mm, f"{weight_grams / 1000:.2f} kg")
    page.line(5 * mm, height - 18 * mm, width - 5 * mm, height - 18 * mm)
    page.setFont("Helvetica", 8)
    y = height - 23 * mm
    for line in ["From:", *sender[:4]]:
        page.drawString(6 * mm, y, line)
        y -= 3.6 * mm
    page.line(5 * mm, y, width - 5 * mm, y)
    y -= 7 * mm
    page.setFont("Helvetica-Bold", 13)
    for line in receiver[:5]:
        page.drawString(8 * mm, y, line)
        y -= 6 * mm
    if reference:
        page.setFont("Helvetica", 9)
        page.drawString(6 * mm, y - 2 * mm, f"Ref: {reference}")
    barcode = code128.Code128(tracking_number, barHeight=22 * mm, barWidth=0.42 * mm)
    barcode.drawOn(page, 5 * mm, 22 * mm)
    page.setFont("Helvetica", 10)
    page.drawCentredString(width / 2, 16 * mm, tracking_number)
    if tracking_url:
        code = qr.QrCodeWidget(tracking_url)
        left, bottom, right, top = code.getBounds()
        size = 24 * mm
        drawing = Drawing(
            size, size, transform=[size / (right - left), 0, 0, size / (top - bottom), 0, 0]
        )
        drawing.add(code)
        renderPDF.draw(drawing, page, width - size - 5 * mm, 48 * mm)
    page.showPage()
    page.save()
    return buffer.getvalue()


def pickup_slip_pdf(
    *,
    store: str,
    order_number: str,
    customer: str,
    lines: list[tuple[str, int]],
    barcode: str,
) -> bytes:
    """A click & collect slip (100 x 150 mm) for the shelf: who collects which order, what is
    in the bag, and a Code 128 of the fulfilment to scan at the counter. The pickup code is
    never on it: the counter asks the customer for that."""
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=PAGE, invariant=True)
    page.setTitle(f"Pickup {order_number}")
    width, height = PAGE
    page.setFont("Helvetica-Bold", 18)
    page.drawString(6 * mm, height - 14 * mm, "Click & Collect")
    page.setFont("Helvetica", 10)
    page.drawString(6 * mm, height - 21 * mm, store)
    page.line(5 * mm, height - 24 * mm, width - 5 * mm, height - 24 * mm)
    page.setFont("Helvetica-Bold", 14)
    page.drawString(6 * mm, height - 33 * mm, f"Order {order_number}")
    page.drawString(6 * mm, height - 41 * mm, customer)
    page.setFont("Helvetica", 10)
    y = height - 52 * mm
    for sku, quantity in lines[:14]:
        page.drawString(8 * mm, y, f"{quantity} x {sku}")
        y -= 5 * mm
    if len(lines) > 14:
        page.drawString(8 * mm, y, f"... and {len(lines) - 14} more lines")
    code = code128.Code128(barcode, barHeight=18 * mm, barWidth=0.38 * mm)
    code.drawOn(page, 5 * mm, 14 * mm)
    page.drawCentredString(width / 2, 9 * mm, barcode)
    page.showPage()
    page.save()
    return buffer.getvalue()
