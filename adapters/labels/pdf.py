"""A parcel label as a PDF page (100 x 150 mm) with reportlab: text, Code 128 and a QR code."""

from __future__ import annotations

import io

from reportlab.graphics import renderPDF
from reportlab.graphics.barcode import code128, qr
from reportlab.graphics.shapes import Drawing
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas

__all__ = ["parcel_label_pdf"]

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
