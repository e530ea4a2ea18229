"""`SelectLineErp`: the actor behind one `[[erp]] kind = "selectline"` section.

It holds the daemon's one SelectLine session (`adapters.selectline.SelectLineClient`: one
licence seat, logout when the actor stops) and does three things, each switched on by the
section:

- `stock_source`: every `poll_interval` reads warehouses, articles and `Warehouses/Stocks` and
  hands one complete `StockReport` per mapped somsd location to the sink (the fulfilment desk,
  exactly as a location's adapter does). Which warehouses feed which location: a
  `[[location]]`'s own `warehouses`, and the section's `warehouses` for its `stock_location`.
  Rows the ERP gets wrong (unknown article, negative stock, a mapped warehouse it does not
  have) are skipped one by one, counted in `somsd_erp_stock_rows_skipped_total{erp,kind}` and
  logged once per distinct problem; the rest of the report goes through. Units on the open
  delivery notes of an `adapter = "selectline"` location's fulfilments not yet shipped in somsd
  are added back: the ERP books them out when the note is made, somsd holds them reserved
  until it ships.
- `post_invoices`: delivers the outbox target `erp/<name>` (entries planned by
  `erp_order_effects_for` in the composition root): a sales order `F` per order, `L` + `R`
  successors per shipment with exactly the shipped positions, a `G` per credit note, and a
  cancellation closes or deletes the `F` (`cancel_action`). Every delivery first looks the
  document up (by the shop's order number in `BusinessPartnerContract`, by the shipment or
  credit note reference in `BusinessPartnerReferenceNumber`) and resumes what is missing, so a
  lost response or a SIGKILL half-way never creates a second document. Deliveries of one order
  run one at a time (a lock per order). Each ERP document key is recorded on the order
  (`ErpDocumentRecorded`, shown in `GET /v1/orders/{id}` as `erp_documents`).
- `attach_documents` (with `post_invoices` and `[documents]`): somsd's rendered PDF of the
  order's invoice is archived on its sales order `F`, each credit note's on its `G`, as a
  journal ("somsd Rechnung <number>") with the file attached (`POST /Documents/{key}/Journals`,
  then `POST /Journals/{id}/Attachments`, multipart). It looks for the journal by its label and
  for the file by its name before creating either, so a lost answer never attaches twice. An
  e-invoice that failed validation is not attached (as it is not mailed).
- also with `post_invoices`: every `payment_interval` reads the open items and records what
  was paid in the ERP as payments in somsd (the desk's `RecordPayment`), which the shop then
  hears of through its own effects.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Final, Protocol

import httpx
import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter

from actors.documents import DocumentReader
from actors.integration import Describe, IntegrationActor, IntegrationStatus
from actors.order_desk import OrderCommand, OrderDesk, RecordErpDocument, RecordPayment
from actors.outbox import Deliver, OutboxDispatcher
from adapters.errors import PermanentUpstreamError, TransientUpstreamError, UpstreamError
from adapters.selectline.client import SelectLineClient
from adapters.selectline.planning import (
    AttachDocument,
    CancelErpOrder,
    ErpLine,
    PostCreditNote,
    PostSalesOrder,
    PostShipment,
    decode_effect,
    erp_target,
    payment_from_open_item,
    plan_erp_effects,
    stock_reports,
)
from adapters.selectline.wire import (
    ENCODER,
    ArticlePositionItem,
    Customer,
    CustomerAddress,
    CustomerContact,
    DocumentCreateModel,
    DocumentDetailAddress,
    DocumentDetailBusinessPartner,
    DocumentPositionReadModel,
    DocumentPositionWithShippingItemCreateModel,
    DocumentReadModel,
    DocumentUpdateModel,
    EnumerationValue,
    JournalCreateModel,
    Stock,
    StoreInformationUpdate,
    SuccessorsDocumentData,
)
from somsd.actor import Reply
from somsd.config import ErpConfig, LocationConfig
from somsd.domain.atp import StockCount, StockReport
from somsd.domain.errors import DomainError
from somsd.domain.events import OrderEvent
from somsd.domain.state import OrderState, apply
from somsd.projections.orders import decode_state, fetch_state, fetch_state_by_number
from somsd.store import EventStore, OutboxEntry, OutboxItem

__all__ = [
    "DEFAULT_TIMEOUT",
    "ErpMetrics",
    "SelectLineErp",
    "StockSink",
    "document_reference",
    "erp_order_effects_for",
    "label_delivery_note",
    "stock_locations",
]

log = structlog.get_logger("actors.erp")

# Connect fast (loopback or LAN), read generously: a full stock list is large.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0, read=60.0)


class StockSink(Protocol):
    """What takes the ERP's stock: the fulfilment desk's `stock_report` (a `LocationSink`)."""

    async def stock_report(self, report: StockReport) -> None: ...


class ErpMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.skipped = Counter(
            "somsd_erp_stock_rows_skipped",
            "ERP stock rows skipped as bad data, per ERP and kind (unknown_article, "
            "negative_stock, missing_warehouse, no_gtin).",
            ["erp", "kind"],
            registry=registry,
        )
        self.documents = Counter(
            "somsd_erp_documents_posted",
            "Documents somsd created in the ERP, per ERP and kind flag (F, L, R, G).",
            ["erp", "kind"],
            registry=registry,
        )
        self.payments = Counter(
            "somsd_erp_payments_recorded",
            "Payments booked in the ERP that somsd recorded on orders, per ERP.",
            ["erp"],
            registry=registry,
        )
        self.deliveries_shipped = Counter(
            "somsd_erp_deliveries_shipped",
            "Delivery notes the ERP's warehouse shipped that somsd took as shipments, per ERP "
            "and location (adapter selectline).",
            ["erp", "location"],
            registry=registry,
        )
        self.attachments = Counter(
            "somsd_erp_documents_attached",
            "somsd's invoice and credit-note PDFs archived on ERP documents, per ERP and kind "
            "(invoice, credit_note).",
            ["erp", "kind"],
            registry=registry,
        )
        self.stock_polls = Counter(
            "somsd_erp_stock_polls",
            "Stock polls of the ERP that handed their reports over, per ERP.",
            ["erp"],
            registry=registry,
        )


def stock_locations(
    section: ErpConfig, locations: Sequence[LocationConfig]
) -> dict[str, tuple[str, ...]]:
    """somsd location -> the ERP warehouses whose available stock is its stock."""
    mapping = {location.name: location.warehouses for location in locations if location.warehouses}
    if section.stock_location is not None and section.warehouses:
        mapping[section.stock_location] = section.warehouses
    return mapping


def erp_order_effects_for(
    erps: Callable[[], Sequence[ErpConfig]],
) -> Callable[[str, OrderState | None, Sequence[OrderEvent]], list[OutboxItem]]:
    """The order desk's effects for every SelectLine ERP that takes documents."""

    def effects(
        channel: str, before: OrderState | None, events: Sequence[OrderEvent]
    ) -> list[OutboxItem]:
        posting = [e for e in erps() if e.kind == "selectline" and e.post_invoices]
        if not posting:
            return []
        state = before
        for event in events:
            state = apply(state, event)
        assert state is not None
        planned = {
            attach: plan_erp_effects(before, state, events, attach_documents=attach)
            for attach in {erp.attach_documents for erp in posting}
        }
        return [
            OutboxItem(
                erp_target(erp.name), ENCODER.encode(effect), f"{erp_target(erp.name)}:{effect.key}"
            )
            for erp in posting
            for effect in planned[erp.attach_documents]
        ]

    return effects


