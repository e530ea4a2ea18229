"""From a received file to a `SupplierInvoice`: e-invoice first, template second, never a guess.

1. XML (CII or UBL): parsed directly.
2. PDF with an embedded e-invoice (ZUGFeRD, Factur-X, XRechnung attachment): that XML.
3. Any other PDF: its text layer (pypdf's layout mode, the one pinned backend — templates
   are written against its output), the supplier's template picked by keywords, the fields
   read by the template. No matching template: "needs_template", with the text's VAT IDs
   and IBANs as hints for whoever writes the template.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Sequence
from typing import Final, Literal

import msgspec
import pypdf

from somsd.supplier_invoices.einvoice_in import NotAnInvoice, parse_xml, xml_from_pdf
from somsd.supplier_invoices.model import SupplierInvoice
from somsd.supplier_invoices.templates import (
    BACKEND,
    ExtractionError,
    Template,
    apply_template,
    pick_template,
)

__all__ = ["BACKEND_VERSION", "Extraction", "extract", "pdf_text"]

BACKEND_VERSION: Final = f"{BACKEND} (pypdf {pypdf.__version__})"
_VAT_HINT: Final = re.compile(r"\b[A-Z]{2} ?[0-9A-Z]{8,12}\b")
_IBAN_HINT: Final = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b")

Status = Literal["extracted", "needs_template", "unreadable"]


class Extraction(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    status: Status
    source: str  # cii | ubl | zugferd | pdf-template | pdf | unknown
    invoice: SupplierInvoice | None = None
    template: str = ""  # file name
    template_version: int = 0
    template_sha256: str = ""
    supplier: str = ""  # the template's supplier number, if it names one
    backend: str = ""
    problem: str = ""
    hints: tuple[str, ...] = ()  # needs_template: VAT IDs and IBANs seen in the text
    text_seconds: float = 0.0  # the text backend's own time
    declared_fields: tuple[str, ...] = ()


def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text(extraction_mode="layout") for page in reader.pages)


def _is_pdf(data: bytes) -> bool:
    return data[:1024].lstrip().startswith(b"%PDF")


def extract(data: bytes, templates: Sequence[Template]) -> Extraction:
    if not _is_pdf(data):
        try:
            kind, invoice = parse_xml(data)
        except NotAnInvoice as exc:
            return Extraction(status="unreadable", source="unknown", problem=str(exc))
        return Extraction(status="extracted", source=kind, invoice=invoice, backend="lxml")
    embedded = xml_from_pdf(data)
    if embedded is not None:
        try:
            _kind, invoice = parse_xml(embedded)
        except NotAnInvoice as exc:
            return Extraction(status="unreadable", source="zugferd", problem=str(exc))
        return Extraction(
            status="extracted", source="zugferd", invoice=invoice, backend="factur-x + lxml"
        )
    started = time.perf_counter()
    try:
        text = pdf_text(data)
    except Exception as exc:  # pypdf raises many kinds for a damaged PDF
        return Extraction(
            status="unreadable", source="pdf", backend=BACKEND_VERSION, problem=f"{exc}"[:300]
        )
    seconds = time.perf_counter() - started
    if not text.strip():
        return Extraction(
            status="unreadable",
            source="pdf",
            backend=BACKEND_VERSION,
            problem="the PDF has no text layer (a scan); somsd does no OCR",
            text_seconds=seconds,
        )
    template = pick_template(text, templates)
    if template is None:
        hints = sorted(set(_VAT_HINT.findall(text)) | set(_IBAN_HINT.findall(text)))
        return Extraction(
            status="needs_template",
            source="pdf",
            backend=BACKEND_VERSION,
            hints=tuple(hint.replace(" ", "") for hint in hints[:10]),
            text_seconds=seconds,
        )
    common = {
        "source": "pdf-template",
        "template": template.name,
        "template_version": template.version,
        "template_sha256": template.sha256,
        "supplier": template.supplier,
        "backend": BACKEND_VERSION,
        "text_seconds": seconds,
        "declared_fields": tuple(template.declared_fields()),
    }
    try:
        invoice = apply_template(text, template)
    except ExtractionError as exc:
        return Extraction(status="unreadable", problem=str(exc), **common)  # type: ignore[arg-type]
    return Extraction(status="extracted", invoice=invoice, **common)  # type: ignore[arg-type]
