"""Structured supplier invoices in: UN/CEFACT CII (ZUGFeRD, Factur-X, XRechnung CII) and UBL
2.1 (XRechnung UBL, Peppol), parsed directly with lxml into the BT terms.

A ZUGFeRD/Factur-X PDF carries its CII as an attachment: `xml_from_pdf` finds it with
factur-x's `get_xml_from_pdf` (which also knows the xrechnung-named attachments). Amounts are
read as `Decimal` from the XML text, never through float.
"""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from lxml import etree

from somsd.supplier_invoices.model import InvoiceLine, SupplierInvoice, TaxBreakdown

__all__ = ["NotAnInvoice", "kind_of_xml", "parse_cii", "parse_ubl", "parse_xml", "xml_from_pdf"]

_CII: Final = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
_UBL: Final = {
    "inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "cn": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
_PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class NotAnInvoice(ValueError):
    """The bytes are not a CII or UBL invoice we can read."""


def _root(xml: bytes) -> Any:
    try:
        return etree.fromstring(xml, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise NotAnInvoice(f"not well-formed XML: {exc}") from None


def kind_of_xml(xml: bytes) -> str:
    """ "cii" or "ubl"; `NotAnInvoice` for anything else."""
    root = _root(xml)
    namespace = etree.QName(root).namespace
    if namespace == _CII["rsm"]:
        return "cii"
    if namespace in (_UBL["inv"], _UBL["cn"]):
        return "ubl"
    raise NotAnInvoice(f"root element {etree.QName(root).localname} is neither CII nor UBL")


def xml_from_pdf(pdf: bytes) -> bytes | None:
    """The embedded CII of a ZUGFeRD/Factur-X/XRechnung PDF, None for a plain PDF."""
    import facturx  # imported here: loading factur-x's schemas costs time at start

    try:
        _name, xml = facturx.get_xml_from_pdf(io.BytesIO(pdf), check_xsd=False)
    except Exception:  # factur-x raises plain Exception for broken PDFs
        return None
    return xml if isinstance(xml, bytes) and xml else None


def _text(node: Any, path: str, ns: dict[str, str]) -> str:
    found = node.xpath(path, namespaces=ns)
    if not found:
        return ""
    value = found[0]
    return (value if isinstance(value, str) else value.text or "").strip()


def _decimal(text: str, where: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise NotAnInvoice(f"{where}: {text[:40]!r} is not a number") from None
    if not value.is_finite():
        raise NotAnInvoice(f"{where}: {text[:40]!r} is not a number")
    return value


def _optional(text: str, where: str) -> Decimal | None:
    return _decimal(text, where) if text else None


def _cii_date(text: str, where: str) -> date | None:
    if not text:
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        raise NotAnInvoice(f"{where}: {text[:20]!r} is not a date (format 102)") from None


def parse_cii(xml: bytes) -> SupplierInvoice:
    root = _root(xml)
    ns = _CII
    doc = "rsm:ExchangedDocument"
    trade = "rsm:SupplyChainTradeTransaction"
    agreement = f"{trade}/ram:ApplicableHeaderTradeAgreement"
    seller = f"{agreement}/ram:SellerTradeParty"
    settlement = f"{trade}/ram:ApplicableHeaderTradeSettlement"
    sums = f"{settlement}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"
    vat_id = tax_number = ""
    for registration in root.xpath(f"{seller}/ram:SpecifiedTaxRegistration/ram:ID", namespaces=ns):
        if registration.get("schemeID") == "VA":
            vat_id = (registration.text or "").strip()
        elif registration.get("schemeID") == "FC":
            tax_number = (registration.text or "").strip()
    lines = []
    for index, item in enumerate(
        root.xpath(f"{trade}/ram:IncludedSupplyChainTradeLineItem", namespaces=ns), start=1
    ):
        where = f"line {index}"
        basis = _text(
            item,
            "ram:SpecifiedLineTradeAgreement/ram:NetPriceProductTradePrice/ram:BasisQuantity",
            ns,
        )
        lines.append(
            InvoiceLine(
                line_id=_text(item, "ram:AssociatedDocumentLineDocument/ram:LineID", ns)
                or str(index),
                article=_text(item, "ram:SpecifiedTradeProduct/ram:SellerAssignedID", ns),
                name=_text(item, "ram:SpecifiedTradeProduct/ram:Name", ns),
                quantity=_decimal(
                    _text(item, "ram:SpecifiedLineTradeDelivery/ram:BilledQuantity", ns),
                    f"{where} BT-129",
                ),
                unit=str(
                    item.xpath(
                        "string(ram:SpecifiedLineTradeDelivery/ram:BilledQuantity/@unitCode)",
                        namespaces=ns,
                    )
                )
                or "H87",
                net_price=_decimal(
                    _text(
                        item,
                        "ram:SpecifiedLineTradeAgreement/ram:NetPriceProductTradePrice"
                        "/ram:ChargeAmount",
                        ns,
                    ),
                    f"{where} BT-146",
                ),
                base_quantity=_decimal(basis, f"{where} BT-149") if basis else Decimal(1),
                net_amount=_decimal(
                    _text(
                        item,
                        "ram:SpecifiedLineTradeSettlement"
                        "/ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount",
                        ns,
                    ),
                    f"{where} BT-131",
                ),
                tax_rate=_decimal(
                    _text(
                        item,
                        "ram:SpecifiedLineTradeSettlement/ram:ApplicableTradeTax"
                        "/ram:RateApplicablePercent",
                        ns,
                    )
                    or "0",
                    f"{where} BT-152",
                ),
                tax_category=_text(
                    item,
                    "ram:SpecifiedLineTradeSettlement/ram:ApplicableTradeTax/ram:CategoryCode",
                    ns,
                )
                or "S",
                order_reference=_text(
                    item,
                    "ram:SpecifiedLineTradeAgreement/ram:BuyerOrderReferencedDocument"
                    "/ram:IssuerAssignedID",
                    ns,
                ),
            )
        )
    taxes = [
        TaxBreakdown(
            rate=_decimal(_text(tax, "ram:RateApplicablePercent", ns) or "0", "BT-119"),
            basis=_decimal(_text(tax, "ram:BasisAmount", ns), "BT-116"),
            tax=_decimal(_text(tax, "ram:CalculatedAmount", ns), "BT-117"),
            category=_text(tax, "ram:CategoryCode", ns) or "S",
        )
        for tax in root.xpath(f"{settlement}/ram:ApplicableTradeTax", namespaces=ns)
    ]
    return SupplierInvoice(
        number=_text(root, f"{doc}/ram:ID", ns),
        issue_date=_cii_date(
            _text(root, f"{doc}/ram:IssueDateTime/udt:DateTimeString", ns), "BT-2"
        ),
        type_code=_text(root, f"{doc}/ram:TypeCode", ns) or "380",
        currency=_text(root, f"{settlement}/ram:InvoiceCurrencyCode", ns),
        due_date=_cii_date(
            _text(
                root,
                f"{settlement}/ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime"
                "/udt:DateTimeString",
                ns,
            ),
            "BT-9",
        ),
        buyer_reference=_text(root, f"{agreement}/ram:BuyerReference", ns),
        purchase_order=_text(
            root, f"{agreement}/ram:BuyerOrderReferencedDocument/ram:IssuerAssignedID", ns
        ),
        seller_name=_text(root, f"{seller}/ram:Name", ns),
        seller_vat_id=vat_id,
        seller_tax_number=tax_number,
        buyer_name=_text(root, f"{agreement}/ram:BuyerTradeParty/ram:Name", ns),
        iban=_text(
            root,
            f"{settlement}/ram:SpecifiedTradeSettlementPaymentMeans"
            "/ram:PayeePartyCreditorFinancialAccount/ram:IBANID",
            ns,
        ),
        bic=_text(
            root,
            f"{settlement}/ram:SpecifiedTradeSettlementPaymentMeans"
            "/ram:PayeeSpecifiedCreditorFinancialInstitution/ram:BICID",
            ns,
        ),
        lines=tuple(lines),
        taxes=tuple(taxes),
        line_total=_optional(_text(root, f"{sums}/ram:LineTotalAmount", ns), "BT-106"),
        allowances=_decimal(_text(root, f"{sums}/ram:AllowanceTotalAmount", ns) or "0", "BT-107"),
        charges=_decimal(_text(root, f"{sums}/ram:ChargeTotalAmount", ns) or "0", "BT-108"),
        tax_basis_total=_optional(_text(root, f"{sums}/ram:TaxBasisTotalAmount", ns), "BT-109"),
        tax_total=_optional(_text(root, f"{sums}/ram:TaxTotalAmount", ns), "BT-110"),
        grand_total=_optional(_text(root, f"{sums}/ram:GrandTotalAmount", ns), "BT-112"),
        prepaid=_decimal(_text(root, f"{sums}/ram:TotalPrepaidAmount", ns) or "0", "BT-113"),
        due_amount=_optional(_text(root, f"{sums}/ram:DuePayableAmount", ns), "BT-115"),
    )


def _ubl_date(text: str, where: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise NotAnInvoice(f"{where}: {text[:20]!r} is not a date") from None


def parse_ubl(xml: bytes) -> SupplierInvoice:
    root = _root(xml)
    ns = _UBL
    credit = etree.QName(root).namespace == _UBL["cn"]
    line_tag = "cac:CreditNoteLine" if credit else "cac:InvoiceLine"
    quantity_tag = "cbc:CreditedQuantity" if credit else "cbc:InvoicedQuantity"
    party = "cac:AccountingSupplierParty/cac:Party"
    vat_id = tax_number = ""
    for scheme in root.xpath(f"{party}/cac:PartyTaxScheme", namespaces=ns):
        identifier = _text(scheme, "cbc:CompanyID", ns)
        if _text(scheme, "cac:TaxScheme/cbc:ID", ns) == "VAT":
            vat_id = identifier
        else:
            tax_number = identifier
    lines = []
    for index, item in enumerate(root.xpath(line_tag, namespaces=ns), start=1):
        where = f"line {index}"
        basis = _text(item, "cac:Price/cbc:BaseQuantity", ns)
        lines.append(
            InvoiceLine(
                line_id=_text(item, "cbc:ID", ns) or str(index),
                article=_text(item, "cac:Item/cac:SellersItemIdentification/cbc:ID", ns),
                name=_text(item, "cac:Item/cbc:Name", ns),
                quantity=_decimal(_text(item, quantity_tag, ns), f"{where} BT-129"),
                unit=str(item.xpath(f"string({quantity_tag}/@unitCode)", namespaces=ns)) or "H87",
                net_price=_decimal(_text(item, "cac:Price/cbc:PriceAmount", ns), f"{where} BT-146"),
                base_quantity=_decimal(basis, f"{where} BT-149") if basis else Decimal(1),
                net_amount=_decimal(_text(item, "cbc:LineExtensionAmount", ns), f"{where} BT-131"),
                tax_rate=_decimal(
                    _text(item, "cac:Item/cac:ClassifiedTaxCategory/cbc:Percent", ns) or "0",
                    f"{where} BT-152",
                ),
                tax_category=_text(item, "cac:Item/cac:ClassifiedTaxCategory/cbc:ID", ns) or "S",
                order_reference=_text(item, "cac:OrderLineReference/cbc:LineID", ns),
            )
        )
    taxes = [
        TaxBreakdown(
            rate=_decimal(_text(sub, "cac:TaxCategory/cbc:Percent", ns) or "0", "BT-119"),
            basis=_decimal(_text(sub, "cbc:TaxableAmount", ns), "BT-116"),
            tax=_decimal(_text(sub, "cbc:TaxAmount", ns), "BT-117"),
            category=_text(sub, "cac:TaxCategory/cbc:ID", ns) or "S",
        )
        for sub in root.xpath("cac:TaxTotal/cac:TaxSubtotal", namespaces=ns)
    ]
    totals = "cac:LegalMonetaryTotal"
    return SupplierInvoice(
        number=_text(root, "cbc:ID", ns),
        issue_date=_ubl_date(_text(root, "cbc:IssueDate", ns), "BT-2"),
        type_code=_text(root, "cbc:CreditNoteTypeCode" if credit else "cbc:InvoiceTypeCode", ns)
        or ("381" if credit else "380"),
        currency=_text(root, "cbc:DocumentCurrencyCode", ns),
        due_date=_ubl_date(_text(root, "cbc:DueDate", ns), "BT-9"),
        buyer_reference=_text(root, "cbc:BuyerReference", ns),
        purchase_order=_text(root, "cac:OrderReference/cbc:ID", ns),
        seller_name=_text(root, f"{party}/cac:PartyLegalEntity/cbc:RegistrationName", ns)
        or _text(root, f"{party}/cac:PartyName/cbc:Name", ns),
        seller_vat_id=vat_id,
        seller_tax_number=tax_number,
        buyer_name=_text(
            root,
            "cac:AccountingCustomerParty/cac:Party/cac:PartyLegalEntity/cbc:RegistrationName",
            ns,
        ),
        iban=_text(root, "cac:PaymentMeans/cac:PayeeFinancialAccount/cbc:ID", ns),
        bic=_text(
            root,
            "cac:PaymentMeans/cac:PayeeFinancialAccount/cac:FinancialInstitutionBranch/cbc:ID",
            ns,
        ),
        lines=tuple(lines),
        taxes=tuple(taxes),
        line_total=_optional(_text(root, f"{totals}/cbc:LineExtensionAmount", ns), "BT-106"),
        allowances=_decimal(_text(root, f"{totals}/cbc:AllowanceTotalAmount", ns) or "0", "BT-107"),
        charges=_decimal(_text(root, f"{totals}/cbc:ChargeTotalAmount", ns) or "0", "BT-108"),
        tax_basis_total=_optional(_text(root, f"{totals}/cbc:TaxExclusiveAmount", ns), "BT-109"),
        tax_total=_optional(_text(root, "cac:TaxTotal/cbc:TaxAmount", ns), "BT-110"),
        grand_total=_optional(_text(root, f"{totals}/cbc:TaxInclusiveAmount", ns), "BT-112"),
        prepaid=_decimal(_text(root, f"{totals}/cbc:PrepaidAmount", ns) or "0", "BT-113"),
        due_amount=_optional(_text(root, f"{totals}/cbc:PayableAmount", ns), "BT-115"),
    )


def parse_xml(xml: bytes) -> tuple[str, SupplierInvoice]:
    """(kind, invoice) of a CII or UBL document."""
    kind = kind_of_xml(xml)
    return kind, parse_cii(xml) if kind == "cii" else parse_ubl(xml)
