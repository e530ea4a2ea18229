"""`SelectLineWarehouse`: the `adapter = "selectline"` of a `[[location]]` whose picking and
shipping the ERP's own warehouse does.

It has no session of its own: it works through the running `SelectLineErp` of its `erp`
section (the daemon's one login, one licence seat), and takes that actor's per-order lock, so
its delivery notes and the ERP section's own documents of one order never interleave.

- **Fulfilments out** (the `LocationActor`'s deliverer for `location/<name>`): a fulfilment
  becomes a delivery note `L`, a successor of the order's sales order `F` (which the ERP
  section posts; until it is complete the entry waits and is retried), taking over exactly the
  fulfilment's SKUs and quantities from the F's open positions (`delivery_positions`), plus the
  shipping position while it is open. The L is labelled with
  `BusinessPartnerReferenceNumber = "<order number>/<fulfilment id>"` (a transfer to a pickup
  store: the store's pickup fulfilment, whose handover ships the order), the reference the ERP
  section's `PostShipment` looks for, so the shipment's invoice `R` follows from this L and no
  second L is made. Before creating, it looks: an L with that reference, else an unlabelled L
  of this F holding exactly the fulfilment's units (created by an attempt whose answer was
  lost). A lost response or a SIGKILL between creating and labelling never makes a second one.
- **Shipments in** (its poller, every `poll_interval`): the location's open fulfilments are
  matched against the ERP's done delivery notes since the oldest of them (`GET /Documents`,
  `selectDocumentKindFlag=L`, `selectDocumentState=Done`, `selectFromDate`); each match is
  handed to the sink as `shipped`, with the tracking number (and carrier) from the note's
  journal "Sendungsnummer" when the warehouse noted one. A repeated report is harmless (the
  desk ignores a status already recorded), and a shipped fulfilment is no longer open, so it is
  not read again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Final

import structlog

from actors.erp import SelectLineErp, document_reference, label_delivery_note
from actors.location import LocationSink, SendFulfilment, decode_delivery, location_target
from adapters.errors import PermanentUpstreamError, TransientUpstreamError
from adapters.selectline.client import SelectLineClient
from adapters.selectline.planning import (
    DeliveryNotPlaceable,
    SalesOrderIncomplete,
    delivery_articles,
    delivery_positions,
    tracking_number,
)
from adapters.selectline.wire import DocumentReadModel
from somsd.config import LocationConfig
from somsd.domain.state import OrderState
from somsd.projections.fulfilments import (
    OPEN_STATES,
    FulfilmentState,
    fetch_fulfilment,
    list_fulfilments,
)
from somsd.store import Connection, EventStore, OutboxEntry

__all__ = ["SelectLineWarehouse", "delivery_reference", "open_fulfilments", "shipment_of"]

log = structlog.get_logger("actors.selectline_location")

_ZERO: Final = Decimal(0)
# Open fulfilments read per page and at most per poll: far more than a warehouse has open.
_PAGE: Final = 500
_MAX_OPEN: Final = 20_000


def delivery_reference(order_number: str, fulfilment_id: str) -> str:
    """The L's `BusinessPartnerReferenceNumber`: the ERP section's shipment reference, since
    a fulfilment's shipment id is its fulfilment id."""
    return f"{order_number}/{fulfilment_id}"


def shipment_of(fulfilment: FulfilmentState) -> str:
    """The order's shipment this fulfilment's delivery note becomes: its own, or for a
    transfer to a pickup store the store's pickup fulfilment (the order ships when the
    customer collects; the invoice then follows from this same note)."""
    if fulfilment.kind == "transfer" and fulfilment.pickup_fulfilment:
        return fulfilment.pickup_fulfilment
    return fulfilment.fulfilment_id


