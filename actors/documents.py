"""The document actor: renders every issued invoice and credit note off the hot path.

How a document gets made, and why it is made exactly once:

1. The order desk commits `InvoiceIssued`/`CreditNoteIssued`; `document_effects` (one line in
   the daemon's `all_order_effects`) adds an outbox item for target `documents` in the same
   transaction. The planner runs before the store numbers the event, so the item names the
   order and a hash of the event, not the number.
2. The dispatcher delivers the item here (`deliver`): read the order's stream, find the
   numbered event, render PDF + CII (pure `somsd.documents`, in a thread), validate the XML in
   the validator worker (its own process), and append `DocumentRendered` (file names, sizes,
   SHA-256, the validation outcome) to stream `document-<number>` with idempotency key
   ("documents", number), the PDF and XML bytes as blobs of the event store in the same
   transaction. So every daemon sharing a PostgreSQL store serves them, and they outlive the
   daemon that rendered them. Documents rendered by an older somsd are files under
   `<data_dir>/documents/` (content-addressed); those are still served while they match their
   hash.
3. A crash anywhere before the append leaves the outbox item pending and nothing stored: the
   next run renders again, gets the same bytes (rendering is deterministic) and appends once.
   After the append, the redelivery finds the stream and stops. So each document is rendered
   into the record once, and its stored hash matches.

An invoice whose XML fails validation is recorded with `valid=false` and its findings: it is
not handed out (`DocumentReader.for_invoice` returns None), the operator sees it in
`GET /v1/documents/invalid`, the log says `document_invalid` and
`somsd_documents_invalid_total` counts it.

`DocumentReader` is what other actors use (the invoice mail attaches `for_invoice(number)`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Final, Literal

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.responses import Response

from actors.blobs import LegacyFiles, stored_bytes
from actors.channel import DRIVERS, channel_target
from actors.effects import OrderEffects
from actors.outbox import OutboxDispatcher
from adapters.errors import PermanentUpstreamError, TransientUpstreamError
from somsd.api import ApiError, ApiRoute, json_response, query_int
from somsd.config import Config, DocumentsConfig
from somsd.documents.client import ValidatorPool, ValidatorUnavailable, default_validator_workers
from somsd.documents.model import InvoiceRequest, Seller
from somsd.documents.render import render_invoice
from somsd.documents.validation import Finding
from somsd.domain.channel_sync import ChannelEffect
from somsd.domain.events import (
    UNNUMBERED,
    CreditNoteIssued,
    InvoiceIssued,
    LinesShipped,
    OrderEvent,
    OrderReceived,
    PaymentRecorded,
    decode_event,
    encode_event,
)
from somsd.domain.numbering import parse_number
from somsd.domain.order import Order
from somsd.domain.state import OrderState
from somsd.projections.orders import order_stream
from somsd.store import (
    MAX_BLOB_BYTES,
    Connection,
    EventStore,
    IdempotencyKey,
    NewEvent,
    OutboxEntry,
    OutboxItem,
    blob_key,
    query_payloads_containing,
)

__all__ = [
    "DOCUMENTS_TARGET",
    "DocumentActor",
    "DocumentFile",
    "DocumentReader",
    "DocumentRendered",
    "DocumentRoutes",
    "IssuedFiles",
    "document_effects",
    "legacy_documents",
    "plan_documents",
    "seller_for",
]

log = structlog.get_logger("actors.documents")

DOCUMENTS_TARGET: Final = "documents"
DOCUMENT_STREAM_PREFIX: Final = "document-"
ACTOR: Final = "documents"
_MAX_ID: Final = 40
_ORDER_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")

Media = Literal["application/pdf", "application/xml"]


class DocumentJob(msgspec.Struct, frozen=True):
    """The outbox payload: which order, which of its issued events (hash of the unnumbered
    event, as the planner saw it)."""

    order_id: str
    event_hash: str


class DocumentFile(msgspec.Struct, frozen=True):
    name: str  # "RE-2026-000001.pdf", "factur-x.xml" ...
    media_type: str
    sha256: str
    size: int


class DocumentRendered(msgspec.Struct, frozen=True, kw_only=True):
    """What was rendered for one issued invoice or credit note; the GoBD record of its files."""

    number: str
    kind: str  # invoice | credit_note
    order_id: str
    issue_date: date
    profile: str  # EN16931 | XRECHNUNG
    files: tuple[DocumentFile, ...]
    valid: bool
    rule_sets: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()


class DocumentList(msgspec.Struct, frozen=True):
    order_id: str
    documents: tuple[DocumentRendered, ...]


class IssuedFiles(msgspec.Struct, frozen=True):
    """The reader API's answer: a valid document's bytes."""

    number: str
    pdf: bytes
    xml: bytes
    xml_name: str


def _event_hash(event: InvoiceIssued | CreditNoteIssued) -> str:
    unnumbered = msgspec.structs.replace(event, number=UNNUMBERED)
    return hashlib.sha256(encode_event(unnumbered)).hexdigest()[:32]


def plan_documents(before: OrderState | None, events: Sequence[OrderEvent]) -> list[OutboxItem]:
    """One `documents` outbox item per issued invoice or credit note among `events`."""
    items: list[OutboxItem] = []
    order_id = before.order_id if before is not None else None
    for event in events:
        if isinstance(event, OrderReceived):
            order_id = event.order_id
        elif isinstance(event, InvoiceIssued | CreditNoteIssued) and order_id is not None:
            digest = _event_hash(event)
            items.append(
                OutboxItem(
                    target=DOCUMENTS_TARGET,
                    payload=msgspec.json.encode(DocumentJob(order_id, digest)),
                    idempotency_key=f"documents:{order_id}:{digest}",
                )
            )
    return items


def document_effects(enabled: Callable[[], bool]) -> OrderEffects:
    """The order desk's planner for documents; plans nothing while `[documents]` is off (no
    actor would deliver the items)."""

    def effects(
        channel: str, before: OrderState | None, events: Sequence[OrderEvent]
    ) -> list[OutboxItem]:
        return plan_documents(before, events) if enabled() else []

    return effects


def validator_workers(config: DocumentsConfig) -> int:
    """`validator_workers` from the config, or sized to the machine."""
    return config.validator_workers or default_validator_workers()


def seller_for(config: DocumentsConfig, channel: str, config_dir: Path) -> Seller:
    """The seller template for `channel`: `[documents]` with the channel's overrides."""
    values: dict[str, object] = {
        "name": config.seller_name,
        "street": config.street,
        "zip": config.zip,
        "city": config.city,
        "country": config.country,
        "vat_id": config.vat_id,
        "tax_number": config.tax_number,
        "email": config.email,
        "contact_name": config.contact_name,
        "phone": config.phone,
        "bank_name": config.bank_name,
        "iban": config.iban,
        "bic": config.bic,
        "footer": config.footer,
        "payment_terms_days": config.payment_terms_days,
    }
    logo = config.logo
    for template in config.template:
        if template.channel != channel:
            continue
        for field in msgspec.structs.fields(template):
            value = getattr(template, field.name)
            if value is None or field.name == "channel":
                continue
            if field.name == "logo":
                logo = value
            else:
                values["name" if field.name == "seller_name" else field.name] = value
    if logo:
        values["logo_png"] = (config_dir / logo).read_bytes()
    return msgspec.convert(values, Seller)


