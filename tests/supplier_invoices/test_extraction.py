"""Extraction over the corpus: every field a template declares comes back exactly (100 %
precision), e-invoices are read field by field, an unknown supplier waits for a template."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from somsd.documents.client import ValidatorWorker
from somsd.supplier_invoices.einvoice_out import build_supplier_cii
from somsd.supplier_invoices.extract import Extraction, extract
from somsd.supplier_invoices.model import SupplierInvoice
from somsd.supplier_invoices.templates import Template, TemplateError, load_template
from tests.supplier_invoices.corpus import (
    BUYER,
    ITEMS,
    KAFFEE,
    NORDLICHT,
    SUPPLIERS,
    Supplier,
    load_templates,
    make_invoice,
    render,
    ubl_xml,
    unknown_supplier_pdf,
    xrechnung_xml,
)

TEMPLATES: list[Template] = load_templates()  # type: ignore[assignment]
HEADER = (
    "number",
    "issue_date",
    "currency",
    "purchase_order",
    "seller_name",
    "seller_vat_id",
    "iban",
    "line_total",
    "tax_basis_total",
    "tax_total",
    "grand_total",
    "taxes",
)


def variants(supplier: Supplier) -> list[SupplierInvoice]:
    items = ITEMS[supplier.layout]
    return [
        make_invoice(
            supplier,
            f"{supplier.record.number}-{n}",
            f"PO-{n:04d}",
            items[: 1 + n % 2],
            issue_date=date(2026, 1 + n % 12, 1 + n),
        )
        for n in range(6)
    ] + [
        make_invoice(
            supplier,
            "RE/2026/00099",
            "PO-BIG",
            [
                (f"X-{i}", f"Posten {i}", 100 + i, f"{1234 + i}.{50 + i}", items[i % len(items)][4])
                for i in range(12)
            ],
        )
    ]


@pytest.mark.parametrize("supplier", SUPPLIERS, ids=lambda s: s.record.name)
def test_every_declared_field_is_extracted_exactly(supplier: Supplier) -> None:
    declared_total = correct = 0
    for truth in variants(supplier):
        result = extract(render(truth, supplier), TEMPLATES)
        assert result.status == "extracted", result.problem
        assert result.invoice is not None
        assert msgspec.json.decode(msgspec.json.encode(result), type=Extraction) == result
        fields = [f for f in result.declared_fields if f != "lines"] or list(HEADER)
        if result.template:
            assert result.template_version >= 1
            assert len(result.template_sha256) == 64
            fields.append("taxes")
        for field in [*fields, "lines"]:
            declared_total += 1
            got, want = getattr(result.invoice, field), getattr(truth, field)
            if field == "lines":
                got = [
                    (ln.article, ln.name, ln.quantity, ln.net_price, ln.net_amount, ln.tax_rate)
                    for ln in got
                ]
                want = [
                    (ln.article, ln.name, ln.quantity, ln.net_price, ln.net_amount, ln.tax_rate)
                    for ln in want
                ]
            assert got == want, (field, got, want)
            correct += 1
    assert correct == declared_total  # precision 100 %


def test_text_extraction_names_its_backend_and_template() -> None:
    truth = variants(NORDLICHT)[0]
    result = extract(render(truth, NORDLICHT), TEMPLATES)
    assert result.source == "pdf-template"
    assert result.template == "nordlicht-elektro.yml"
    assert result.template_version == 2
    assert result.backend.startswith("pypdf-layout (pypdf ")
    assert result.supplier == "70002"


def test_zugferd_and_xml_are_read_without_a_template() -> None:
    truth = variants(KAFFEE)[0]
    for data, source in ((xrechnung_xml(truth, KAFFEE), "cii"), (ubl_xml(truth), "ubl")):
        result = extract(data, [])
        assert result.status == "extracted"
        assert result.source == source
        assert result.invoice is not None
        assert result.invoice.grand_total == truth.grand_total
        assert result.invoice.lines == truth.lines


def test_unknown_supplier_needs_a_template_with_hints() -> None:
    result = extract(unknown_supplier_pdf(), TEMPLATES)
    assert result.status == "needs_template"
    assert result.invoice is None
    assert "DE999999999" in result.hints
    assert "DE02120300000000202051" in result.hints


def test_garbage_is_unreadable_not_a_crash() -> None:
    for data in (b"", b"hello", b"<x/>", b"%PDF-1.4 broken", b"<?xml version='1.0'?><a"):
        assert extract(data, TEMPLATES).status == "unreadable"


def test_bad_templates_name_the_problem() -> None:
    with pytest.raises(TemplateError, match="keywords"):
        load_template("t.yml", "issuer: x\nkeywords: []\n")
    with pytest.raises(TemplateError, match=r"fields\.bogus"):
        load_template("t.yml", "issuer: x\nkeywords: [a]\nfields: {bogus: '(x)'}\n")
    with pytest.raises(TemplateError, match="backend"):
        load_template("t.yml", "issuer: x\nkeywords: [a]\nbackend: pdfium\n")
    with pytest.raises(TemplateError, match="needs groups"):
        load_template(
            "t.yml", "issuer: x\nkeywords: [a]\nlines: {start: a, end: b, line: '(?P<article>x)'}\n"
        )
    with pytest.raises(TemplateError, match="YAML"):
        load_template("t.yml", "issuer: [")


def test_generated_einvoices_pass_the_validators(validator: ValidatorWorker) -> None:
    for supplier in SUPPLIERS:
        truth = variants(supplier)[-1]
        report = validator.validate(build_supplier_cii(truth, supplier.record, BUYER))
        assert report.valid, (supplier.record.name, report.errors)
        xrechnung = validator.validate(xrechnung_xml(truth, supplier))
        assert xrechnung.valid, xrechnung.errors
        assert xrechnung.profile == "XRECHNUNG"
