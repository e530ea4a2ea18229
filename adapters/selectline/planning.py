"""Pure decisions for the SelectLine ERP: no I/O, values in, values out.

- `stock_reports`: the ERP's stock rows and articles -> one complete `StockReport` per somsd
  location (sum of `AvailableStock` over the location's warehouses), plus the rows it had to
  skip and why (unknown article, negative stock, a mapped warehouse the ERP does not have).
  Articles that are inactive or not shop-active count 0: not sellable, so the shop hides them
  and reconciliation counts them like any sold-out SKU.
- `plan_erp_effects`: an order's new events -> the ERP documents to post, each with an
  idempotency key that is stable for its cause (so a redelivered change never plans twice):
  received -> sales order `F`; shipped -> delivery note `L` + invoice `R` for exactly the
  shipped units; credit note -> `G`; canceled -> close or delete the `F`.
- `payment_from_open_item`: an open item paid (partly) in the ERP -> the payment to record in
  somsd, idempotent per open item and paid amount.
- `delivery_positions` (the `adapter = "selectline"` location): a fulfilment's lines -> the
  sales order's positions and quantities its delivery note takes over; `tracking_number`: the
  warehouse's tracking number from a delivery note's journals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

import msgspec

from adapters.selectline.wire import (
    Article,
    DocumentPositionReadModel,
    JournalModelRead,
    OpenItemDto,
    Stock,
)
from somsd.domain.atp import StockCount, StockReport
from somsd.domain.events import (
    CreditNoteIssued,
    InvoiceIssued,
    LinesShipped,
    OrderCanceled,
    OrderEvent,
    OrderReceived,
)
from somsd.domain.state import OrderState

__all__ = [
    "TRACKING_LABELS",
    "AttachDocument",
    "CancelErpOrder",
    "DeliveryNotPlaceable",
    "ErpEffect",
    "ErpLine",
    "ErpPayment",
    "PostCreditNote",
    "PostSalesOrder",
    "PostShipment",
    "SalesOrderIncomplete",
    "ShippedLine",
    "StockProblem",
    "StockProblemKind",
    "StockReading",
    "decode_effect",
    "delivery_articles",
    "delivery_positions",
    "erp_target",
    "payment_from_open_item",
    "plan_erp_effects",
    "stock_reports",
    "tracking_number",
]

SkuField = Literal["number", "gtin"]
StockProblemKind = Literal["unknown_article", "negative_stock", "missing_warehouse", "no_gtin"]


def erp_target(erp: str) -> str:
    """The outbox target of one `[[erp]]` section."""
    return f"erp/{erp}"


# -- stock --------------------------------------------------------------------------------------


class StockProblem(msgspec.Struct, frozen=True):
    kind: StockProblemKind
    article: str | None
    warehouse: str | None
    detail: str


class StockReading(msgspec.Struct, frozen=True):
    reports: tuple[StockReport, ...]
    problems: tuple[StockProblem, ...]
    not_sellable: int  # articles counted 0 because inactive or not shop-active


def stock_reports(
    stocks: Iterable[Stock],
    articles: Iterable[Article],
    known_warehouses: Iterable[str],
    locations: Mapping[str, Sequence[str]],
    *,
    sku: SkuField,
    as_of: datetime,
) -> StockReading:
    """One complete report per location in `locations` (location -> its ERP warehouses)."""
    problems: list[StockProblem] = []
    known = set(known_warehouses)
    warehouse_location: dict[str, list[str]] = defaultdict(list)
    for location, warehouses in locations.items():
        for warehouse in warehouses:
            if warehouse not in known:
                problems.append(
                    StockProblem(
                        "missing_warehouse",
                        None,
                        warehouse,
                        f"warehouse {warehouse} mapped to {location} does not exist in the ERP",
                    )
                )
            warehouse_location[warehouse].append(location)
    by_number: dict[str, Article] = {}
    sku_of: dict[str, str] = {}
    for article in articles:
        by_number[article.Number] = article
        if sku == "number":
            sku_of[article.Number] = article.Number
        elif article.EuropeanArticleNumber:
            sku_of[article.Number] = article.EuropeanArticleNumber
        else:
            problems.append(
                StockProblem("no_gtin", article.Number, None, "article has no GTIN (EAN)")
            )
    totals: dict[str, dict[str, int]] = {location: {} for location in locations}
    for row in stocks:
        targets = warehouse_location.get(row.Number)
        if not targets:
            continue  # a warehouse no location sells from
        stocked = by_number.get(row.ArticleNumber)
        if stocked is None:
            problems.append(
                StockProblem(
                    "unknown_article",
                    row.ArticleNumber,
                    row.Number,
                    "stock row for an article the article list does not have",
                )
            )
            continue
        available = row.AvailableStock if row.AvailableStock is not None else row.Quantity
        if available is None:
            available = Decimal(0)
        if available < 0:
            problems.append(
                StockProblem(
                    "negative_stock",
                    row.ArticleNumber,
                    row.Number,
                    f"AvailableStock {available} is negative; row skipped",
                )
            )
            continue
        name = sku_of.get(stocked.Number)
        if name is None:
            continue
        for location in targets:
            counts = totals[location]
            # Whole units only: a fraction of a mug is not sellable.
            counts[name] = counts.get(name, 0) + int(available)
    not_sellable = 0
    reports: list[StockReport] = []
    for location in locations:
        counts = totals[location]
        for article in by_number.values():
            name = sku_of.get(article.Number)
            if name is None:
                continue
            if article.IsInactive or not article.IsShopActive:
                counts[name] = 0
                not_sellable += 1
            else:
                counts.setdefault(name, 0)
        reports.append(
            StockReport(
                location=location,
                as_of=as_of,
                counts=tuple(StockCount(name, on_hand) for name, on_hand in sorted(counts.items())),
                complete=True,
            )
        )
    return StockReading(tuple(reports), tuple(problems), not_sellable)


# -- documents out -------------------------------------------------------------------------------


class ErpLine(msgspec.Struct, frozen=True, kw_only=True):
    line: int | None  # the order line; None for shipping
    sku: str
    name: str
    quantity: int
    unit_price: Decimal  # gross
    tax_rate: Decimal


class ShippedLine(msgspec.Struct, frozen=True, kw_only=True):
    line: int
    sku: str
    quantity: int


class PostSalesOrder(msgspec.Struct, frozen=True, kw_only=True, tag="post_sales_order"):
    order_id: str
    number: str  # the shop's order number: BusinessPartnerContract
    placed_at: datetime
    currency: str
    email: str
    customer_id: str | None
    name: str
    company: str | None
    street: str
    zip: str
    city: str
    country: str
    lines: tuple[ErpLine, ...]
    shipping_price: Decimal
    shipping_method: str

    @property
    def key(self) -> str:
        return f"order:{self.order_id}"


class PostShipment(msgspec.Struct, frozen=True, kw_only=True, tag="post_shipment"):
    order_id: str
    number: str
    shipment_id: str
    lines: tuple[ShippedLine, ...]
    first: bool  # the order's first shipment: its invoice carries the shipping position
    # What the complete sales order holds: a shipment waits until the F has all of it.
    order_lines: int = 0
    shipping: bool = False

    @property
    def key(self) -> str:
        return f"shipment:{self.order_id}:{self.shipment_id}"


class PostCreditNote(msgspec.Struct, frozen=True, kw_only=True, tag="post_credit_note"):
    order_id: str
    number: str
    index: int  # the order's n-th credit note, from 1: the note's number is not known yet
    lines: tuple[ErpLine, ...]

    @property
    def reference(self) -> str:
        """`BusinessPartnerReferenceNumber` of the `G`: what finds it again after a crash."""
        return f"{self.number}/G{self.index}"

    @property
    def key(self) -> str:
        return f"credit:{self.order_id}:{self.index}"


class CancelErpOrder(msgspec.Struct, frozen=True, kw_only=True, tag="cancel_erp_order"):
    order_id: str
    number: str

    @property
    def key(self) -> str:
        return f"cancel:{self.order_id}"


class AttachDocument(msgspec.Struct, frozen=True, kw_only=True, tag="attach_document"):
    """somsd's rendered PDF of the order's invoice (`index` 0) or of its `index`-th credit
    note, archived in the ERP as a journal with the file attached (`attach_documents`): the
    invoice on the sales order `F` (somsd invoices the order once; the ERP bills each
    shipment with its own `R`), a credit note on its `G`. The document's number is not known
    when this is planned (the store allocates it at commit), so the delivery reads it from the
    order."""

    order_id: str
    number: str  # the shop's order number
    kind: Literal["invoice", "credit_note"]
    index: int

    @property
    def key(self) -> str:
        return f"attach:{self.order_id}:{self.kind}:{self.index}"


ErpEffect = PostSalesOrder | PostShipment | PostCreditNote | CancelErpOrder | AttachDocument
_effect_decoder: Final = msgspec.json.Decoder(ErpEffect)


def decode_effect(payload: bytes) -> ErpEffect:
    return _effect_decoder.decode(payload)


def plan_erp_effects(
    before: OrderState | None,
    after: OrderState,
    events: Sequence[OrderEvent],
    *,
    attach_documents: bool = False,
) -> list[ErpEffect]:
    """What the ERP must hear of `events` (already folded into `after`); with
    `attach_documents` also the invoice's and credit notes' PDFs."""
    effects: list[ErpEffect] = []
    order = after.order
    credit_notes = len(before.credit_notes) if before is not None else 0
    shipped_before = before is not None and any(line.shipped for line in before.lines)
    for event in events:
        match event:
            case OrderReceived():
                address = order.billing_address
                effects.append(
                    PostSalesOrder(
                        order_id=after.order_id,
                        number=order.number,
                        placed_at=order.placed_at,
                        currency=order.currency,
                        email=order.customer.email,
                        customer_id=order.customer.id,
                        name=address.name,
                        company=address.company,
                        street=address.street,
                        zip=address.zip,
                        city=address.city,
                        country=address.country,
                        lines=tuple(
                            ErpLine(
                                line=index,
                                sku=line.sku,
                                name=line.name,
                                quantity=line.quantity,
                                unit_price=line.unit_price,
                                tax_rate=line.tax_rate,
                            )
                            for index, line in enumerate(order.lines)
                        ),
                        shipping_price=order.shipping.price,
                        shipping_method=order.shipping.method,
                    )
                )
            case LinesShipped(shipment_id=shipment_id, lines=lines):
                effects.append(
                    PostShipment(
                        order_id=after.order_id,
                        number=order.number,
                        shipment_id=shipment_id,
                        lines=tuple(
                            ShippedLine(
                                line=item.line,
                                sku=order.lines[item.line].sku,
                                quantity=item.quantity,
                            )
                            for item in lines
                        ),
                        first=not shipped_before,
                        order_lines=len(order.lines),
                        shipping=order.shipping.price > 0,
                    )
                )
                shipped_before = True
            case CreditNoteIssued(document=document):
                credit_notes += 1
                effects.append(
                    PostCreditNote(
                        order_id=after.order_id,
                        number=order.number,
                        index=credit_notes,
                        lines=tuple(
                            ErpLine(
                                line=item.line,
                                sku=item.sku,
                                name=item.name,
                                quantity=item.quantity,
                                unit_price=item.unit_price,
                                tax_rate=item.tax_rate,
                            )
                            for item in document.lines
                        ),
                    )
                )
                if attach_documents:
                    effects.append(
                        AttachDocument(
                            order_id=after.order_id,
                            number=order.number,
                            kind="credit_note",
                            index=credit_notes,
                        )
                    )
            case InvoiceIssued() if attach_documents:
                effects.append(
                    AttachDocument(
                        order_id=after.order_id, number=order.number, kind="invoice", index=0
                    )
                )
            case OrderCanceled():
                effects.append(CancelErpOrder(order_id=after.order_id, number=order.number))
            case _:
                pass
    return effects


# -- payments in -------------------------------------------------------------------------------


class ErpPayment(msgspec.Struct, frozen=True):
    payment_id: str
    amount: Decimal
    reference: str


def payment_from_open_item(erp: str, item: OpenItemDto, state: OrderState) -> ErpPayment | None:
    """The payment still to record for an open item of this order's invoice, if any.

    What the ERP says is paid (`Sum - Outstanding`) is cumulative; somsd records the part not
    yet recorded, under an id naming the open item and the cumulative amount, so a repeated
    poll (or one after a crash) finds its payment already there and records nothing.
    """
    if item.Amount is None or item.Amount.Sum <= 0:
        return None  # credit notes and empty items: nothing was paid to us
    paid = item.Amount.Sum - max(item.Amount.Outstanding, Decimal(0))
    if paid <= 0:
        return None
    prefix = f"erp/{erp}/op{item.OpenItemNumber}/"
    recorded = max(
        (Decimal(pid.removeprefix(prefix)) for pid in state.payment_ids if pid.startswith(prefix)),
        default=Decimal(0),
    )
    if paid <= recorded:
        return None
    return ErpPayment(
        payment_id=f"{prefix}{paid}",
        amount=paid - recorded,
        reference=item.OpenItemDocument or "",
    )


# -- fulfilments of an `adapter = "selectline"` location -----------------------------------------


class SalesOrderIncomplete(Exception):
    """The sales order does not hold all of the order's positions yet (its own delivery is
    still adding them): the delivery note waits."""


class DeliveryNotPlaceable(Exception):
    """The fulfilment asks for units the sales order does not have open: it never will."""


# Journal labels a warehouse notes a parcel's tracking number under (German and English).
TRACKING_LABELS: Final = frozenset({"sendungsnummer", "trackingnummer", "tracking"})


def _open(position: DocumentPositionReadModel) -> Decimal:
    quantity = position.Quantity or Decimal(0)
    return quantity - (position.QuantityTakenOverByDocumentSuccessor or Decimal(0))


def _article_positions(
    positions: Sequence[DocumentPositionReadModel], order_skus: Sequence[str], *, shipping: bool
) -> list[DocumentPositionReadModel]:
    """The sales order's article positions, order line i at i; raises while incomplete."""
    articles = [p for p in positions if p.PositionKind == "A"]
    has_shipping = any(p.PositionKind == "E" for p in positions)
    if len(articles) < len(order_skus) or (shipping and not has_shipping):
        raise SalesOrderIncomplete(
            f"the sales order has {len(articles)} of {len(order_skus)} article positions"
        )
    return articles