_ZERO = Decimal(0)


@dataclass(frozen=True)
class SessionUse:
    """Work others do with a running ERP actor's session: outbox targets it delivers, and
    periodic steps (interval seconds, what, step) run like its own polls."""

    deliverers: Mapping[str, Deliver] = field(default_factory=dict)
    periodic: Sequence[tuple[float, str, Callable[[], Awaitable[None]]]] = ()


class SelectLineErp(IntegrationActor):
    """Drives one SelectLine ERP; see the module docstring."""

    def __init__(
        self,
        name: str,
        section: ErpConfig,
        *,
        store: EventStore,
        dispatcher: OutboxDispatcher,
        desk: OrderDesk,
        sink: StockSink,
        locations: Callable[[], Sequence[LocationConfig]],
        metrics: ErpMetrics,
        http_timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        documents: DocumentReader | None = None,
        uses: Callable[[ErpConfig, SelectLineClient], SessionUse] = lambda s, c: SessionUse(),
    ) -> None:
        """`documents`: the rendered PDFs `attach_documents` archives in the ERP; `uses`: more
        work done with this ERP's session while it runs (the supplier invoices' `E` postings
        and purchase-document reads, which belong to the ERP's duty on a cluster)."""
        super().__init__(name, section, driver="selectline")
        if section.url is None:
            raise ValueError(f"erp {section.name!r}: kind selectline needs url")
        self.erp = section
        self.target = erp_target(section.name)
        self.store = store
        self.dispatcher = dispatcher
        self.desk = desk
        self.sink = sink
        self.locations = locations
        self.metrics = metrics
        self.http_timeout = http_timeout
        self._clock = clock
        self._problems: dict[str, str] = {}
        self._seen_bad_rows: set[tuple[str, str | None, str | None]] = set()
        self._order_locks: dict[str, trio.Lock] = {}
        self._last_counts: dict[str, tuple[StockCount, ...]] = {}
        self.client: SelectLineClient | None = None
        self.documents = documents
        self.uses = uses

    def _password(self) -> str:
        secret = self.erp.password_file
        lines = secret.lines() if secret is not None else []
        return lines[0].reveal() if lines else ""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        section = self.erp
        connections = self.dispatcher.per_target + 2
        async with httpx.AsyncClient(
            base_url=section.url or "",
            timeout=self.http_timeout,
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=30.0,
            ),
        ) as http:
            client = SelectLineClient(
                http,
                system=self.target,
                user=section.user,
                password=self._password(),
                app_key=section.app_key,
            )
            self.client = client
            deliver = partial(self._deliver, client)
            if section.post_invoices:
                self.dispatcher.register(self.target, deliver)
            use = self.uses(section, client)
            others = use.deliverers
            for target, other in others.items():
                self.dispatcher.register(target, other, limit=1)
            try:
                async with trio.open_nursery() as nursery:
                    if section.stock_source:
                        nursery.start_soon(
                            self._every,
                            section.poll_interval.seconds,
                            "stock",
                            partial(self._poll_stock, client),
                        )
                    if section.post_invoices:
                        nursery.start_soon(
                            self._every,
                            section.payment_interval.seconds,
                            "payments",
                            partial(self._poll_payments, client),
                        )
                    for interval, what, step in use.periodic:
                        nursery.start_soon(self._every, interval, what, step)
                    log.info(
                        "erp_started",
                        erp=section.name,
                        stock_source=section.stock_source,
                        post_invoices=section.post_invoices,
                    )
                    task_status.started()
                    await self._serve()
            finally:
                if section.post_invoices:
                    self.dispatcher.unregister(self.target, deliver)
                for target, other in others.items():
                    self.dispatcher.unregister(target, other)
                # The seat goes back even when we are being cancelled; a dead server only
                # costs the two seconds.
                with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                    await client.logout()

    async def _serve(self) -> None:
        async for message in self.mailbox:
            self.handled += 1
            match message:
                case Describe(reply=reply):
                    reply.set(
                        IntegrationStatus(self.name, self.kind, self.created_at, self.handled)
                    )

    # -- polling ---------------------------------------------------------------------------

    async def _every(self, interval: float, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` now and every `interval`; after a failure sooner (1 s doubling), and log
        each distinct problem once (a wrong password must not log a line per poll)."""
        failures = 0
        while True:
            try:
                await step()
            except UpstreamError as exc:
                failures += 1
                self._note_problem(what, str(exc), None)
            except Exception as exc:  # a sink refusing, or a bug: the traceback says where
                failures += 1
                self._note_problem(what, f"{type(exc).__name__}: {exc}", exc)
            else:
                failures = 0
                if self._problems.pop(what, None) is not None:
                    log.info("erp_problem_solved", erp=self.erp.name, step=what)
            await trio.sleep(min(interval, 2.0 ** (failures - 1)) if failures else interval)

    def _note_problem(self, what: str, detail: str, error: Exception | None) -> None:
        if self._problems.get(what) != detail:
            log.error("erp_problem", erp=self.erp.name, step=what, problem=detail, exc_info=error)
        self._problems[what] = detail

    async def _poll_stock(self, client: SelectLineClient) -> None:
        mapping = stock_locations(self.erp, self.locations())
        if not mapping:
            return
        warehouses = await client.warehouses()
        articles = await client.articles()
        stocks = await client.stocks()
        # Before the fulfilments are read: one that ships after this is a move after the
        # count (taken off again), one that shipped before is no longer added back.
        as_of = datetime.fromtimestamp(self._clock(), UTC)
        stocks.extend(await self._units_in_pick(client, mapping))
        reading = stock_reports(
            stocks,
            articles,
            (w.Number for w in warehouses if not w.InactiveFlag),
            mapping,
            sku=self.erp.sku,
            as_of=as_of,
        )
        for problem in reading.problems:
            self.metrics.skipped.labels(self.erp.name, problem.kind).inc()
            seen = (problem.kind, problem.article, problem.warehouse)
            if seen not in self._seen_bad_rows:
                self._seen_bad_rows.add(seen)
                log.warning(
                    "erp_bad_stock_row",
                    erp=self.erp.name,
                    kind=problem.kind,
                    article=problem.article,
                    warehouse=problem.warehouse,
                    problem=problem.detail,
                )
        for report in reading.reports:
            # An unchanged report would only store the same counts again (a 100,000-row
            # event per poll); a changed one goes whole, as the complete report it is.
            if self._last_counts.get(report.location) == report.counts:
                continue
            await self.sink.stock_report(report)
            self._last_counts[report.location] = report.counts
        self.metrics.stock_polls.labels(self.erp.name).inc()

    async def _units_in_pick(
        self, client: SelectLineClient, mapping: dict[str, tuple[str, ...]]
    ) -> list[Stock]:
        """Units on the delivery notes of `adapter = "selectline"` locations' fulfilments that
        somsd has not shipped yet, as stock rows to add back: the ERP books a note's units out
        when it is made, while somsd holds them reserved until its fulfilment ships. Counted
        twice they would hide sellable stock for as long as the warehouse takes; dropped as
        soon as the ERP has done the note, somsd's own booking of the shipment would take them
        off a second time."""
        from actors.selectline_location import (  # it imports this module
            delivery_reference,
            open_fulfilments,
            shipment_of,
        )

        picking = [
            location.name
            for location in self.locations()
            if location.adapter == "selectline"
            and location.name in mapping
            and location.erp in (None, self.erp.name)
        ]
        reserved = [f for name in picking for f in await open_fulfilments(self.store, name)]
        if not reserved:
            return []
        by_reference = {delivery_reference(f.order_number, shipment_of(f)): f for f in reserved}
        # A day's margin: the ERP dates a note in its own time zone, somsd in UTC.
        since = min(f.created_at for f in reserved).date() - timedelta(days=1)
        rows: list[Stock] = []
        for note in await client.documents_in_state("L", "All", since=since):
            fulfilment = by_reference.get(document_reference(note) or "")
            if fulfilment is None:
                continue
            warehouse = mapping[fulfilment.location][0]
            rows.extend(
                Stock(ArticleNumber=p.ArticleNumber, Number=warehouse, AvailableStock=p.Quantity)
                for p in await client.positions(note.key)
                if p.PositionKind == "A" and p.ArticleNumber and (p.Quantity or _ZERO) > 0
            )
        return rows

    async def _poll_payments(self, client: SelectLineClient) -> None:
        for item in await client.open_items():
            if not item.YourOrder:
                continue
            state = await self._order_by_number(item.YourOrder)
            if state is None:
                continue
            payment = payment_from_open_item(self.erp.name, item, state)
            if payment is None:
                continue
            action = RecordPayment(
                amount=payment.amount, payment_id=payment.payment_id, reference=payment.reference
            )
            try:
                await self._command(state.order_id, action)
            except DomainError as exc:  # already recorded (a race with a redelivery), or refused
                log.info(
                    "erp_payment_not_recorded",
                    erp=self.erp.name,
                    order=state.order_id,
                    reason=str(exc),
                )
                continue
            self.metrics.payments.labels(self.erp.name).inc()
            log.info(
                "erp_payment_recorded",
                erp=self.erp.name,
                order_id=state.order_id,
                amount=str(payment.amount),
                open_item=item.OpenItemNumber,
            )

    async def _order_by_number(self, number: str) -> OrderState | None:
        blob = await self.store.read(partial(fetch_state_by_number, number=number))
        return None if blob is None else decode_state(blob)

    # -- documents out ---------------------------------------------------------------------

    async def _deliver(self, client: SelectLineClient, entry: OutboxEntry) -> None:
        try:
            effect = decode_effect(entry.payload)
        except msgspec.DecodeError as exc:
            raise PermanentUpstreamError(
                self.target, f"{self.target}: unreadable outbox entry: {exc}", operation="decode"
            ) from exc
        async with self.order_lock(effect.order_id):
            match effect:
                case PostSalesOrder():
                    await self._post_sales_order(client, effect)
                case PostShipment():
                    await self._post_shipment(client, effect)
                case PostCreditNote():
                    await self._post_credit_note(client, effect)
                case CancelErpOrder():
                    await self._cancel(client, effect)
                case AttachDocument():
                    await self._attach(client, effect)

    def order_lock(self, order_id: str) -> trio.Lock:
        """Deliveries of one order run one at a time; a `selectline` location's delivery
        notes (`actors.selectline_location`) take the same lock."""
        return self._order_locks.setdefault(order_id, trio.Lock())

    async def order_by_number(self, number: str) -> OrderState | None:
        return await self._order_by_number(number)

    async def sales_order(self, client: SelectLineClient, number: str) -> DocumentReadModel | None:
        return await self._sales_order(client, number)

    async def record(self, order_id: str, kind: str, key: str, cause: str) -> None:
        await self._record(order_id, kind, key, cause)

    def not_posted_yet(self, number: str) -> TransientUpstreamError:
        return self._not_posted_yet(number)

    async def create_delivery_note(
        self,
        client: SelectLineClient,
        sales_order_key: str,
        wanted: Sequence[tuple[DocumentPositionReadModel, Decimal]],
    ) -> str:
        """Create a delivery note L, the sales order's successor taking over the `wanted`
        (position, quantity) pairs; returns its key. It is not labelled yet (see
        `label_delivery_note`)."""
        created = await client.create_successor(
            sales_order_key,
            SuccessorsDocumentData(
                DocumentKindDestination="L",
                Positions=tuple(
                    StoreInformationUpdate(
                        Identifier=p.Identifier, ArticleNumber=p.ArticleNumber, Quantity=q
                    )
                    for p, q in wanted
                ),
            ),
        )
        self.metrics.documents.labels(self.erp.name, "L").inc()
        return created.DocumentKey

    async def _command(self, order_id: str, action: RecordPayment | RecordErpDocument) -> None:
        def command(reply: Reply[OrderState]) -> OrderCommand:
            return OrderCommand(order_id, action, f"erp/{self.erp.name}", reply)

        await self.desk.ask(command)

    async def _record(self, order_id: str, kind: str, key: str, cause: str) -> None:
        action = RecordErpDocument(system=self.erp.name, kind=kind, key=key, cause=cause)
        await self._command(order_id, action)

    async def _article_number(self, client: SelectLineClient, sku: str) -> str:
        if self.erp.sku == "number":
            return sku
        found = await client.articles_by_gtin(sku)
        if not found:
            raise PermanentUpstreamError(
                self.target, f"{self.target}: no article with GTIN {sku}", operation="GET /Articles"
            )
        return found[0].Number

    async def _customer_number(self, client: SelectLineClient, effect: PostSalesOrder) -> str:
        for customer in await client.customers(EMail1=effect.email):
            if customer.Number:
                return customer.Number
        first, _, last = effect.name.rpartition(" ")
        created = await client.create_customer(
            Customer(
                FirstName=first or None,
                LastName=last,
                Company=effect.company,
                IsPrivatePerson=effect.company is None,
                Address=CustomerAddress(
                    Street=effect.street,
                    City=effect.city,
                    ZipCode=effect.zip,
                    CountryId=effect.country,
                ),
                Contact=CustomerContact(EMail1=effect.email),
            )
        )
        return created.CustomerNumber

    async def _sales_order(self, client: SelectLineClient, number: str) -> DocumentReadModel | None:
        found = await client.documents(KindFlag="F", BusinessPartnerContract=number)
        return found[0] if found else None

    async def _add_lines(
        self,
        client: SelectLineClient,
        key: str,
        lines: Sequence[ErpLine],
        shipping_price: Decimal | None,
    ) -> None:
        """Add the positions `key` does not have yet, in order (resuming a half-built one)."""
        positions = await client.positions(key)
        have_articles = sum(1 for p in positions if p.PositionKind == "A")
        articles = [line for line in lines if line.line is not None]
        for line in articles[have_articles:]:
            await client.add_article(
                key,
                ArticlePositionItem(
                    ArticleNumber=await self._article_number(client, line.sku),
                    CalculatedQuantityValue=Decimal(line.quantity),
                    UnitPrice=line.unit_price,
                    TaxRate=line.tax_rate,
                    Name=line.name,
                ),
            )
        has_shipping = any(p.PositionKind == "E" for p in positions)
        if shipping_price is not None and shipping_price > 0 and not has_shipping:
            await client.add_shipping(
                key,
                DocumentPositionWithShippingItemCreateModel(
                    ArticleNumber=self.erp.shipping_article, UnitPrice=shipping_price
                ),
            )

    async def _post_sales_order(self, client: SelectLineClient, effect: PostSalesOrder) -> None:
        existing = await self._sales_order(client, effect.number)
        if existing is not None:
            key = existing.key
        else:
            customer = await self._customer_number(client, effect)
            created = await client.create_document(
                DocumentCreateModel(
                    KindFlag="F",
                    Date=effect.placed_at.date().isoformat(),
                    CurrencyCode=effect.currency,
                    PriceKindFlag="B",  # somsd's prices are gross
                    BusinessPartner=DocumentDetailBusinessPartner(
                        BusinessPartnerContract=effect.number,
                        BusinessPartnerContractDate=effect.placed_at.date().isoformat(),
                        Address=DocumentDetailAddress(Number=customer),
                    ),
                    HeaderText=f"Shop order {effect.number}",
                )
            )
            key = created.DocumentKey
            self.metrics.documents.labels(self.erp.name, "F").inc()
        await self._add_lines(client, key, effect.lines, effect.shipping_price)
        await self._record(effect.order_id, "F", key, "order")

    async def _post_shipment(self, client: SelectLineClient, effect: PostShipment) -> None:
        order = await self._sales_order(client, effect.number)
        if order is None:
            raise self._not_posted_yet(effect.number)
        reference = f"{effect.number}/{effect.shipment_id}"
        positions = await client.positions(order.key)
        wanted = _shipment_positions(positions, effect)
        deliveries = [d for d in await client.successors(order.key) if d.KindFlag == "L"]
        delivery = next((d for d in deliveries if document_reference(d) == reference), None)
        if delivery is None:
            delivery = await self._adopt_unlabelled(client, deliveries, wanted)
        if delivery is None:
            delivery_key = await self.create_delivery_note(client, order.key, wanted)
        else:
            delivery_key = delivery.key
        await label_delivery_note(client, delivery_key, order, effect.number, reference)
        await self._record(effect.order_id, "L", delivery_key, f"shipment:{effect.shipment_id}")
        invoices = [d for d in await client.successors(delivery_key) if d.KindFlag == "R"]
        if invoices:
            invoice_key = invoices[0].key
        else:
            lines = [p for p in await client.positions(delivery_key) if (p.Quantity or _ZERO) > 0]
            created = await client.create_successor(
                delivery_key,
                SuccessorsDocumentData(
                    DocumentKindDestination="R",
                    Positions=tuple(
                        StoreInformationUpdate(
                            Identifier=p.Identifier,
                            ArticleNumber=p.ArticleNumber,
                            Quantity=p.Quantity,
                        )
                        for p in lines
                    ),
                ),
            )
            self.metrics.documents.labels(self.erp.name, "R").inc()
            invoice_key = created.DocumentKey
        await self._record(effect.order_id, "R", invoice_key, f"shipment:{effect.shipment_id}")

    async def _adopt_unlabelled(
        self,
        client: SelectLineClient,
        deliveries: Sequence[DocumentReadModel],
        wanted: Sequence[tuple[DocumentPositionReadModel, Decimal]],
    ) -> DocumentReadModel | None:
        """A delivery note created for this shipment whose labelling answer was lost: not yet
        labelled with a shipment reference, and holding exactly this shipment's quantities."""
        # Article positions only: the shipping position goes along only while it is open, so
        # a retry after a lost answer no longer asks for it.
        expected = sorted((p.Identifier, q) for p, q in wanted if p.PositionKind == "A")
        for delivery in deliveries:
            if "/" in (document_reference(delivery) or ""):
                continue
            lines = await client.positions(delivery.key)
            got = sorted(
                (p.PredecessorIdentifier or "", p.Quantity or _ZERO)
                for p in lines
                if (p.Quantity or _ZERO) > 0 and p.PositionKind == "A"
            )
            if got == expected:
                return delivery
        return None

    async def _post_credit_note(self, client: SelectLineClient, effect: PostCreditNote) -> None:
        found = await client.documents(
            KindFlag="G", BusinessPartnerReferenceNumber=effect.reference
        )
        if found:
            key = found[0].key
        else:
            order = await self._sales_order(client, effect.number)
            if order is None:
                raise self._not_posted_yet(effect.number)
            address = order.BusinessPartner.Address if order.BusinessPartner else None
            created = await client.create_document(
                DocumentCreateModel(
                    KindFlag="G",
                    PriceKindFlag="B",
                    BusinessPartner=DocumentDetailBusinessPartner(
                        BusinessPartnerContract=effect.number,
                        BusinessPartnerReferenceNumber=effect.reference,
                        Address=address,
                    ),
                    HeaderText=f"Credit note {effect.index} for shop order {effect.number}",
                )
            )
            key = created.DocumentKey
            self.metrics.documents.labels(self.erp.name, "G").inc()
        shipping = sum((line.unit_price for line in effect.lines if line.line is None), _ZERO)
        await self._add_lines(client, key, effect.lines, shipping or None)
        await self._record(effect.order_id, "G", key, f"credit:{effect.index}")

    def _not_posted_yet(self, number: str) -> TransientUpstreamError:
        """Deliveries of one order may run in any order: what follows the F waits for it."""
        return TransientUpstreamError(
            self.target,
            f"{self.target}: sales order for {number} not in the ERP yet; will retry",
            operation="GET /Documents",
        )

    async def _sales_order_recorded(self, order_id: str) -> bool:
        blob = await self.store.read(partial(fetch_state, order_id=order_id))
        if blob is None:
            return False
        return any(
            d.system == self.erp.name and d.kind == "F" and d.cause == "order"
            for d in decode_state(blob).erp_documents
        )

    async def _attach(self, client: SelectLineClient, effect: AttachDocument) -> None:
        if self.documents is None:
            raise PermanentUpstreamError(
                self.target,
                f"{self.target}: attach_documents needs [documents] enabled",
                operation="attach",
            )
        blob = await self.store.read(partial(fetch_state, order_id=effect.order_id))
        state = None if blob is None else decode_state(blob)
        issued = None
        if state is not None and effect.kind == "invoice":
            issued = state.invoice
        elif state is not None and 0 < effect.index <= len(state.credit_notes):
            issued = state.credit_notes[effect.index - 1]
        if issued is None:
            raise PermanentUpstreamError(
                self.target,
                f"{self.target}: order {effect.order_id} has no {effect.kind} {effect.index}",
                operation="attach",
            )
        record = await self.documents.record(issued.number)
        if record is None:
            raise TransientUpstreamError(
                self.target,
                f"{self.target}: {issued.number} is not rendered yet; will retry",
                operation="attach",
            )
        if not record.valid:
            log.warning("erp_document_not_attached", number=issued.number, reason="invalid")
            return
        pdf = await self.documents.file(issued.number, "application/pdf")
        if pdf is None:
            raise PermanentUpstreamError(
                self.target, f"{self.target}: {issued.number} has no PDF", operation="attach"
            )
        if effect.kind == "invoice":
            target = await self._sales_order(client, effect.number)
            label = f"somsd Rechnung {issued.number}"
        else:
            reference = f"{effect.number}/G{effect.index}"
            found = await client.documents(KindFlag="G", BusinessPartnerReferenceNumber=reference)
            target = found[0] if found else None
            label = f"somsd Gutschrift {issued.number}"
        if target is None:
            raise self._not_posted_yet(effect.number)
        filename = f"{issued.number}.pdf"
        journal = next((j for j in await client.journals(target.key) if j.Label == label), None)
        if journal is not None and journal.Identifier:
            journal_id = journal.Identifier
        else:
            pdf_file = next(f for f in record.files if f.media_type == "application/pdf")
            created = await client.add_journal(
                target.key,
                JournalCreateModel(
                    Date=datetime.fromtimestamp(self._clock(), UTC).isoformat(),
                    StatusId=JOURNAL_STATUS_ID,
                    Label=label,
                    Text=f"{filename} from somsd, SHA-256 {pdf_file.sha256}",
                ),
            )
            journal_id = created.JournalIdentifier
        attached = await client.attachments(journal_id)
        if not any(a.Filename == filename for a in attached):
            await client.add_attachment(journal_id, filename, pdf, "application/pdf")
            self.metrics.attachments.labels(self.erp.name, effect.kind).inc()
        log.info("erp_document_attached", number=issued.number, document=target.key)

    async def _cancel(self, client: SelectLineClient, effect: CancelErpOrder) -> None:
        order = await self._sales_order(client, effect.number)
        if order is None:
            if await self._sales_order_recorded(effect.order_id):
                return  # deleted by an earlier attempt whose answer was lost
            raise self._not_posted_yet(effect.number)
        if self.erp.cancel_action == "delete":
            await client.delete_document(order.key)
        else:
            await client.set_status(order.key, EnumerationValue(Value=3, Name="CompletedManually"))
        await self._record(effect.order_id, "F", order.key, "cancel")


# [CRM_Status].Id of the journals somsd writes; 1 is the first status of a fresh install
# ("aufgenommen"). The spec requires one and offers no list endpoint for it.
JOURNAL_STATUS_ID: Final = 1


def document_reference(document: DocumentReadModel) -> str | None:
    """A document's `BusinessPartnerReferenceNumber`: a delivery note's shipment reference."""
    partner = document.BusinessPartner
    return partner.BusinessPartnerReferenceNumber if partner else None


async def label_delivery_note(
    client: SelectLineClient,
    key: str,
    sales_order: DocumentReadModel,
    number: str,
    reference: str,
) -> None:
    """Label delivery note `key` with the order `number` and its shipment `reference` (what a
    retry looks for before creating another), and the sales order's address."""
    partner = sales_order.BusinessPartner
    await client.update_document(
        key,
        DocumentUpdateModel(
            BusinessPartner=DocumentDetailBusinessPartner(
                BusinessPartnerContract=number,
                BusinessPartnerReferenceNumber=reference,
                Address=partner.Address if partner else None,
            )
        ),
    )


def _shipment_positions(
    positions: Sequence[DocumentPositionReadModel], effect: PostShipment
) -> list[tuple[DocumentPositionReadModel, Decimal]]:
    """The sales order's positions with this shipment's quantities: order line i is the i-th
    article position (somsd adds them in line order); the first shipment takes the shipping
    position along, so the first invoice bills it."""
    articles = [p for p in positions if p.PositionKind == "A"]
    has_shipping = any(p.PositionKind == "E" for p in positions)
    if len(articles) < effect.order_lines or (effect.shipping and not has_shipping):
        # Its own delivery is still adding positions (or retrying a lost answer).
        raise TransientUpstreamError(
            "erp",
            f"sales order for {effect.number} is not complete in the ERP yet; will retry",
            operation="GET /Documents/{key}/Positions",
        )
    wanted: list[tuple[DocumentPositionReadModel, Decimal]] = []
    for line in effect.lines:
        if line.line >= len(articles):
            raise PermanentUpstreamError(
                "erp",
                f"sales order for {effect.number} has no position for order line {line.line}",
                operation="POST /Documents/{key}/Successors",
            )
        wanted.append((articles[line.line], Decimal(line.quantity)))
    if effect.first:
        # Still open: a `selectline` location's delivery note may have taken it already.
        wanted.extend(
            (p, Decimal(1))
            for p in positions
            if p.PositionKind == "E"
            and (p.Quantity or _ZERO) - (p.QuantityTakenOverByDocumentSuccessor or _ZERO) > 0
        )
    return wanted
