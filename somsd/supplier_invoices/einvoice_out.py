"""An approved supplier invoice as CII through the outbound documents' builder.

The supplier is the seller and we are the buyer, so the invoice maps onto the same
`InvoiceRequest`/`Seller` our own invoices use and `somsd.documents.cii.build_cii` writes it;
the validator worker checks it like every outbound document. A buyer reference (our Leitweg-ID)
makes it XRechnung 3.0, which then also wants the supplier's contact (from its master data).

The builder models whole units; a line with a fractional quantity cannot go through it and is
reported (`NotBuildable`) instead of being rounded.
"""

from __future__ import annotations

from decimal import Decimal

from somsd.documents.cii import build_cii
from somsd.documents.model import InvoiceRequest, Seller
from somsd.domain.documents import DocumentLine, InvoiceDocument, TaxSubtotal
from somsd.domain.order import Address, Customer
from somsd.supplier_invoices.model import SupplierInvoice, SupplierRecord

__all__ = ["Buyer", "NotBuildable", "build_supplier_cii"]


class NotBuildable(ValueError):
    """The invoice has what the outbound builder cannot express."""


class Buyer(Address, frozen=True, kw_only=True):
    email: str = ""
    reference: str = ""  # BT-10, our Leitweg-ID: set -> XRechnung


def build_supplier_cii(
    invoice: SupplierInvoice, supplier: SupplierRecord, buyer: Buyer, *, payment: str = "58"
) -> bytes:
    if invoice.issue_date is None or invoice.grand_total is None:
        raise NotBuildable("no issue date or total")
    lines: list[DocumentLine] = []
    for line in invoice.lines:
        if line.quantity != line.quantity.to_integral_value() or line.quantity <= 0:
            raise NotBuildable(f"line {line.line_id}: quantity {line.quantity} is not whole")
        tax = (line.net_amount * line.tax_rate / 100).quantize(Decimal("0.01"))
        lines.append(
            DocumentLine(
                line=len(lines),
                sku=line.article,
                name=line.name or line.article,
                quantity=int(line.quantity),
                unit_price=line.net_price,
                tax_rate=line.tax_rate,
                net=line.net_amount,
                tax=tax,
                gross=line.net_amount + tax,
            )
        )
    taxes = tuple(
        TaxSubtotal(rate=tax.rate, net=tax.basis, tax=tax.tax, gross=tax.basis + tax.tax)
        for tax in sorted(invoice.taxes, key=lambda t: t.rate)
    )
    document = InvoiceDocument(
        kind="invoice",
        currency=invoice.currency or "EUR",
        customer=Customer(id=None, email=buyer.email, name=buyer.company or buyer.name),
        billing_address=Address(
            name=buyer.name,
            company=buyer.company,
            street=buyer.street,
            zip=buyer.zip,
            city=buyer.city,
            country=buyer.country,
        ),
        lines=tuple(lines),
        taxes=taxes,
        net=invoice.tax_basis_total or sum((t.net for t in taxes), Decimal(0)),
        tax=invoice.tax_total or sum((t.tax for t in taxes), Decimal(0)),
        gross=invoice.grand_total,
    )
    request = InvoiceRequest(
        number=invoice.number,
        issue_date=invoice.issue_date,
        document=document,
        order_number=invoice.purchase_order,
        payment_method="banktransfer" if payment == "58" else "invoice",
        prepaid=invoice.prepaid,
        buyer_reference=buyer.reference,
    )
    seller = Seller(
        name=invoice.seller_name or supplier.name,
        street=supplier.street,
        zip=supplier.zip,
        city=supplier.city,
        country=supplier.country,
        vat_id=invoice.seller_vat_id,
        tax_number=invoice.seller_tax_number,
        email=supplier.email,
        contact_name=supplier.contact_name,
        phone=supplier.phone,
        iban=invoice.iban,
        bic=invoice.bic,
    )
    return build_cii(request, seller)
