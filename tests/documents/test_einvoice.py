"""EN 16931 CII: totals equal the domain's to the cent, every invoice passes XSD + CEN/Factur-X
schematron, XRechnung passes KoSIT's rules, tampering is caught (real validator worker)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import msgspec
from hypothesis import HealthCheck, given, settings
from lxml import etree

from somsd.documents.cii import build_cii
from somsd.documents.client import ValidatorWorker
from somsd.documents.model import InvoiceRequest
from somsd.domain.documents import build_document, shipping_by_rate
from somsd.domain.testing import sample_line, sample_order
from tests.documents.conftest import SELLER
from tests.documents.strategies import invoice_requests

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
}
SUMMATION = "//ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:"
SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def amount(tree: etree._Element, path: str) -> Decimal:
    (value,) = tree.xpath(path + "/text()", namespaces=NS)
    return Decimal(str(value))


def example_request(**changes: object) -> InvoiceRequest:
    order = sample_order(
        lines=[
            sample_line(sku="MUG-1", quantity=3, unit_price="9.99", tax_rate="19"),
            sample_line(sku="BOOK-1", quantity=1, unit_price="12.00", tax_rate="7"),
        ],
        payment_method="invoice",
        payment_status="pending",
    )
    quantities = {0: 3, 1: 1}
    document = build_document(
        order, "invoice", quantities, shipping=shipping_by_rate(order, quantities)
    )
    request = InvoiceRequest(
        number="RE-2026-000001",
        issue_date=date(2026, 12, 7),
        document=document,
        order_number=order.number,
        payment_method="invoice",
    )
    return msgspec.structs.replace(request, **changes)


@SETTINGS
@given(request=invoice_requests())
def test_cii_totals_are_the_domains_and_pass_en16931(
    request: InvoiceRequest, validator: ValidatorWorker
) -> None:
    xml = build_cii(request, SELLER)
    tree = etree.fromstring(xml)
    document = request.document
    assert amount(tree, SUMMATION + "LineTotalAmount") == document.net
    assert amount(tree, SUMMATION + "TaxBasisTotalAmount") == document.net
    assert amount(tree, SUMMATION + "TaxTotalAmount") == document.tax
    assert amount(tree, SUMMATION + "GrandTotalAmount") == document.gross
    assert amount(tree, SUMMATION + "DuePayableAmount") == document.gross - request.prepaid
    taxes = tree.xpath(
        "//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax", namespaces=NS
    )
    assert [
        (
            amount(tax, "ram:RateApplicablePercent"),
            amount(tax, "ram:BasisAmount"),
            amount(tax, "ram:CalculatedAmount"),
        )
        for tax in taxes
    ] == [(subtotal.rate, subtotal.net, subtotal.tax) for subtotal in document.taxes]
    lines = tree.xpath(
        "//ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount/text()",
        namespaces=NS,
    )
    assert [Decimal(str(value)) for value in lines] == [line.net for line in document.lines]
    type_code = "381" if document.kind == "credit_note" else "380"
    assert tree.xpath("//rsm:ExchangedDocument/ram:TypeCode/text()", namespaces=NS) == [type_code]

    report = validator.validate(xml)
    assert report.valid, report.errors
    if request.buyer_reference:
        assert report.profile == "XRECHNUNG"
        assert "KoSIT XRechnung 3.0 CII schematron" in report.rule_sets
    else:
        assert report.profile == "EN16931"


def test_tampered_total_is_caught(validator: ValidatorWorker) -> None:
    xml = build_cii(example_request(), SELLER)
    assert validator.validate(xml).valid
    tampered = xml.replace(b"<ram:GrandTotalAmount>46.87<", b"<ram:GrandTotalAmount>46.97<")
    assert tampered != xml
    report = validator.validate(tampered)
    assert not report.valid
    assert {"BR-CO-15", "BR-CO-16"} <= {finding.rule for finding in report.errors}


def test_tampered_tax_is_caught(validator: ValidatorWorker) -> None:
    xml = build_cii(example_request(), SELLER)
    tree = etree.fromstring(xml)
    (tax,) = tree.xpath(SUMMATION + "TaxTotalAmount", namespaces=NS)
    tax.text = str(Decimal(tax.text) + Decimal("0.01"))
    report = validator.validate(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))
    assert not report.valid
    assert "BR-CO-14" in {finding.rule for finding in report.errors}


def test_xrechnung_rules_reject_what_xrechnung_requires(validator: ValidatorWorker) -> None:
    """An XRechnung without a seller contact phone fails KoSIT's BR-DE-6, not just CEN's rules."""
    xml = build_cii(example_request(buyer_reference="04011000-12345-67"), SELLER)
    assert validator.validate(xml).valid
    no_phone = build_cii(
        example_request(buyer_reference="04011000-12345-67"),
        msgspec.structs.replace(SELLER, phone=""),
    )
    report = validator.validate(no_phone)
    assert not report.valid
    assert "BR-DE-6" in {finding.rule for finding in report.errors}


def test_factur_x_without_buyer_reference_would_fail_xrechnung(validator: ValidatorWorker) -> None:
    """The Factur-X guideline is not XRechnung: the KoSIT rules only run when BT-24 asks."""
    report = validator.validate(build_cii(example_request(), SELLER))
    assert report.valid
    assert report.profile == "EN16931"
    assert "KoSIT XRechnung 3.0 CII schematron" not in report.rule_sets


def test_not_xml_is_a_finding_not_a_crash(validator: ValidatorWorker) -> None:
    report = validator.validate(b"<nope")
    assert not report.valid
    assert report.errors[0].rule == "XML"
    assert validator.validate(build_cii(example_request(), SELLER)).valid


def test_the_fast_factur_x_stylesheet_finds_exactly_what_the_shipped_one_finds() -> None:
    """The worker runs the Factur-X rules rewritten for speed (code lists parsed once, no
    pattern text walk); on valid and broken invoices alike it reports the same rules at the
    same places with the same text as the stylesheet factur-x ships."""
    import random

    from somsd.documents.validation import Validator

    rng = random.Random(11)
    documents = [build_cii(example_request(), SELLER)]
    documents.append(build_cii(example_request(buyer_reference="04011000-12345-67"), SELLER))
    for _ in range(6):
        order = sample_order(
            lines=[
                sample_line(
                    sku=f"SKU-{index}",
                    quantity=rng.randint(1, 4),
                    unit_price=f"{rng.randint(100, 9_999) / 100:.2f}",
                    tax_rate=rng.choice(("0", "7", "19")),
                )
                for index in range(rng.randint(1, 5))
            ],
            payment_method="invoice",
            payment_status="pending",
        )
        quantities = {i: line.quantity for i, line in enumerate(order.lines)}
        document = build_document(
            order, "invoice", quantities, shipping=shipping_by_rate(order, quantities)
        )
        documents.append(build_cii(example_request(document=document), SELLER))
    base = documents[0]
    documents += [
        base.replace(b"<ram:GrandTotalAmount>46.87<", b"<ram:GrandTotalAmount>46.97<"),
        base.replace(b"<ram:CountryID>DE</ram:CountryID>", b"<ram:CountryID>XX</ram:CountryID>"),
        base.replace(b"<ram:TypeCode>380<", b"<ram:TypeCode>999<"),
        base.replace(b">EUR<", b">EUX<"),
        base.replace(b"<ram:CategoryCode>S<", b"<ram:CategoryCode>Q<"),
    ]
    fast, shipped = Validator(), Validator(original_facturx=True)
    broken = 0
    for xml in documents:
        found = fast.validate(xml)
        expected = shipped.validate(xml)
        assert found.findings == expected.findings
        broken += not found.valid
    assert broken == 5  # every tampered one fails (code lists included), every real one passes