def delivery_articles(
    positions: Sequence[DocumentPositionReadModel],
    order_skus: Sequence[str],
    lines: Iterable[tuple[str, int]],
    *,
    shipping: bool,
) -> dict[str, Decimal]:
    """Article number -> units a fulfilment's delivery note holds: what finds a note created
    by an attempt whose answer was lost (its positions are already taken over, so
    `delivery_positions` would ask for less)."""
    articles = _article_positions(positions, order_skus, shipping=shipping)
    number_of = {sku: articles[i].ArticleNumber or "" for i, sku in enumerate(order_skus)}
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for sku, quantity in lines:
        if sku not in number_of:
            raise DeliveryNotPlaceable(f"SKU {sku} is not on the order")
        totals[number_of[sku]] += quantity
    return dict(totals)


def delivery_positions(
    positions: Sequence[DocumentPositionReadModel],
    order_skus: Sequence[str],
    lines: Iterable[tuple[str, int]],
    *,
    shipping: bool,
) -> list[tuple[DocumentPositionReadModel, Decimal]]:
    """The sales order's positions and the quantities a fulfilment's delivery note takes over.

    `order_skus` are the order's lines in order (order line i is the i-th article position,
    as somsd adds them); a fulfilment's SKU takes from the open quantity of that SKU's lines,
    first line first. The shipping position goes along while it is still open, so the first
    delivery's invoice bills it. Raises `SalesOrderIncomplete` (retry later) or
    `DeliveryNotPlaceable` (never placeable).
    """
    articles = _article_positions(positions, order_skus, shipping=shipping)
    left = {i: _open(articles[i]) for i in range(len(order_skus))}
    wanted: list[tuple[DocumentPositionReadModel, Decimal]] = []
    taken: dict[int, Decimal] = defaultdict(Decimal)
    for sku, quantity in lines:
        rest = Decimal(quantity)
        for i, line_sku in enumerate(order_skus):
            if rest <= 0:
                break
            if line_sku != sku or left[i] <= 0:
                continue
            take = min(rest, left[i])
            left[i] -= take
            taken[i] += take
            rest -= take
        if rest > 0:
            raise DeliveryNotPlaceable(
                f"{quantity} x {sku} asked, {quantity - rest} open on the sales order"
            )
    wanted.extend((articles[i], quantity) for i, quantity in sorted(taken.items()))
    wanted.extend((p, _open(p)) for p in positions if p.PositionKind == "E" and _open(p) > 0)
    return wanted


def tracking_number(journals: Iterable[JournalModelRead]) -> tuple[str | None, str | None]:
    """(tracking number, carrier) from the last journal labelled as one; the carrier is the
    journal's category when the warehouse sets one."""
    found: tuple[str | None, str | None] = (None, None)
    for journal in journals:
        label = (journal.Label or "").strip().casefold()
        text = (journal.Text or "").strip()
        if label in TRACKING_LABELS and text:
            found = (text[:100], (journal.CategoryLabel or "").strip()[:50] or None)
    return found
