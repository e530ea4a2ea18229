"""Purchase orders and goods receipts read from SelectLine for the supplier invoices' 3-way
match, beside the CSV import.

The running `SelectLineErp` of an `[[erp]]` with `purchasing_interval` runs `read_once` that
often with its session (on a cluster: the member holding the ERP's lease): the suppliers' `B`
and `S` documents dated in the last `purchasing_days` (the list endpoint's own filters, paged
by the client and bounded by its page limit), and the positions of each one that is new or
whose header changed (number, date, status, net amount), at most `POSITIONS_PER_READ` a read.
Each such document is one `ErpPurchaseDocumentRead` event on stream
`supplier-purchasing-<erp>`, in one append per read; a document read again unchanged writes
nothing, so re-reading changes nothing.

The supplier-invoice actor (any member) folds that stream, the latest event per document, into
purchase-order and goods-receipt lines (`lines`) and adds them to its CSV ones for an inbox whose
`erp` names the ERP. A document deleted in the ERP stays in the match data (the ERP does not say
so; an operator rejects what it lets through).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from functools import partial
from typing import Final

import msgspec
import structlog

from adapters.selectline.client import SelectLineClient
from adapters.selectline.purchasing import (
    GOODS_RECEIPT,
    PURCHASE_ORDER,
    order_lines,
    receipt_lines,
)
from adapters.selectline.wire import DocumentReadModel
from somsd.config import ErpConfig
from somsd.store import EventStore, NewEvent
from somsd.supplier_invoices.model import GoodsReceiptLine, PurchaseOrderLine

__all__ = ["PURCHASING_PREFIX", "ErpPurchasing", "PurchaseDocument", "purchasing_stream"]

log = structlog.get_logger("actors.supplier_invoices")

PURCHASING_PREFIX: Final = "supplier-purchasing-"
# Documents whose positions one read fetches at most (one request each); the rest, still new
# to the stream, are fetched by the next reads. Receipts wait until every order is read, so
# each one finds the order positions it received.
POSITIONS_PER_READ: Final = 500
EVENT_TYPE: Final = "ErpPurchaseDocumentRead"

Periodic = tuple[float, str, Callable[[], Awaitable[None]]]


def purchasing_stream(erp: str) -> str:
    return PURCHASING_PREFIX + erp


class PurchaseDocument(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    kind: str
    header: str  # what decides whether its positions are read again
    position_ids: tuple[str, ...] = ()  # a B's article positions, for its receipts
    orders: tuple[PurchaseOrderLine, ...] = ()
    receipts: tuple[GoodsReceiptLine, ...] = ()


def _header(document: DocumentReadModel) -> str:
    return f"{document.Number}|{document.Date}|{document.StatusFlag}|{document.NetAmount}"


class ErpPurchasing:
    """See the module docstring; one per daemon."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._documents: dict[str, dict[str, PurchaseDocument]] = {}
        self._versions: dict[str, int] = {}

    async def documents(self, erp: str) -> dict[str, PurchaseDocument]:
        """The latest of each document read from `erp`, catching up with the stream."""
        known = self._documents.setdefault(erp, {})
        stored = await self.store.read_stream(
            purchasing_stream(erp), after_version=self._versions.get(erp, 0)
        )
        for event in stored:
            document = event.decode(PurchaseDocument)
            known[document.key] = document
            self._versions[erp] = event.version
        return known

    async def lines(self, erp: str) -> tuple[list[PurchaseOrderLine], list[GoodsReceiptLine]]:
        documents = (await self.documents(erp)).values()
        return (
            [line for d in documents for line in d.orders],
            [line for d in documents for line in d.receipts],
        )

    def periodic(self, section: ErpConfig, client: SelectLineClient) -> list[Periodic]:
        """What the ERP actor runs with its session: the read, when the section asks for it."""
        if section.purchasing_interval is None:
            return []
        return [
            (section.purchasing_interval.seconds, "purchasing", partial(self.read, section, client))
        ]

    async def read(self, section: ErpConfig, client: SelectLineClient) -> None:
        await self.read_once(section, client)

    async def read_once(self, section: ErpConfig, client: SelectLineClient) -> int:
        """One read of `section`'s ERP; the number of documents new or changed."""
        known = await self.documents(section.name)
        since = date.today() - timedelta(days=section.purchasing_days)
        order_of_position = {
            position: d.key[1:] for d in known.values() for position in d.position_ids
        }
        changed: list[PurchaseDocument] = []
        orders = [
            d
            for d in await client.supplier_documents(PURCHASE_ORDER, since)
            if not _unchanged(known, d)
        ]
        for document in orders[:POSITIONS_PER_READ]:
            positions = await client.positions(document.key)
            read = PurchaseDocument(
                key=document.key,
                kind=PURCHASE_ORDER,
                header=_header(document),
                position_ids=tuple(p.Identifier for p in positions),
                orders=tuple(order_lines(document, positions)),
            )
            order_of_position.update(dict.fromkeys(read.position_ids, document.Number))
            changed.append(read)
        receipts = [
            d
            for d in await client.supplier_documents(GOODS_RECEIPT, since)
            if not _unchanged(known, d)
        ]
        room = POSITIONS_PER_READ - len(orders)  # negative: orders still to read come first
        for document in receipts[: max(room, 0)]:
            positions = await client.positions(document.key)
            changed.append(
                PurchaseDocument(
                    key=document.key,
                    kind=GOODS_RECEIPT,
                    header=_header(document),
                    receipts=tuple(receipt_lines(document, positions, order_of_position)),
                )
            )
        if changed:
            await self.store.append(
                purchasing_stream(section.name),
                [
                    NewEvent(EVENT_TYPE, msgspec.json.encode(d), {"actor": "supplier_invoices"})
                    for d in changed
                ],
            )
            log.info(
                "erp_purchasing_read",
                erp=section.name,
                documents=[d.key for d in changed][:50],
                changed=len(changed),
            )
        return len(changed)


def _unchanged(known: dict[str, PurchaseDocument], document: DocumentReadModel) -> bool:
    old = known.get(document.key)
    return old is not None and old.header == _header(document)
