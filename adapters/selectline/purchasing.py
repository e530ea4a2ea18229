"""A supplier invoice as SelectLine sees it: an `E` document (Eingangsrechnung) of a supplier,
with one article position per invoice line. Pure: what to send and what to adopt.

The fields (Swagger spelling, reference §6-7):

- header (`DocumentCreateModel`): `KindFlag` "E"; `BusinessPartner.Address.Number` our supplier
  (creditor) number; `BusinessPartner.BusinessPartnerReferenceNumber` ("Ihr Zeichen") the
  supplier's invoice number BT-1, the key somsd looks the document up by;
  `BusinessPartner.BusinessPartnerContract` ("Ihr Auftrag") the purchase order BT-13; `Date`
  the invoice date BT-2, `ValutaDate` the due date BT-9; `PriceKindFlag` "N": the invoice's
  prices are net (BT-146); `CurrencyCode` BT-5.
- positions (`ArticlePositionItem`, `POST /Documents/{key}/ArticleItem`): `ArticleNumber` the
  line's article BT-155 (the same number the 3-way match joins purchase-order lines on, so it
  is the ERP's article number), `CalculatedQuantityValue` BT-129, `UnitPrice` BT-146,
  `PriceUnitFactor` BT-149 when it is not 1, `TaxRate` BT-152, `Name` BT-153.

SelectLine has no idempotency key, so the poster looks before it creates: the supplier's `E`
documents with that reference number (`selectAddressKind=Supplier`,
`selectBusinessPartnerNumber`, `filter`), checked again here on what came back (the filter
grammar is unverified, and a server that ignored it must not make us adopt a stranger's
document). A found document is adopted; its positions are compared with the invoice's lines
in order and only the missing tail is added, so a document whose creation or whose positions'
answers were lost is completed, never doubled.

The other way, for the 3-way match: purchase orders are `B` documents ("Bestellung"), goods
receipts `S` ("Wareneingang": the kind the Swagger gives in `DocumentPositionReadModel.
DocumentKind` and the document-key prefixes `QS`; the read and create models' `KindFlag` texts
leave it out). A `B` position is an ordered line (its `Number` the PO number BT-13 names, the
supplier its address, net `UnitPrice` per `PriceUnitFactor`); an `S` made from the `B`
(Belegübergabe) names the `B` position it received in `PredecessorIdentifier`; an `S` typed in
without a `B` falls back to "Ihr Auftrag" (`BusinessPartnerContract`) as the order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final

from adapters.selectline.wire import (
    ArticlePositionItem,
    DocumentCreateModel,
    DocumentDetailAddress,
    DocumentDetailBusinessPartner,
    DocumentPositionReadModel,
    DocumentReadModel,
)
from somsd.supplier_invoices.model import GoodsReceiptLine, PurchaseOrderLine, SupplierInvoice

__all__ = [
    "GOODS_RECEIPT",
    "PURCHASE_ORDER",
    "SUPPLIER",
    "SUPPLIER_INVOICE",
    "NotPostable",
    "PositionsDiffer",
    "adoptable_invoice",
    "order_lines",
    "positions_to_add",
    "receipt_lines",
    "supplier_invoice_header",
    "supplier_invoice_positions",
]

SUPPLIER_INVOICE: Final = "E"
PURCHASE_ORDER: Final = "B"
GOODS_RECEIPT: Final = "S"
SUPPLIER: Final = "Supplier"  # `selectAddressKind`
_NAME_LENGTH: Final = 80


class NotPostable(ValueError):
    """The invoice cannot become an `E` as it is (a line without an article number)."""


class PositionsDiffer(ValueError):
    """The adopted document's positions are not the invoice's lines (someone edited it)."""


def supplier_invoice_header(
    invoice: SupplierInvoice, supplier: str, reference: str
) -> DocumentCreateModel:
    """The `E` of `invoice` from supplier `supplier`; `reference` (somsd's id) in the header
    text, for whoever opens it in the Wawi."""
    if not invoice.number:
        raise NotPostable("the invoice has no number (BT-1) to find its E document by")
    return DocumentCreateModel(
        KindFlag=SUPPLIER_INVOICE,
        Date=invoice.issue_date.isoformat() if invoice.issue_date else None,
        ValutaDate=invoice.due_date.isoformat() if invoice.due_date else None,
        CurrencyCode=invoice.currency or "EUR",
        PriceKindFlag="N",
        BusinessPartner=DocumentDetailBusinessPartner(
            BusinessPartnerReferenceNumber=invoice.number,
            BusinessPartnerContract=invoice.purchase_order or None,
            Address=DocumentDetailAddress(Number=supplier),
        ),
        HeaderText=f"Eingangsrechnung {invoice.number} (somsd {reference})",
    )


def supplier_invoice_positions(invoice: SupplierInvoice) -> list[ArticlePositionItem]:
    items: list[ArticlePositionItem] = []
    for line in invoice.lines:
        if not line.article:
            raise NotPostable(f"line {line.line_id} has no article number (BT-155)")
        items.append(
            ArticlePositionItem(
                ArticleNumber=line.article,
                CalculatedQuantityValue=line.quantity,
                UnitPrice=line.net_price,
                PriceUnitFactor=line.base_quantity if line.base_quantity != 1 else None,
                Name=line.name[:_NAME_LENGTH] or None,
                TaxRate=line.tax_rate,
            )
        )
    if not items:
        raise NotPostable("the invoice has no lines")
    return items


def adoptable_invoice(
    documents: Sequence[DocumentReadModel], supplier: str, number: str
) -> DocumentReadModel | None:
    """The supplier's `E` with reference `number` among `documents`, if there is one."""
    for document in documents:
        partner = document.BusinessPartner
        if (
            document.KindFlag == SUPPLIER_INVOICE
            and partner is not None
            and partner.BusinessPartnerReferenceNumber == number
            and partner.Address is not None
            and partner.Address.Number == supplier
        ):
            return document
    return None


def positions_to_add(
    existing: Sequence[DocumentPositionReadModel], wanted: Sequence[ArticlePositionItem]
) -> list[ArticlePositionItem]:
    """The positions the document still lacks: it must hold a prefix of `wanted`, in order."""
    articles = [p for p in existing if p.PositionKind in (None, "A")]
    if len(articles) > len(wanted):
        raise PositionsDiffer(
            f"the document has {len(articles)} article positions, the invoice {len(wanted)} lines"
        )
    for index, (have, want) in enumerate(zip(articles, wanted, strict=False)):
        quantity = have.CalculatedQuantityValue or have.Quantity or Decimal(0)
        if have.ArticleNumber != want.ArticleNumber or quantity != want.CalculatedQuantityValue:
            raise PositionsDiffer(
                f"position {index + 1} is {have.ArticleNumber} x {quantity}, the invoice's line "
                f"{want.ArticleNumber} x {want.CalculatedQuantityValue}"
            )
    return list(wanted[len(articles) :])


def _articles(positions: Sequence[DocumentPositionReadModel]) -> list[DocumentPositionReadModel]:
    return [p for p in positions if p.PositionKind in (None, "A") and p.ArticleNumber]


def _quantity(position: DocumentPositionReadModel) -> Decimal:
    return position.CalculatedQuantityValue or position.Quantity or Decimal(0)


def _supplier_of(document: DocumentReadModel) -> str:
    partner = document.BusinessPartner
    return partner.Address.Number or "" if partner and partner.Address else ""


def order_lines(
    document: DocumentReadModel, positions: Sequence[DocumentPositionReadModel]
) -> list[PurchaseOrderLine]:
    """A `B`'s article positions as purchase-order lines (net unit prices)."""
    return [
        PurchaseOrderLine(
            order=document.Number,
            article=position.ArticleNumber or "",
            quantity=_quantity(position),
            net_price=position.UnitPrice or Decimal(0),
            supplier=_supplier_of(document),
        )
        for position in _articles(positions)
    ]


def receipt_lines(
    document: DocumentReadModel,
    positions: Sequence[DocumentPositionReadModel],
    order_of_position: Mapping[str, str],
) -> list[GoodsReceiptLine]:
    """An `S`'s article positions as goods receipts of the order each one received; a position
    of no known `B` counts for "Ihr Auftrag", and without that for nothing."""
    contract = (
        document.BusinessPartner.BusinessPartnerContract if document.BusinessPartner else None
    )
    lines = []
    for position in _articles(positions):
        order = order_of_position.get(position.PredecessorIdentifier or "") or contract
        if order:
            lines.append(
                GoodsReceiptLine(
                    order=order, article=position.ArticleNumber or "", quantity=_quantity(position)
                )
            )
    return lines
