"""EN 16931 invoices as UN/CEFACT CII XML (drafthorse): Factur-X/ZUGFeRD EN16931 profile, or
XRechnung 3.0 when the buyer gave a buyer reference (Leitweg-ID).

Every amount is copied from the domain's `InvoiceDocument` — nothing is recomputed here, so the
XML says to the cent what the PDF and the event say. The only derived figure is the item net
price (BT-146): a line's net divided by its quantity when that is exact in four decimals, else
the line's net for a base quantity (BT-149) of all its units, which EN 16931 allows and which
keeps BT-129 x BT-146 / BT-149 = BT-131 exact.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Final

from drafthorse.models.accounting import ApplicableTradeTax
from drafthorse.models.document import Document
from drafthorse.models.note import IncludedNote
from drafthorse.models.party import TaxRegistration
from drafthorse.models.payment import PaymentMeans, PaymentTerms
from drafthorse.models.tradelines import LineItem

from somsd.documents.model import InvoiceRequest, Seller, line_name, payment_means_code
from somsd.domain.documents import DocumentLine
from somsd.domain.money import round_money

__all__ = [
    "FACTURX_GUIDELINE",
    "XRECHNUNG_GUIDELINE",
    "build_cii",
    "is_xrechnung",
    "type_code",
]

FACTURX_GUIDELINE: Final = "urn:cen.eu:en16931:2017"
XRECHNUNG_GUIDELINE: Final = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
PEPPOL_BILLING: Final = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
_PRICE_QUANTUM: Final = Decimal("0.0001")
_PIECE: Final = "H87"


def is_xrechnung(request: InvoiceRequest) -> bool:
    return bool(request.buyer_reference)


def type_code(request: InvoiceRequest) -> str:
    """BT-3: 380 commercial invoice, 381 credit note."""
    return "381" if request.document.kind == "credit_note" else "380"


def _category(rate: Decimal) -> str:
    # Standard rate, or zero rated (0 % needs no exemption reason, unlike "E").
    return "S" if rate > 0 else "Z"


def _percent(rate: Decimal) -> Decimal:
    return rate.quantize(Decimal("0.01")) if rate == rate.quantize(Decimal("0.01")) else rate


def _net_price(line: DocumentLine) -> tuple[Decimal, Decimal]:
    """(BT-146 item net price, BT-149 base quantity)."""
    quantity = Decimal(line.quantity)
    per_unit = line.net / quantity
    if per_unit == per_unit.quantize(_PRICE_QUANTUM) and per_unit * quantity == line.net:
        return per_unit.quantize(_PRICE_QUANTUM), Decimal(1)
    return line.net, quantity


def _seller(doc: Any, seller: Seller, xrechnung: bool) -> None:
    party = doc.trade.agreement.seller
    party.name = seller.name
    if xrechnung or seller.contact_name or seller.phone:
        party.contact.person_name = seller.contact_name or seller.name
        if seller.phone:
            party.contact.telephone.number = seller.phone
        if seller.email:
            party.contact.email.address = seller.email
    party.address.postcode = seller.zip
    party.address.line_one = seller.street
    party.address.city_name = seller.city
    party.address.country_id = seller.country
    if seller.email:
        party.electronic_address.uri_ID = ("EM", seller.email)
    if seller.vat_id:
        party.tax_registrations.add(TaxRegistration(id=("VA", seller.vat_id)))
    if seller.tax_number:
        party.tax_registrations.add(TaxRegistration(id=("FC", seller.tax_number)))


def _buyer(doc: Any, request: InvoiceRequest) -> None:
    document = request.document
    address = document.billing_address
    party = doc.trade.agreement.buyer
    if document.customer.id:
        party.id = document.customer.id
    party.name = address.company or address.name
    party.address.postcode = address.zip
    party.address.line_one = address.street
    if address.company:
        party.address.line_two = address.name
    party.address.city_name = address.city
    party.address.country_id = address.country
    if document.customer.email:
        party.electronic_address.uri_ID = ("EM", document.customer.email)


def _line_item(index: int, line: DocumentLine, currency: str) -> Any:
    item = LineItem()
    item.document.line_id = str(index)
    if line.sku:
        item.product.seller_assigned_id = line.sku
    item.product.name = line_name(line)
    price, basis = _net_price(line)
    item.agreement.net.amount = price
    if basis != 1:
        item.agreement.net.basis_quantity = (basis, _PIECE)
    item.delivery.billed_quantity = (Decimal(line.quantity), _PIECE)
    item.settlement.trade_tax.type_code = "VAT"
    item.settlement.trade_tax.category_code = _category(line.tax_rate)
    item.settlement.trade_tax.rate_applicable_percent = _percent(line.tax_rate)
    item.settlement.monetary_summation.total_amount = round_money(line.net, currency)
    return item


def _payment(doc: Any, request: InvoiceRequest, seller: Seller, due: Decimal) -> None:
    settlement = doc.trade.settlement
    means = PaymentMeans()
    code = payment_means_code(request.payment_method)
    means.type_code = code
    if code == "58" and seller.iban:
        means.payee_account.iban = seller.iban
        means.payee_account.account_name = seller.name
        if seller.bic:
            means.payee_institution.bic = seller.bic
    settlement.payment_means.add(means)
    if code == "58":
        settlement.payment_reference = request.number
    terms = PaymentTerms()
    if due > 0:
        days = seller.payment_terms_days
        terms.description = f"Zahlbar innerhalb von {days} Tagen ohne Abzug."
        terms.due = request.issue_date + timedelta(days=days)
    elif request.document.kind == "credit_note":
        terms.description = "Der Betrag wird erstattet."
    else:
        terms.description = "Bereits bezahlt."
    settlement.terms.add(terms)


def build_cii(request: InvoiceRequest, seller: Seller) -> bytes:
    """The CII XML of `request`: Factur-X EN16931, or XRechnung 3.0 with a buyer reference."""
    document = request.document
    currency = document.currency
    xrechnung = is_xrechnung(request)
    doc = Document()
    if xrechnung:
        doc.context.business_parameter.id = PEPPOL_BILLING
    doc.context.guideline_parameter.id = XRECHNUNG_GUIDELINE if xrechnung else FACTURX_GUIDELINE
    doc.header.id = request.number
    doc.header.type_code = type_code(request)
    doc.header.issue_date_time = request.issue_date
    if document.kind == "credit_note":
        doc.header.notes.add(
            IncludedNote(content=f"Rechnungskorrektur zur Rechnung {request.preceding_invoice}")
        )

    _seller(doc, seller, xrechnung)
    _buyer(doc, request)
    if request.buyer_reference:
        doc.trade.agreement.buyer_reference = request.buyer_reference
    if request.order_number:
        doc.trade.agreement.buyer_order.issuer_assigned_id = request.order_number

    ship_to = request.shipping_address
    if ship_to is not None and ship_to != document.billing_address:
        party = doc.trade.delivery.ship_to
        party.name = ship_to.company or ship_to.name
        party.address.postcode = ship_to.zip
        party.address.line_one = ship_to.street
        party.address.city_name = ship_to.city
        party.address.country_id = ship_to.country
    delivered: date = request.delivery_date or request.issue_date
    doc.trade.delivery.event.occurrence = delivered

    for index, line in enumerate(document.lines, start=1):
        doc.trade.items.add(_line_item(index, line, currency))

    settlement = doc.trade.settlement
    settlement.currency_code = currency
    prepaid = min(round_money(request.prepaid, currency), document.gross)
    due = document.gross - prepaid
    _payment(doc, request, seller, due)
    for subtotal in document.taxes:
        tax = ApplicableTradeTax()
        tax.calculated_amount = subtotal.tax
        tax.basis_amount = subtotal.net
        tax.type_code = "VAT"
        tax.category_code = _category(subtotal.rate)
        tax.rate_applicable_percent = _percent(subtotal.rate)
        settlement.trade_tax.add(tax)
    if document.kind == "credit_note" and request.preceding_invoice:
        settlement.invoice_referenced_document.issuer_assigned_id = request.preceding_invoice

    _totals(settlement, request, prepaid, due)
    # schema=None: drafthorse would load its (older, 1.0.07) XSD on every call, ~8 ms; the
    # validator worker checks every document against the Factur-X 1.09 XSD anyway.
    xml: bytes = doc.serialize(schema=None)
    return xml


def _totals(settlement: Any, request: InvoiceRequest, prepaid: Decimal, due: Decimal) -> None:
    document = request.document
    totals = settlement.monetary_summation
    totals.line_total = sum((line.net for line in document.lines), Decimal(0))
    totals.charge_total = Decimal("0.00")
    totals.allowance_total = Decimal("0.00")
    totals.tax_basis_total = document.net
    totals.tax_total = (document.tax, document.currency)
    totals.grand_total = document.gross
    totals.prepaid_total = prepaid
    totals.due_amount = due