def legacy_documents(config: Config) -> LegacyFiles:
    """Where somsd before blobs in the event store kept rendered documents."""
    return LegacyFiles(Path(config.daemon.data_dir) / "documents")


class DocumentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rendered = Counter(
            "somsd_documents_rendered_total",
            "Invoices and credit notes rendered (PDF + e-invoice), by kind and profile",
            ["kind", "profile"],
            registry=registry,
        )
        self.invalid = Counter(
            "somsd_documents_invalid_total",
            "Documents whose e-invoice failed validation and were not handed out",
            ["kind"],
            registry=registry,
        )
        self.render_seconds = Histogram(
            "somsd_documents_render_seconds",
            "Time to render one PDF + CII + embed",
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.validate_seconds = Histogram(
            "somsd_documents_validation_seconds",
            "Time the validator worker took for one e-invoice (XSD + schematron)",
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.validator_restarts = Gauge(
            "somsd_documents_validator_restarts",
            "Times the validator worker process was started again after it died",
            registry=registry,
        )


def document_stream(number: str) -> str:
    return DOCUMENT_STREAM_PREFIX + number


def valid_number(number: str) -> bool:
    if len(number) > _MAX_ID or not number.isascii():
        return False
    try:
        parse_number(number)
    except ValueError:
        return False
    return True


class DocumentReader:
    """Read-only access to rendered documents, for routes and other actors (the mail helper).

    The bytes are the event store's blobs; `legacy` holds the files an older somsd wrote."""

    def __init__(self, store: EventStore, legacy: LegacyFiles) -> None:
        self.store = store
        self.legacy = legacy

    async def content(self, item: DocumentFile) -> bytes | None:
        """One rendered file's bytes, or None when they are stored nowhere (any more)."""
        return await stored_bytes(self.store, item.sha256, self.legacy.path_of(item.sha256))

    async def _present(self, number: str, item: DocumentFile) -> bytes:
        content = await self.content(item)
        if content is None:
            # Recorded as rendered but gone: not "not rendered yet", and never a guess.
            raise OSError(f"document {number}: {item.name} (SHA-256 {item.sha256}) is not stored")
        return content

    async def record(self, number: str) -> DocumentRendered | None:
        if not valid_number(number):
            return None
        stored = await self.store.read_stream(document_stream(number))
        return stored[0].decode(DocumentRendered) if stored else None

    async def for_order(self, order_id: str) -> list[DocumentRendered] | None:
        stored = await self.store.read_stream(order_stream(order_id))
        if not stored:
            return None
        records: list[DocumentRendered] = []
        for entry in stored:
            if entry.type in ("InvoiceIssued", "CreditNoteIssued"):
                event = decode_event(entry.payload)
                assert isinstance(event, InvoiceIssued | CreditNoteIssued)
                record = await self.record(event.number)
                if record is not None:
                    records.append(record)
        return records

    async def file(self, number: str, media: Media) -> bytes | None:
        record = await self.record(number)
        if record is None:
            return None
        for item in record.files:
            if item.media_type == media:
                return await self.content(item)
        return None

    async def for_invoice(self, number: str) -> IssuedFiles | None:
        """The PDF and XML of invoice or credit note `number`, if rendered and valid.

        None while it is not rendered yet, and for a document that failed validation (it
        must not be sent)."""
        record = await self.record(number)
        if record is None or not record.valid:
            return None
        pdf = next(item for item in record.files if item.media_type == "application/pdf")
        xml = next(item for item in record.files if item.media_type == "application/xml")
        return IssuedFiles(
            number, await self._present(number, pdf), await self._present(number, xml), xml.name
        )

    async def invalid(self) -> list[DocumentRendered]:
        """Every document whose e-invoice failed validation, oldest first."""
        payloads = await self.store.read(_invalid_payloads)
        return [msgspec.json.decode(payload, type=DocumentRendered) for payload in payloads]


def _invalid_payloads(conn: Connection) -> list[bytes]:
    return query_payloads_containing(
        conn,
        stream_prefix=DOCUMENT_STREAM_PREFIX,
        type_="DocumentRendered",
        fragment=b'"valid":false',
        limit=10000,
    )


def _prepaid(events: Sequence[OrderEvent], issued: InvoiceIssued) -> Decimal:
    """What the customer had paid that this invoice has not already been settled by."""
    paid = Decimal(0)
    invoiced = Decimal(0)
    for event in events:
        if event is issued:
            break
        if isinstance(event, PaymentRecorded):
            paid += event.amount
        elif isinstance(event, InvoiceIssued):
            invoiced += event.document.gross
    return max(Decimal(0), min(issued.document.gross, paid - invoiced))


def invoice_request(
    events: Sequence[OrderEvent],
    issued: InvoiceIssued | CreditNoteIssued,
    buyer_references: dict[str, str],
) -> InvoiceRequest:
    received = next(event for event in events if isinstance(event, OrderReceived))
    order = received.order
    delivered: date | None = None
    for event in events:
        if event is issued:
            break
        if isinstance(event, LinesShipped):
            delivered = event.at.date()
    customer_id = issued.document.customer.id or ""
    common = {
        "number": issued.number,
        "issue_date": issued.issue_date,
        "document": issued.document,
        "order_number": order.number,
        "delivery_date": delivered,
        "shipping_address": order.shipping_address,
        "payment_method": order.payment.method,
        "buyer_reference": buyer_references.get(customer_id, ""),
    }
    if isinstance(issued, CreditNoteIssued):
        return InvoiceRequest(**common, preceding_invoice=issued.invoice_number)  # type: ignore[arg-type]
    return InvoiceRequest(**common, prepaid=_prepaid(events, issued))  # type: ignore[arg-type]


PUBLIC_DOCUMENT_PATH: Final = "/v1/public/documents/"


def _link_signature(key: bytes, number: str, expires: int) -> str:
    return hmac.new(key, f"{number}:{expires}".encode(), hashlib.sha256).hexdigest()


def document_link(public_url: str, key: bytes, number: str, expires: int) -> str:
    """The customer's link to invoice `number`'s PDF, valid until `expires` (unix time)."""
    signature = _link_signature(key, number, expires)
    base = public_url.rstrip("/")
    return f"{base}{PUBLIC_DOCUMENT_PATH}{number}?expires={expires}&sig={signature}"


def link_is_valid(key: bytes, number: str, expires: int, signature: str, now: float) -> bool:
    """A link opens its document until it expires, and only with its own signature."""
    if now > expires or not signature.isascii():
        return False
    return hmac.compare_digest(_link_signature(key, number, expires), signature)


def link_note(
    config: DocumentsConfig, record: DocumentRendered, channel: str, order: Order, now: float
) -> OutboxItem | None:
    """The shop order note with the invoice link, for a valid document of a polled channel."""
    if config.public_url is None or config.link_key_file is None or not record.valid:
        return None
    key = config.link_key_file.secret.reveal().strip().encode()
    expires = int(now + config.link_valid_for.seconds)
    link = document_link(config.public_url, key, record.number, expires)
    until = datetime.fromtimestamp(expires, UTC).date().isoformat()
    title = "Rechnungskorrektur" if record.kind == "credit_note" else "Rechnung"
    effect = ChannelEffect(
        kind="note",
        order_id=record.order_id,
        external_id=order.external_id,
        number=order.number,
        key=f"channel/{channel}/{record.order_id}/note/document-{record.number}",
        note=f"{title} {record.number} als PDF (bis {until}): {link}",
    )
    return OutboxItem(channel_target(channel), msgspec.json.encode(effect), effect.key)


class DocumentActor:
    """Registers the `documents` outbox target and renders what is delivered to it."""

    name = "documents"

    def __init__(
        self,
        config: Config,
        *,
        store: EventStore,
        dispatcher: OutboxDispatcher,
        registry: CollectorRegistry,
    ) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.reader = DocumentReader(store, legacy_documents(config))
        self.metrics = DocumentMetrics(registry)
        self.validator = ValidatorPool(
            validator_workers(config.documents),
            timeout=config.documents.validation_timeout.seconds,
        )
        self._config_dir = Path(config.source).parent
        self._running = False

    def _limit(self) -> int:
        # One more delivery than workers: one renders while every worker checks another.
        return self.validator.size + 1

    def configure(self, config: Config) -> None:
        """A reload: documents issued from now on use the new seller, templates, buyer
        references and worker count; what is rendered already stays as it was (GoBD)."""
        old_limit = self._limit()
        self.config = config
        self._config_dir = Path(config.source).parent
        self.validator.resize(
            validator_workers(config.documents),
            timeout=config.documents.validation_timeout.seconds,
        )
        if self._running and self._limit() != old_limit:
            self.dispatcher.register(DOCUMENTS_TARGET, self.deliver, limit=self._limit())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(self.validator.start)
        self.dispatcher.register(DOCUMENTS_TARGET, self.deliver, limit=self._limit())
        self._running = True
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._running = False
            self.dispatcher.unregister(DOCUMENTS_TARGET, self.deliver)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.validator.close)

    def _polled(self, channel: str) -> bool:
        """Whether the channel's shop takes order notes from somsd (a polled shop)."""
        section = next((c for c in self.config.channel if c.name == channel), None)
        return section is not None and section.kind in DRIVERS

    async def deliver(self, entry: OutboxEntry) -> None:
        job = msgspec.json.decode(entry.payload, type=DocumentJob)
        stored = await self.store.read_stream(order_stream(job.order_id))
        events = [decode_event(item.payload) for item in stored]
        issued = next(
            (
                event
                for event in events
                if isinstance(event, InvoiceIssued | CreditNoteIssued)
                and _event_hash(event) == job.event_hash
            ),
            None,
        )
        if issued is None or issued.number == UNNUMBERED:
            log.error("document_event_missing", order_id=job.order_id, event=job.event_hash)
            return
        if await self.store.read_stream(document_stream(issued.number)):
            return  # recorded by an earlier delivery
        channel = next(e.channel for e in events if isinstance(e, OrderReceived))
        request = invoice_request(events, issued, self.config.documents.buyer_references)
        seller = seller_for(self.config.documents, channel, self._config_dir)

        started = time.perf_counter()
        rendered = await trio.to_thread.run_sync(render_invoice, request, seller)
        self.metrics.render_seconds.observe(time.perf_counter() - started)
        started = time.perf_counter()
        try:
            report = await trio.to_thread.run_sync(self.validator.validate, rendered.xml)
        except ValidatorUnavailable as exc:
            raise TransientUpstreamError("validator", f"validator worker: {exc}") from exc
        finally:
            self.metrics.validator_restarts.set(self.validator.restarts)
        self.metrics.validate_seconds.observe(time.perf_counter() - started)

        for content, name in ((rendered.pdf, "PDF"), (rendered.xml, "e-invoice")):
            if len(content) > MAX_BLOB_BYTES:
                raise PermanentUpstreamError(
                    DOCUMENTS_TARGET,
                    f"{DOCUMENTS_TARGET}: the {name} of {issued.number} is {len(content)} "
                    f"bytes, more than the {MAX_BLOB_BYTES} somsd stores (a smaller logo?)",
                    operation="render",
                )
        pdf_hash = blob_key(rendered.pdf)
        record = DocumentRendered(
            number=issued.number,
            kind=issued.document.kind,
            order_id=job.order_id,
            issue_date=issued.issue_date,
            profile=report.profile,
            files=(
                DocumentFile(
                    f"{issued.number}.pdf", "application/pdf", pdf_hash, len(rendered.pdf)
                ),
                DocumentFile(
                    rendered.xml_name,
                    "application/xml",
                    blob_key(rendered.xml),
                    len(rendered.xml),
                ),
            ),
            valid=report.valid,
            rule_sets=report.rule_sets,
            findings=report.findings,
        )
        order = next(e.order for e in events if isinstance(e, OrderReceived))
        note = (
            link_note(self.config.documents, record, channel, order, time.time())
            if self._polled(channel)
            else None
        )
        await self.store.append(
            document_stream(issued.number),
            [NewEvent("DocumentRendered", msgspec.json.encode(record), {"actor": ACTOR})],
            idempotency=IdempotencyKey(ACTOR, issued.number),
            outbox=[note] if note is not None else [],
            blobs=[rendered.pdf, rendered.xml],
        )
        self.metrics.rendered.labels(record.kind, record.profile).inc()
        if not report.valid:
            self.metrics.invalid.labels(record.kind).inc()
            log.error(
                "document_invalid",
                number=issued.number,
                order_id=job.order_id,
                rules=[finding.rule for finding in report.errors],
            )
        else:
            log.info("document_rendered", number=issued.number, sha256=pdf_hash)


class DocumentRoutes:
    def __init__(
        self, reader: DocumentReader, link_key: Callable[[], bytes | None] = lambda: None
    ) -> None:
        self.reader = reader
        self.link_key = link_key  # `[documents] link_key_file`; None: no public links

    async def public(self, request: Request) -> Response:
        """A customer's signed link: the invoice PDF, without a token, until it expires.

        Every refusal is the same 404, so a link cannot be probed for which part is wrong."""
        number = request.path_params["number"]
        key = self.link_key()
        expires = query_int(request.query_params, "expires", 0, 0, 10**11)
        signature = request.query_params.get("sig", "")
        refused = ApiError(404, "document_not_found", "no such document, or the link expired")
        if key is None or not valid_number(number):
            raise refused
        if not link_is_valid(key, number, expires, signature, time.time()):
            raise refused
        files = await self.reader.for_invoice(number)
        if files is None:
            raise refused
        return Response(
            files.pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{number}.pdf"'},
        )

    async def for_order(self, request: Request) -> Response:
        order_id = request.path_params["order_id"]
        if not _ORDER_ID.match(order_id):
            raise ApiError(404, "order_not_found", f"no order {order_id[:60]!r}")
        records = await self.reader.for_order(order_id)
        if records is None:
            raise ApiError(404, "order_not_found", f"no order {order_id!r}")
        return json_response(DocumentList(order_id, tuple(records)))

    async def show(self, request: Request) -> Response:
        number = request.path_params["number"]
        accept = request.headers.get("accept", "application/pdf")
        media: Media = "application/xml" if "xml" in accept else "application/pdf"
        record = await self.reader.record(number)
        if record is None:
            raise ApiError(404, "document_not_found", f"no document {number[:60]!r}")
        if "application/json" in accept:
            return json_response(record)
        data = await self.reader.file(number, media)
        if data is None:
            raise ApiError(404, "document_not_found", f"no {media} for {number!r}")
        return Response(data, media_type=media)

    async def invalid(self, request: Request) -> Response:
        return json_response(await self.reader.invalid())

    def routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(
                "/v1/orders/{order_id}/documents",
                "GET",
                self.for_order,
                "The order's rendered invoices and credit notes: files, SHA-256, validation",
                admin=True,
                responses={200: DocumentList, 404: None},
                tags=("documents",),
            ),
            ApiRoute(
                "/v1/documents/invalid",
                "GET",
                self.invalid,
                "Invoices and credit notes whose e-invoice failed validation (not sent)",
                admin=True,
                responses={200: list[DocumentRendered]},
                tags=("documents",),
            ),
            ApiRoute(
                PUBLIC_DOCUMENT_PATH + "{number}",
                "GET",
                self.public,
                "The customer's signed, expiring link to an invoice or credit-note PDF (the "
                "shop order note's link); no token",
                responses={200: None, 404: None, 422: None},
                query=(
                    (
                        "expires",
                        {"type": "integer", "minimum": 0, "maximum": 10**11},
                        "unix time the link expires at",
                    ),
                    ("sig", "string", "the link's HMAC-SHA256 signature"),
                ),
                tags=("documents",),
            ),
            ApiRoute(
                "/v1/documents/{number}",
                "GET",
                self.show,
                "One document by its number: the PDF (Accept: application/pdf, the default), "
                "its e-invoice (application/xml) or its record (application/json)",
                admin=True,
                responses={200: DocumentRendered, 404: None},
                tags=("documents",),
            ),
        ]
