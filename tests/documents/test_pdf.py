"""Invoice, credit-note, delivery-note and pick-list PDFs: text, fonts, PDF/A parts, the
embedded XML, reproducible bytes; one of each rendered to PNG under .artifacts/documents/."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import date
from decimal import Decimal
from pathlib import Path

import facturx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from PIL import Image
from pypdf import PdfReader

from somsd.documents.client import ValidatorWorker
from somsd.documents.model import InvoiceRequest, PackingLine, PackingRequest
from somsd.documents.render import format_amount, render_invoice, render_packing
from somsd.domain.documents import build_document
from somsd.domain.testing import sample_order
from tests.documents.conftest import SELLER
from tests.documents.strategies import invoice_requests
from tests.documents.test_einvoice import example_request

ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "documents"


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def logo_png() -> bytes:
    image = Image.new("RGB", (240, 80), (20, 90, 160))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def credit_request() -> InvoiceRequest:
    invoice = example_request()
    order = sample_order(payment_method="invoice", payment_status="pending")
    note = build_document(order, "credit_note", {0: 1}, shipping=())
    return msgspec.structs.replace(
        invoice, number="GS-2026-000001", document=note, preceding_invoice="RE-2026-000001"
    )


def assert_fonts_embedded(pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(pdf))
    for page in reader.pages:
        fonts = page["/Resources"]["/Font"]
        assert fonts, "no fonts"
        for reference in fonts.values():
            font = reference.get_object()
            descriptor = font["/FontDescriptor"].get_object()
            assert "/FontFile2" in descriptor, font["/BaseFont"]
            assert "Helvetica" not in str(font["/BaseFont"])


def assert_pdfa_parts(pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(pdf))
    root = reader.trailer["/Root"]
    (intent,) = root["/OutputIntents"]
    intent = intent.get_object()
    assert intent["/S"] == "/GTS_PDFA1"
    assert intent["/DestOutputProfile"].get_object().get_data()[36:40] == b"acsp"
    xmp = root["/Metadata"].get_object().get_data()
    assert b"<pdfaid:part>3</pdfaid:part>" in xmp
    assert b"<pdfaid:conformance>B</pdfaid:conformance>" in xmp
    ids = reader.trailer["/ID"]
    assert ids[0] == ids[1]


def test_invoice_pdf_shows_what_the_invoice_says(validator: ValidatorWorker) -> None:
    request = example_request()
    rendered = render_invoice(request, SELLER)
    text = text_of(rendered.pdf)
    document = request.document
    for expected in (
        "Rechnung",
        "RE-2026-000001",
        "07.12.2026",
        "MUG-1",
        "BOOK-1",
        "Mug",
        "USt-IdNr. DE123456789",
        "Steuernummer 22/123/45678",
        "IBAN DE02120300000000202051",
        "Liefer-/Leistungsdatum",
    ):
        assert expected in text
    for figure in (document.net, document.gross, *(t.tax for t in document.taxes)):
        assert format_amount(figure) in text
    assert_fonts_embedded(rendered.pdf)
    assert_pdfa_parts(rendered.pdf)
    # What the PDF carries is byte for byte the XML the validator passed.
    name, xml = facturx.get_xml_from_pdf(rendered.pdf, check_xsd=False)
    assert name == "factur-x.xml"
    assert xml == rendered.xml
    assert validator.validate(xml).valid


def test_credit_note_is_a_rechnungskorrektur() -> None:
    rendered = render_invoice(credit_request(), SELLER)
    text = text_of(rendered.pdf)
    assert "Rechnungskorrektur" in text
    assert "GS-2026-000001" in text
    assert "berichtigt die Rechnung Nr. RE-2026-000001" in text
    assert b"<ram:TypeCode>381</ram:TypeCode>" in rendered.xml


def test_xrechnung_is_embedded_under_its_name() -> None:
    rendered = render_invoice(example_request(buyer_reference="04011000-12345-67"), SELLER)
    name, xml = facturx.get_xml_from_pdf(rendered.pdf, check_xsd=False)
    assert (name, xml) == ("xrechnung.xml", rendered.xml)
    assert "Leitweg-ID" in text_of(rendered.pdf)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=invoice_requests())
def test_rendering_twice_gives_the_same_bytes(request: InvoiceRequest) -> None:
    first = render_invoice(request, SELLER)
    second = render_invoice(request, SELLER)
    assert first.pdf == second.pdf
    assert first.xml == second.xml
    text = text_of(first.pdf)
    assert request.number in text
    assert format_amount(request.document.gross) in text


def test_a_different_invoice_gets_a_different_file_id() -> None:
    first = PdfReader(io.BytesIO(render_invoice(example_request(), SELLER).pdf)).trailer["/ID"]
    other = example_request(number="RE-2026-000002")
    second = PdfReader(io.BytesIO(render_invoice(other, SELLER).pdf)).trailer["/ID"]
    assert first[0] != second[0]


def test_long_invoices_flow_onto_more_pages() -> None:
    from somsd.domain.testing import sample_line

    order = sample_order(lines=[sample_line(sku=f"SKU-{i}") for i in range(70)])
    document = build_document(order, "invoice", {i: 2 for i in range(70)})
    pdf = render_invoice(example_request(document=document), SELLER).pdf
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 2
    assert "SKU-69" in text_of(pdf)
    assert format_amount(document.gross) in text_of(pdf)


def packing(kind: str) -> PackingRequest:
    order = sample_order()
    return PackingRequest(
        kind=kind,  # type: ignore[arg-type]
        number="F-1042-1",
        order_number=order.number,
        issue_date=date(2026, 12, 7),
        address=order.shipping_address,
        lines=(PackingLine(sku="MUG-1", name="Mug", quantity=2, bin="A-01-3"),),
    )


def test_delivery_note_and_pick_list() -> None:
    note = render_packing(packing("delivery_note"), SELLER)
    picks = render_packing(packing("pick_list"), SELLER)
    assert "Lieferschein" in text_of(note)
    assert "Pickliste" in text_of(picks)
    assert "A-01-3" in text_of(picks)
    for pdf in (note, picks):
        assert_fonts_embedded(pdf)
        assert_pdfa_parts(pdf)
    assert render_packing(packing("pick_list"), SELLER) == picks


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm (poppler-utils) missing")
def test_render_one_of_each_to_png() -> None:
    """For a person to look at: .artifacts/documents/*.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    seller = msgspec.structs.replace(SELLER, logo_png=logo_png())
    documents = {
        "invoice": render_invoice(example_request(), seller).pdf,
        "credit-note": render_invoice(credit_request(), seller).pdf,
        "xrechnung": render_invoice(
            example_request(buyer_reference="04011000-12345-67", prepaid=Decimal("46.87")), seller
        ).pdf,
        "delivery-note": render_packing(packing("delivery_note"), seller),
        "pick-list": render_packing(packing("pick_list"), seller),
    }
    for name, pdf in documents.items():
        (ARTIFACTS / f"{name}.pdf").write_bytes(pdf)
        subprocess.run(
            [
                "pdftoppm",
                "-png",
                "-r",
                "60",
                "-singlefile",
                str(ARTIFACTS / f"{name}.pdf"),
                str(ARTIFACTS / name),
            ],
            check=True,
            timeout=60,
            capture_output=True,
        )
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 1000


def test_an_issued_invoice_renders_to_the_bytes_it_had_when_issued() -> None:
    """GoBD: re-rendering an old invoice gives the same bytes. Pinned here so that a change
    to the renderer or a library upgrade (reportlab, its rl-accel number formatting, pypdf,
    drafthorse) that alters them fails a test instead of going unnoticed. Speed-ups must
    keep these hashes."""
    import hashlib

    rendered = render_invoice(example_request(), SELLER)
    assert hashlib.sha256(rendered.xml).hexdigest() == (
        "c2ef342d42c5b50e938e5a4ca5265fe2dcd54ec8ec2bdbecd9fcbeae0387a91e"
    )
    assert hashlib.sha256(rendered.pdf).hexdigest() == (
        "feeb6d079a27781eed671616c54b8e55654a21226862348ad7290a0d13905217"
    )