class SelectLineWarehouse:
    """One `adapter = "selectline"` location; see the module docstring."""

    def __init__(
        self,
        section: LocationConfig,
        *,
        erp: Callable[[], SelectLineErp | None],
        store: EventStore,
        sink: LocationSink,
    ) -> None:
        self.section = section
        self.target = location_target(section.name)
        self._erp = erp
        self.store = store
        self.sink = sink

    def _session(self) -> tuple[SelectLineErp, SelectLineClient]:
        erp = self._erp()
        if erp is None or erp.client is None:
            raise TransientUpstreamError(
                self.target,
                f"{self.target}: its SelectLine ERP section "
                f"{self.section.erp or '(the only one)'!r} is not running yet; will retry",
                operation="session",
            )
        return erp, erp.client

    # -- fulfilments out ------------------------------------------------------------------

    async def deliver(self, entry: OutboxEntry) -> None:
        delivery = decode_delivery(entry)
        erp, client = self._session()
        order = await erp.order_by_number(delivery.order_ref)
        if order is None:
            raise TransientUpstreamError(
                self.target,
                f"{self.target}: order {delivery.order_ref} not in somsd's projection yet",
                operation="read order",
            )
        fulfilment = await self.store.read(
            partial(fetch_fulfilment, fulfilment_id=delivery.fulfilment_id)
        )
        if fulfilment is None:
            raise TransientUpstreamError(
                self.target,
                f"{self.target}: fulfilment {delivery.fulfilment_id} not in somsd's projection yet",
                operation="read fulfilment",
            )
        async with erp.order_lock(order.order_id):
            await self._deliver(erp, client, order, delivery, shipment_of(fulfilment))

    async def _deliver(
        self,
        erp: SelectLineErp,
        client: SelectLineClient,
        order: OrderState,
        delivery: SendFulfilment,
        shipment: str,
    ) -> None:
        number = delivery.order_ref
        sales_order = await erp.sales_order(client, number)
        if sales_order is None:
            raise erp.not_posted_yet(number)
        positions = await client.positions(sales_order.key)
        skus = [line.sku for line in order.order.lines]
        lines = [(line.sku, line.quantity) for line in delivery.lines]
        shipping = order.order.shipping.price > 0
        reference = delivery_reference(number, shipment)
        try:
            articles = delivery_articles(positions, skus, lines, shipping=shipping)
            notes = [d for d in await client.successors(sales_order.key) if d.KindFlag == "L"]
            note = next((d for d in notes if document_reference(d) == reference), None)
            if note is None:
                note = await self._adopt_unlabelled(client, notes, articles)
            if note is None:
                wanted = delivery_positions(positions, skus, lines, shipping=shipping)
                key = await erp.create_delivery_note(client, sales_order.key, wanted)
            else:
                key = note.key
        except SalesOrderIncomplete as exc:
            raise TransientUpstreamError(
                self.target, f"{self.target}: {number}: {exc}; will retry", operation="positions"
            ) from exc
        except DeliveryNotPlaceable as exc:
            raise PermanentUpstreamError(
                self.target,
                f"{self.target}: fulfilment {delivery.fulfilment_id} of {number}: {exc}",
                operation="POST /Documents/{key}/Successors",
            ) from exc
        await label_delivery_note(client, key, sales_order, number, reference)
        await erp.record(order.order_id, "L", key, f"shipment:{shipment}")
        log.info(
            "erp_delivery_note_posted",
            location=self.section.name,
            fulfilment_id=delivery.fulfilment_id,
            document=key,
        )

    @staticmethod
    async def _adopt_unlabelled(
        client: SelectLineClient, notes: list[DocumentReadModel], articles: dict[str, Decimal]
    ) -> DocumentReadModel | None:
        wanted = {number: units for number, units in articles.items() if units > 0}
        for note in notes:
            if "/" in (document_reference(note) or ""):
                continue
            held: dict[str, Decimal] = {}
            for p in await client.positions(note.key):
                if p.PositionKind == "A" and (p.Quantity or _ZERO) > 0:
                    number = p.ArticleNumber or ""
                    held[number] = held.get(number, _ZERO) + (p.Quantity or _ZERO)
            if held == wanted:
                return note
        return None

    # -- shipments in ---------------------------------------------------------------------

    async def poll(self) -> None:
        erp, client = self._session()
        open_fulfilments = await self._open_fulfilments()
        if not open_fulfilments:
            return
        by_reference = {
            delivery_reference(f.order_number, shipment_of(f)): f for f in open_fulfilments
        }
        # A day's margin: the ERP dates a note in its own time zone, somsd in UTC.
        since = min(f.created_at for f in open_fulfilments).date() - timedelta(days=1)
        for note in await client.finished_documents("L", since):
            fulfilment = by_reference.get(document_reference(note) or "")
            if fulfilment is None:
                continue
            tracking, carrier = tracking_number(await client.journals(note.key))
            await self.sink.location_update(
                self.section.name,
                fulfilment.fulfilment_id,
                "shipped",
                tracking_number=tracking,
                carrier=carrier,
            )
            erp.metrics.deliveries_shipped.labels(erp.erp.name, self.section.name).inc()
            log.info(
                "erp_delivery_note_shipped",
                location=self.section.name,
                fulfilment_id=fulfilment.fulfilment_id,
                document=note.key,
                tracking_number=tracking,
            )

    async def _open_fulfilments(self) -> list[FulfilmentState]:
        return await open_fulfilments(self.store, self.section.name)


async def open_fulfilments(store: EventStore, location: str) -> list[FulfilmentState]:
    """The location's open fulfilments (bounded: far more than a warehouse has open)."""
    found: list[FulfilmentState] = []
    while len(found) < _MAX_OPEN:

        def page(conn: Connection, offset: int) -> list[FulfilmentState]:
            return list_fulfilments(
                conn, location=location, states=OPEN_STATES, offset=offset, limit=_PAGE
            )

        batch = await store.read(partial(page, offset=len(found)))
        found.extend(batch)
        if len(batch) < _PAGE:
            break
    return found
