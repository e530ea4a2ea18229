"""The supplier-invoice actor: inbox folders and the intake route in, decisions and accounting
out, every step an entry of the invoice's hash-chained audit trail.

How an invoice goes through, and why it is processed exactly once:

1. Intake (`receive`): `received` is appended to stream `supplier-invoice-<id>` (the id is
   derived from the file's SHA-256) with idempotency key ("supplier-inbox", sha256) and, in the
   same transaction, the file's bytes as a blob of the event store (so any cluster member
   processes and serves it, and it outlives the daemon that took it in) and an outbox item for
   target `supplier_invoices`. Files taken in by an older somsd are under
   `<data_dir>/supplier-invoices/files/` (content-addressed), still read while they match
   their hash. A second copy of the same file finds the key: nothing new is
   processed, a `duplicate_file` entry records that it came again. A watched folder's file is
   moved to `processed/` only after that commit; a crash before the move sees the file again
   and the key recognises it.
2. Processing (`process`, delivered by the outbox): extract, check, decide; all entries
   (`extracted`, one `check` per check, `decided`) are appended in one transaction at the
   stream version that was read. A crash before the commit leaves the item pending and the
   next run does it again from the start; after the commit, a redelivery finds `decided` and
   stops. An approved invoice's decision carries the outbox item for step 3.
3. Output (`output`): the e-invoice through the outbound builder and the validator worker,
   the postings from the accounting rules and their DATEV bookings; `einvoice` (with the
   file's SHA-256) and `posted` (with the booking day and the bookings) are appended once
   (the e-invoice a blob in the same transaction).
4. DATEV (`actors.supplier_invoices_datev`): once a booking day has ended, its invoices are
   one Buchungsstapel file (per fiscal year), and each trail gets `datev_batch` naming it.

An operator's approval or rejection of a held invoice (`override`) is an entry with who and
why; nothing is changed in place.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram

from actors.blobs import LegacyFiles, stored_bytes, stored_copy
from actors.outbox import OutboxDispatcher
from actors.supplier_invoices_datev import DATEV_TARGET, DatevBatcher
from actors.supplier_invoices_erp import erp_item
from actors.supplier_invoices_purchasing import ErpPurchasing
from actors.supplier_invoices_trail import (
    ACTOR,
    STREAM_PREFIX,
    InvoiceTrails,
    entries_of,
    now,
    stream_of,
)
from adapters.errors import PermanentUpstreamError, TransientUpstreamError
from somsd.config import Config, SupplierInboxConfig
from somsd.documents.client import ValidatorUnavailable, ValidatorWorker
from somsd.store import (
    Connection,
    Duplicate,
    EventStore,
    IdempotencyKey,
    NewEvent,
    OutboxEntry,
    OutboxItem,
    blob_key,
)
from somsd.supplier_invoices.accounting import AccountingRule, AccountingRules, postings_for
from somsd.supplier_invoices.audit import AuditEntry, seal, verify_chain
from somsd.supplier_invoices.checks import (
    CheckResult,
    Decision,
    MatchData,
    decide,
    run_checks,
)
from somsd.supplier_invoices.datev import DatevBooking, booking_from_posting
from somsd.supplier_invoices.einvoice_out import Buyer, NotBuildable, build_supplier_cii
from somsd.supplier_invoices.extract import Extraction, extract
from somsd.supplier_invoices.model import (
    GoodsReceiptLine,
    PurchaseOrderLine,
    SupplierInvoice,
    SupplierRecord,
    Tolerances,
)
from somsd.supplier_invoices.templates import Template, TemplateError, load_template

__all__ = [
    "OUTPUT_TARGET",
    "PROCESS_TARGET",
    "STREAM_PREFIX",
    "InvoiceSummary",
    "SupplierInvoiceActor",
    "verify_audit",
]

log = structlog.get_logger("actors.supplier_invoices")

PROCESS_TARGET: Final = "supplier_invoices"
OUTPUT_TARGET: Final = "supplier_invoices.output"
_ID: Final = re.compile(r"^SI-[0-9a-f]{20}$")
_SCAN_LIMIT: Final = 1_000_000  # events read when the actor builds its indexes at start
_SWEEP_LIMIT: Final = 200  # files taken from a watched folder per sweep

Status = Literal[
    "received", "approved", "held", "rejected", "needs_template", "unreadable", "posted"
]
STATUSES: Final = ("received", "approved", "held", "rejected", "needs_template", "unreadable",
                   "posted")  # fmt: skip


def invoice_id(sha256: str) -> str:
    return f"SI-{sha256[:20]}"


def valid_id(invoice: str) -> bool:
    return bool(_ID.match(invoice))


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


class Received(msgspec.Struct, frozen=True, kw_only=True):
    inbox: str
    filename: str
    sha256: str
    size: int
    via: str  # folder | api
    media_type: str


class Job(msgspec.Struct, frozen=True):
    invoice: str


class InvoiceSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    status: str
    inbox: str = ""
    filename: str = ""
    sha256: str = ""
    received_at: str = ""
    supplier: str = ""  # our supplier number
    number: str = ""  # BT-1
    grand_total: Decimal | None = None
    currency: str = ""
    failed: tuple[CheckResult, ...] = ()
    reason: str = ""  # supplier-facing, for a rejection
    hints: tuple[str, ...] = ()  # needs_template: VAT IDs and IBANs in the text
    problem: str = ""
    files: dict[str, str] = msgspec.field(default_factory=dict)  # role -> sha256
    erp_documents: dict[str, str] = msgspec.field(default_factory=dict)  # ERP -> document key


class AuditTrail(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    intact: bool
    problems: tuple[str, ...]
    entries: tuple[AuditEntry, ...]


class OverrideError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def is_decided(entries: Sequence[AuditEntry]) -> bool:
    """Decided, and not sent back for another try since (`retry`, after a template came)."""
    steps = [e.step for e in entries if e.step in ("decided", "retry")]
    return bool(steps) and steps[-1] == "decided"


def summarise(invoice: str, entries: Sequence[AuditEntry]) -> InvoiceSummary:
    """Where an invoice stands, folded from its audit entries."""
    values: dict[str, Any] = {"id": invoice, "status": "received", "files": {}}
    for entry in entries:
        data = msgspec.json.decode(entry.data)
        if entry.step == "received":
            values.update(
                inbox=data["inbox"],
                filename=data["filename"],
                sha256=data["sha256"],
                received_at=entry.at,
            )
            values["files"]["original"] = data["sha256"]
        elif entry.step in {"decided", "overridden"}:
            values["status"] = data["outcome"]
            values["failed"] = msgspec.convert(data.get("failed", []), tuple[CheckResult, ...])
            values["reason"] = data.get("reason", "")
            for key in ("supplier", "number", "currency", "problem"):
                if data.get(key):
                    values[key] = data[key]
            if data.get("hints"):
                values["hints"] = tuple(data["hints"])
            if data.get("grand_total") is not None:
                values["grand_total"] = Decimal(data["grand_total"])
        elif entry.step == "retry":
            values["status"] = "received"
        elif entry.step == "einvoice":
            values["files"]["einvoice"] = data["sha256"]
        elif entry.step == "posted":
            values["status"] = "posted"
            if data.get("sha256"):  # one DATEV file per invoice, before the day batches
                values["files"]["datev"] = data["sha256"]
        elif entry.step == "datev_batch":
            values["files"]["datev"] = data["sha256"]
        elif entry.step == "erp_posted":
            values.setdefault("erp_documents", {})[data["erp"]] = data["document"]
    return msgspec.convert(values, InvoiceSummary, strict=False)


def _decimal_cell(text: str, where: str) -> Decimal:
    cleaned = text.strip().replace(" ", "")
    if "," in cleaned:
        cleaned = cleaned.replace(".", "").replace(",", ".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"{where}: {text[:30]!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{where}: {text[:30]!r} is not a number")
    return value


def _csv_rows(path: Path) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8-sig")
    dialect = ";" if text.split("\n", 1)[0].count(";") >= text.split("\n", 1)[0].count(",") else ","
    return list(csv.DictReader(io.StringIO(text), delimiter=dialect))


def read_purchase_orders(path: Path) -> list[PurchaseOrderLine]:
    lines = []
    for index, row in enumerate(_csv_rows(path), start=2):
        where = f"{path.name} line {index}"
        lines.append(
            PurchaseOrderLine(
                order=row["order"].strip(),
                article=row["article"].strip(),
                quantity=_decimal_cell(row["quantity"], f"{where} quantity"),
                net_price=_decimal_cell(row["net_price"], f"{where} net_price"),
                supplier=(row.get("supplier") or "").strip(),
            )
        )
    return lines


def read_goods_receipts(path: Path) -> list[GoodsReceiptLine]:
    return [
        GoodsReceiptLine(
            order=row["order"].strip(),
            article=row["article"].strip(),
            quantity=_decimal_cell(row["quantity"], f"{path.name} line {index} quantity"),
        )
        for index, row in enumerate(_csv_rows(path), start=2)
    ]


class SupplierInvoiceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "somsd_supplier_invoices_received_total",
            "Supplier invoice files taken in, by inbox and how (duplicate: a copy seen before)",
            ["inbox", "via", "duplicate"],
            registry=registry,
        )
        self.decided = Counter(
            "somsd_supplier_invoices_decided_total",
            "Supplier invoices decided, by inbox and outcome",
            ["inbox", "outcome"],
            registry=registry,
        )
        self.check_failed = Counter(
            "somsd_supplier_invoices_check_failures_total",
            "Failed checks of supplier invoices, by rule",
            ["rule"],
            registry=registry,
        )
        self.posted = Counter(
            "somsd_supplier_invoices_posted_total",
            "Approved supplier invoices written as e-invoice and DATEV batch",
            ["inbox"],
            registry=registry,
        )
        self.extract_seconds = Histogram(
            "somsd_supplier_invoices_extract_seconds",
            "Time to read one supplier invoice (text backend + template, or XML)",
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )


class _Index:
    """What a decision needs from earlier decisions: invoice numbers per supplier (approved,
    held or posted: a duplicate of those is rejected) and quantities already invoiced per
    (PO, article) of approved ones. Built from the event log at start, then kept by the
    actor, the only writer of these streams; deliveries to it run one at a time."""

    def __init__(self) -> None:
        self.numbers: dict[str, set[str]] = {}
        self.invoiced: dict[tuple[str, str], Decimal] = {}
        self.lines: dict[str, list[tuple[tuple[str, str], Decimal]]] = {}
        self.status: dict[str, str] = {}
        self.identity: dict[str, tuple[str, str]] = {}

    def record(
        self, invoice: str, status: str, supplier: str, number: str, lines: Iterable[Any] = ()
    ) -> None:
        previous = self.status.get(invoice)
        self.status[invoice] = status
        if supplier and number:
            self.identity[invoice] = (supplier, number)
        lines = list(lines)
        if lines:
            self.lines[invoice] = [((ln[0], ln[1]), Decimal(ln[2])) for ln in lines]
        who = self.identity.get(invoice)
        if who is not None:
            if status in ("approved", "held", "posted"):
                self.numbers.setdefault(who[0], set()).add(who[1])
            elif status == "rejected":
                self.numbers.get(who[0], set()).discard(who[1])
        counted = previous in ("approved", "posted")
        counts = status in ("approved", "posted")
        if counts != counted:
            for key, quantity in self.lines.get(invoice, []):
                change = quantity if counts else -quantity
                self.invoiced[key] = self.invoiced.get(key, Decimal(0)) + change


def _supplier_streams(conn: Connection) -> list[tuple[str, bytes]]:
    rows = conn.execute(
        "SELECT stream, payload FROM events WHERE stream >= ? AND stream < ? ORDER BY seq LIMIT ?",
        (STREAM_PREFIX, STREAM_PREFIX[:-1] + ".", _SCAN_LIMIT),
    ).fetchall()
    return [(str(row[0]), bytes(row[1])) for row in rows]


def _entries_by_invoice(rows: Sequence[tuple[str, bytes]]) -> dict[str, list[AuditEntry]]:
    grouped: dict[str, list[AuditEntry]] = {}
    decoder = msgspec.json.Decoder(AuditEntry)
    for stream, payload in rows:
        grouped.setdefault(stream.removeprefix(STREAM_PREFIX), []).append(decoder.decode(payload))
    return grouped


def supplier_records(section: SupplierInboxConfig) -> list[SupplierRecord]:
    return [msgspec.convert(msgspec.to_builtins(s), SupplierRecord) for s in section.supplier]


def accounting_rules(section: SupplierInboxConfig) -> AccountingRules:
    return AccountingRules(
        company_code=section.company_code,
        default_gl_account=section.default_gl_account,
        tax_codes=dict(section.tax_codes),
        rules=tuple(
            AccountingRule(
                supplier=rule.supplier,
                article_prefix=rule.article_prefix,
                gl_account=rule.gl_account,
                cost_centre=rule.cost_centre,
            )
            for rule in section.rule
        ),
    )


def buyer_of(section: SupplierInboxConfig) -> Buyer:
    return Buyer(
        name=section.buyer_name or section.buyer_company,
        company=section.buyer_company or None,
        street=section.buyer_street,
        zip=section.buyer_zip,
        city=section.buyer_city,
        country=section.buyer_country,
        email=section.buyer_email,
        reference=section.buyer_reference,
    )


def identify_supplier(
    extraction: Extraction, invoice: SupplierInvoice, suppliers: Sequence[SupplierRecord]
) -> SupplierRecord | None:
    """By the template's supplier number, else by the invoice's VAT ID; never by name."""
    if extraction.supplier:
        return next((s for s in suppliers if s.number == extraction.supplier), None)
    vat_id = invoice.seller_vat_id.replace(" ", "").upper()
    if vat_id:
        return next((s for s in suppliers if s.vat_id.replace(" ", "").upper() == vat_id), None)
    return None


def _cached(
    cache: dict[Path, tuple[tuple[int, int], Any]], path: Path, read: Callable[[Path], Any]
) -> Any:
    stat = path.stat()
    key = (stat.st_mtime_ns, stat.st_size)
    hit = cache.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = read(path)
    cache[path] = (key, value)
    return value


class SupplierInvoiceActor:
    """Watches the `[[supplier_inbox]]` folders and takes, checks and posts their invoices."""

    name = "supplier_invoices"

    def __init__(
        self,
        config: Callable[[], Config],
        *,
        store: EventStore,
        dispatcher: OutboxDispatcher,
        registry: CollectorRegistry,
        data_dir: Path,
        purchasing: ErpPurchasing | None = None,
    ) -> None:
        """`purchasing`: the purchase orders and goods receipts read from the ERPs."""
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.root = data_dir / "supplier-invoices"
        self.legacy = legacy_files(data_dir)
        self.metrics = SupplierInvoiceMetrics(registry)
        self.validator = ValidatorWorker()
        self.index = _Index()
        self._templates: dict[str, tuple[Config, list[Template], list[str]]] = {}
        self._csv_cache: dict[Path, tuple[tuple[int, int], Any]] = {}
        self.ready = trio.Event()
        self.trails = InvoiceTrails(store)
        self.purchasing = purchasing
        self.datev = DatevBatcher(
            config,
            store=store,
            dispatcher=dispatcher,
            trail=self.trails,
            folder=self.datev_folder,
        )

    # -- config -----------------------------------------------------------------------

    def _config_dir(self) -> Path:
        return Path(self.config().source).parent

    def _path(self, value: str) -> Path:
        return self._config_dir() / value

    def inbox(self, name: str) -> SupplierInboxConfig | None:
        return next((s for s in self.config().supplier_inbox if s.name == name), None)

    def inboxes(self) -> tuple[SupplierInboxConfig, ...]:
        return self.config().supplier_inbox

    def datev_folder(self, section: SupplierInboxConfig) -> Path:
        if not section.datev_dir:
            return self.root / "datev"
        folder = Path(section.datev_dir)
        return folder if folder.is_absolute() else self._path(section.datev_dir)

    def templates(self, section: SupplierInboxConfig) -> tuple[list[Template], list[str]]:
        """The inbox's templates, read again whenever the config was reloaded. A template that
        cannot be used is left out and named (the log, `problems`); the others still apply."""
        config = self.config()
        cached = self._templates.get(section.name)
        if cached is not None and cached[0] is config:
            return cached[1], cached[2]
        folder = self._path(section.template_dir)
        templates: list[Template] = []
        problems: list[str] = []
        paths = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]) if folder.is_dir() else []
        for path in paths:
            try:
                templates.append(load_template(path.name, path.read_text(encoding="utf-8")))
            except (TemplateError, OSError, UnicodeDecodeError) as exc:
                problems.append(str(exc))
                log.error("supplier_template_invalid", inbox=section.name, problem=str(exc))  # noqa: TRY400  # a config error, no traceback
        self._templates[section.name] = (config, templates, problems)
        log.info("supplier_templates_loaded", inbox=section.name, templates=len(templates))
        return templates, problems

    async def match_data(self, section: SupplierInboxConfig) -> MatchData:
        """The CSV import's lines and, when the inbox names an ERP, those read from it."""
        orders: list[PurchaseOrderLine] = []
        receipts: list[GoodsReceiptLine] = []
        if section.purchase_orders_csv:
            orders = _cached(
                self._csv_cache, self._path(section.purchase_orders_csv), read_purchase_orders
            )
        if section.goods_receipts_csv:
            receipts = _cached(
                self._csv_cache, self._path(section.goods_receipts_csv), read_goods_receipts
            )
        if section.erp and self.purchasing is not None:
            from_erp = await self.purchasing.lines(section.erp)
            orders, receipts = [*orders, *from_erp[0]], [*receipts, *from_erp[1]]
        return MatchData.build(orders, receipts, self.index.invoiced)

    # -- life ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._build_index()
        self.dispatcher.register(PROCESS_TARGET, self.process, limit=1)
        self.dispatcher.register(OUTPUT_TARGET, self.output, limit=1)
        self.dispatcher.register(DATEV_TARGET, self.datev.deliver, limit=1)
        self.ready.set()
        task_status.started()
        try:
            while True:
                for section in self.inboxes():
                    await self.sweep(section)
                await self.datev.close_due()
                interval = min((s.poll_interval.seconds for s in self.inboxes()), default=5.0)
                await trio.sleep(max(interval, 0.05))
        finally:
            self.dispatcher.unregister(PROCESS_TARGET, self.process)
            self.dispatcher.unregister(OUTPUT_TARGET, self.output)
            self.dispatcher.unregister(DATEV_TARGET, self.datev.deliver)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.validator.close)

    async def _build_index(self) -> None:
        rows = await self.store.read(_supplier_streams)
        accounted: list[tuple[str, str, date, tuple[DatevBooking, ...]]] = []
        for invoice, entries in _entries_by_invoice(rows).items():
            self._index_entries(invoice, entries)
            posted = next((e for e in entries if e.step == "posted"), None)
            data = msgspec.json.decode(posted.data) if posted else {}
            if "day" in data:  # booked into a day batch (not one file of its own, as before)
                day, bookings = msgspec.convert(
                    (data["day"], data["bookings"]), tuple[date, tuple[DatevBooking, ...]]
                )
                accounted.append((invoice, data["inbox"], day, bookings))
        await self.datev.load(accounted)

    def _index_entries(self, invoice: str, entries: Sequence[AuditEntry]) -> None:
        for entry in entries:
            if entry.step in ("decided", "overridden", "posted"):
                data = msgspec.json.decode(entry.data)
                status = "posted" if entry.step == "posted" else data["outcome"]
                self.index.record(
                    invoice,
                    status,
                    data.get("supplier", ""),
                    data.get("number", ""),
                    data.get("lines", []),
                )

    # -- intake -------------------------------------------------------------------------

    async def sweep(self, section: SupplierInboxConfig) -> int:
        """Take in what lies in the inbox folder; the number of files taken."""
        folder = self._path(section.folder)
        if not folder.is_dir():
            return 0
        processed = (
            self._path(section.processed_folder)
            if section.processed_folder
            else folder / "processed"
        )
        failed = self._path(section.failed_folder) if section.failed_folder else folder / "failed"
        names = await trio.to_thread.run_sync(
            lambda: sorted(
                p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
            )
        )
        taken = 0
        for name in names[:_SWEEP_LIMIT]:
            path = folder / name
            try:
                data = await trio.to_thread.run_sync(path.read_bytes)
            except OSError as exc:
                log.warning("supplier_file_unreadable", path=str(path), error=str(exc))
                continue
            problem = intake_problem(data, section.max_file_bytes)
            if problem is not None:
                log.error("supplier_file_refused", path=str(path), problem=problem)
                await trio.to_thread.run_sync(_move, path, failed)
                continue
            await self.receive(section, data, name, via="folder")
            await trio.to_thread.run_sync(_move, path, processed)
            taken += 1
        return taken

    async def receive(
        self, section: SupplierInboxConfig, data: bytes, filename: str, *, via: str
    ) -> tuple[str, bool]:
        """Store and record one file: (invoice id, whether it was a copy seen before)."""
        sha256 = blob_key(data)
        invoice = invoice_id(sha256)
        media = "application/pdf" if _is_pdf(data) else "application/xml"
        received = Received(
            inbox=section.name,
            filename=filename[:200],
            sha256=sha256,
            size=len(data),
            via=via,
            media_type=media,
        )
        entry = seal(None, "received", now(), _json(received))
        result = await self.store.append(
            stream_of(invoice),
            [NewEvent("SupplierInvoiceReceived", msgspec.json.encode(entry), {"actor": ACTOR})],
            idempotency=IdempotencyKey("supplier-inbox", sha256),
            outbox=[
                OutboxItem(
                    PROCESS_TARGET,
                    msgspec.json.encode(Job(invoice)),
                    f"supplier-invoice:{invoice}:process",
                )
            ],
            blobs=[data],
        )
        duplicate = isinstance(result, Duplicate)
        self.metrics.received.labels(section.name, via, str(duplicate).lower()).inc()
        if duplicate:
            data_text = _json({"filename": filename[:200], "via": via, "inbox": section.name})
            await self.trails.append_steps(invoice, [("duplicate_file", data_text)])
            log.info("supplier_invoice_copy", invoice=invoice, filename=filename)
        else:
            log.info("supplier_invoice_received", invoice=invoice, filename=filename, via=via)
        return invoice, duplicate

    def approval_outbox(self, invoice: str, section: SupplierInboxConfig) -> list[OutboxItem]:
        """What an approval sets off, in its own transaction: the output (e-invoice, DATEV)
        and, when the inbox names an ERP, the posting there."""
        items = [
            OutboxItem(
                OUTPUT_TARGET,
                msgspec.json.encode(Job(invoice)),
                f"supplier-invoice:{invoice}:output",
            )
        ]
        if section.erp:
            items.append(erp_item(invoice, section.erp))
        return items

    # -- processing ---------------------------------------------------------------------

    async def process(self, entry: OutboxEntry) -> None:
        job = msgspec.json.decode(entry.payload, type=Job)
        entries = entries_of(await self.store.read_stream(stream_of(job.invoice)))
        if not entries or is_decided(entries):
            return  # decided by an earlier delivery
        received = msgspec.json.decode(entries[0].data, type=Received)
        section = self.inbox(received.inbox)
        if section is None:
            raise TransientUpstreamError(
                "supplier_invoices", f"inbox {received.inbox!r} is not configured"
            )
        data = await self.file(received.sha256)
        if data is None:
            raise PermanentUpstreamError(
                "supplier_invoices",
                f"{job.invoice}: its file (SHA-256 {received.sha256}) is not stored",
                operation="process",
            )
        templates, _problems = await trio.to_thread.run_sync(self.templates, section)
        started = time.perf_counter()
        extraction = await trio.to_thread.run_sync(extract, data, templates)
        self.metrics.extract_seconds.observe(time.perf_counter() - started)
        match = await self.match_data(section)
        steps, decided, outcome = self._decide(section, extraction, match)
        outbox = self.approval_outbox(job.invoice, section) if outcome == "approved" else []
        done = await self.trails.append_steps(
            job.invoice,
            [*steps, ("decided", _json(decided))],
            outbox=outbox,
            unless=is_decided,
        )
        if done is None:
            return
        self.index.record(
            job.invoice,
            outcome,
            decided.get("supplier", ""),
            decided.get("number", ""),
            decided.get("lines", []),
        )
        self.metrics.decided.labels(section.name, outcome).inc()
        log.info("supplier_invoice_decided", invoice=job.invoice, outcome=outcome)

    def _decide(
        self, section: SupplierInboxConfig, extraction: Extraction, match: MatchData
    ) -> tuple[list[tuple[str, str]], dict[str, Any], str]:
        extracted = {
            "status": extraction.status,
            "source": extraction.source,
            "backend": extraction.backend,
            "template": extraction.template,
            "template_version": extraction.template_version,
            "template_sha256": extraction.template_sha256,
            "text_seconds": round(extraction.text_seconds, 6),
            "problem": extraction.problem,
            "invoice": extraction.invoice,
        }
        steps = [("extracted", _json(extracted))]
        if extraction.status == "needs_template":
            return steps, {"outcome": "needs_template", "hints": extraction.hints}, "needs_template"
        if extraction.status == "unreadable" or extraction.invoice is None:
            return steps, {"outcome": "unreadable", "problem": extraction.problem}, "unreadable"
        invoice = extraction.invoice
        suppliers = supplier_records(section)
        supplier = identify_supplier(extraction, invoice, suppliers)
        results: list[CheckResult] = []
        if supplier is None:
            results.append(
                CheckResult(
                    check="supplier",
                    passed=False,
                    rule="SUPPLIER-KNOWN",
                    failure="hold",
                    detail=f"no supplier with VAT ID {invoice.seller_vat_id or '?'} in the "
                    "master data (supplier_inbox.supplier)",
                )
            )
        number = supplier.number if supplier else ""
        results.extend(
            run_checks(
                invoice,
                supplier=supplier,
                seen_numbers=self.index.numbers.get(number, set()) if number else (),
                match=match,
                tolerances=Tolerances(
                    quantity=section.quantity_tolerance,
                    price_percent=section.price_tolerance_percent,
                    price_cents=section.price_tolerance_cents,
                ),
            )
        )
        decision: Decision = decide(results)
        for result in results:
            steps.append(("check", _json(result)))
            if not result.passed:
                self.metrics.check_failed.labels(result.rule).inc()
        decided = {
            "outcome": decision.outcome,
            "failed": decision.failed,
            "reason": decision.reason,
            "supplier": number,
            "number": invoice.number,
            "currency": invoice.currency,
            "grand_total": invoice.grand_total,
            "lines": [
                (invoice.order_of(line), line.article, line.quantity) for line in invoice.lines
            ],
        }
        return steps, msgspec.to_builtins(decided), decision.outcome

    # -- overrides ----------------------------------------------------------------------

    async def override(
        self, invoice: str, outcome: Literal["approved", "rejected"], by: str, reason: str
    ) -> InvoiceSummary:
        """An operator approves or rejects a held invoice (or one waiting for a template is
        rejected): who and why go into the trail; an approval is then posted."""
        entries = entries_of(await self.store.read_stream(stream_of(invoice)))
        if not entries:
            raise OverrideError(404, "supplier_invoice_not_found", f"no supplier invoice {invoice}")
        summary = summarise(invoice, entries)
        allowed = ("held",) if outcome == "approved" else ("held", "needs_template", "unreadable")
        if summary.status not in allowed:
            raise OverrideError(
                409,
                "not_overridable",
                f"{invoice} is {summary.status}; only {' or '.join(allowed)} can be {outcome}",
            )
        data = {
            "outcome": outcome,
            "by": by,
            "why": reason,
            "overrides": summary.status,
            "failed": summary.failed,
            "reason": f"We cannot process this invoice: {reason}." if outcome == "rejected" else "",
            "supplier": summary.supplier,
            "number": summary.number,
            "currency": summary.currency,
            "grand_total": summary.grand_total,
        }
        section = self.inbox(summary.inbox)
        if outcome == "approved" and section is None:
            raise OverrideError(409, "inbox_gone", f"inbox {summary.inbox!r} is not configured")
        outbox = (
            self.approval_outbox(invoice, section)
            if outcome == "approved" and section is not None
            else []
        )
        status_before = summary.status
        done = await self.trails.append_steps(
            invoice,
            [("overridden", _json(msgspec.to_builtins(data)))],
            outbox=outbox,
            unless=lambda trail: summarise(invoice, trail).status != status_before,
        )
        if done is None:
            raise OverrideError(409, "not_overridable", f"{invoice} changed meanwhile; look again")
        self._index_entries(invoice, done[-1:])
        log.info("supplier_invoice_overridden", invoice=invoice, outcome=outcome, by=by)
        return summarise(invoice, done)

    async def retry(self, invoice: str, by: str, reason: str) -> InvoiceSummary:
        """Read an invoice again that waited for a template (or could not be read), e.g. after
        the template was added and the config reloaded."""
        entries = entries_of(await self.store.read_stream(stream_of(invoice)))
        if not entries:
            raise OverrideError(404, "supplier_invoice_not_found", f"no supplier invoice {invoice}")
        status = summarise(invoice, entries).status
        if status not in ("needs_template", "unreadable"):
            raise OverrideError(
                409, "not_retryable", f"{invoice} is {status}; only needs_template or unreadable"
            )
        attempt = sum(e.step == "retry" for e in entries) + 1
        done = await self.trails.append_steps(
            invoice,
            [("retry", _json({"by": by, "why": reason, "attempt": attempt}))],
            outbox=[
                OutboxItem(
                    PROCESS_TARGET,
                    msgspec.json.encode(Job(invoice)),
                    f"supplier-invoice:{invoice}:process:{attempt}",
                )
            ],
            unless=lambda trail: summarise(invoice, trail).status != status,
        )
        if done is None:
            raise OverrideError(409, "not_retryable", f"{invoice} changed meanwhile; look again")
        return summarise(invoice, done)

    # -- output -------------------------------------------------------------------------

    async def output(self, entry: OutboxEntry) -> None:
        job = msgspec.json.decode(entry.payload, type=Job)
        entries = entries_of(await self.store.read_stream(stream_of(job.invoice)))
        if any(e.step == "posted" for e in entries):
            return
        received = msgspec.json.decode(entries[0].data, type=Received)
        section = self.inbox(received.inbox)
        if section is None:
            raise TransientUpstreamError("supplier_invoices", f"inbox {received.inbox!r} is gone")
        extracted = next(e for e in entries if e.step == "extracted")
        invoice = msgspec.convert(
            msgspec.json.decode(extracted.data)["invoice"], SupplierInvoice, strict=False
        )
        summary = summarise(job.invoice, entries)
        supplier = next(
            (s for s in supplier_records(section) if s.number == summary.supplier),
            SupplierRecord(number=summary.supplier or "70000", name=invoice.seller_name),
        )
        steps: list[tuple[str, str]] = []
        blobs: list[bytes] = []
        try:
            xml = await trio.to_thread.run_sync(
                build_supplier_cii, invoice, supplier, buyer_of(section)
            )
        except NotBuildable as exc:
            steps.append(("einvoice", _json({"written": False, "problem": str(exc), "sha256": ""})))
        else:
            try:
                report = await trio.to_thread.run_sync(self.validator.validate, xml)
            except ValidatorUnavailable as exc:
                raise TransientUpstreamError("validator", f"validator worker: {exc}") from exc
            xml_hash = blob_key(xml)
            blobs.append(xml)
            steps.append(
                (
                    "einvoice",
                    _json(
                        {
                            "written": True,
                            "sha256": xml_hash,
                            "size": len(xml),
                            "profile": report.profile,
                            "valid": report.valid,
                            "rule_sets": report.rule_sets,
                            "errors": [f.rule for f in report.errors][:50],
                        }
                    ),
                )
            )
        postings = postings_for(invoice, supplier, accounting_rules(section))
        approved = next(
            e
            for e in reversed(entries)
            if e.step in ("decided", "overridden")
            and msgspec.json.decode(e.data)["outcome"] == "approved"
        )
        async with self.datev.lock:
            day, booked_on = self.datev.book(section, datetime.fromisoformat(approved.at))
            bookings = tuple(
                booking_from_posting(
                    posting,
                    currency=invoice.currency or "EUR",
                    document_date=booked_on,
                    link=job.invoice,
                    invoice_date=invoice.issue_date,
                )
                for posting in postings
            )
            steps.append(
                (
                    "posted",
                    _json(
                        {
                            "target": "datev",
                            "inbox": section.name,
                            "day": day,
                            "postings": postings,
                            "bookings": bookings,
                        }
                    ),
                )
            )
            done = await self.trails.append_steps(
                job.invoice,
                steps,
                unless=lambda trail: any(e.step == "posted" for e in trail),
                blobs=blobs,
            )
            if done is not None:
                self.datev.accounted(section.name, day, job.invoice, bookings)
        if done is not None:
            self.index.record(job.invoice, "posted", "", "")
            self.metrics.posted.labels(section.name).inc()
            log.info("supplier_invoice_posted", invoice=job.invoice, datev_day=str(day))

    # -- reading ------------------------------------------------------------------------

    async def summary(self, invoice: str) -> InvoiceSummary | None:
        if not valid_id(invoice):
            return None
        entries = entries_of(await self.store.read_stream(stream_of(invoice)))
        return summarise(invoice, entries) if entries else None

    async def trail(self, invoice: str) -> AuditTrail | None:
        if not valid_id(invoice):
            return None
        entries = entries_of(await self.store.read_stream(stream_of(invoice)))
        if not entries:
            return None
        problems = verify_chain(entries)
        return AuditTrail(
            id=invoice, intact=not problems, problems=tuple(problems), entries=tuple(entries)
        )

    async def listing(self, status: str | None, limit: int = 500) -> list[InvoiceSummary]:
        rows = await self.store.read(_supplier_streams)
        summaries = [
            summarise(invoice, entries) for invoice, entries in _entries_by_invoice(rows).items()
        ]
        if status is not None:
            summaries = [s for s in summaries if s.status == status]
        return summaries[:limit]

    async def original(self, invoice: str) -> tuple[bytes, str] | None:
        summary = await self.summary(invoice)
        if summary is None or not summary.sha256:
            return None
        entries = entries_of(await self.store.read_stream(stream_of(invoice)))
        media = msgspec.json.decode(entries[0].data, type=Received).media_type
        data = await self.file(summary.sha256)
        return None if data is None else (data, media)

    async def file(self, sha256: str) -> bytes | None:
        """A file of a trail by its SHA-256 (the blob, or an older somsd's file)."""
        return await stored_bytes(self.store, sha256, self.legacy.path_of(sha256))


def legacy_files(data_dir: Path) -> LegacyFiles:
    """Where somsd before blobs in the event store kept supplier invoices' files."""
    return LegacyFiles(data_dir / "supplier-invoices" / "files")


def _is_pdf(data: bytes) -> bool:
    return data[:1024].lstrip().startswith(b"%PDF")


def intake_problem(data: bytes, limit: int) -> str | None:
    """Why a file is not taken in at all (it is neither a PDF nor XML, or too large)."""
    if not data:
        return "the file is empty"
    if len(data) > limit:
        return f"the file has {len(data)} bytes, more than max_file_bytes ({limit})"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not (head.startswith(b"%PDF") or head.startswith(b"<")):
        return "neither a PDF nor XML"
    return None


def _move(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        stem = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        target = folder / f"{path.stem}.{stem}{path.suffix}"
    os.replace(path, target)


# -- offline verification (`somsd audit verify`) ---------------------------------------------


class AuditReport(msgspec.Struct, frozen=True, kw_only=True):
    invoices: int
    entries: int
    files: int
    problems: tuple[str, ...]


def verify_audit(conn: Connection, data_dir: Path) -> AuditReport:
    """Check every supplier invoice's hash chain and every file its trail names: the file is
    there and its SHA-256 is the one recorded. `conn` is a read-only store connection of
    either backend (the CLI opens it)."""
    legacy = legacy_files(data_dir)
    rows = _supplier_streams(conn)
    problems: list[str] = []
    checked_files = 0
    entry_count = 0
    decoder = msgspec.json.Decoder(AuditEntry)
    grouped: dict[str, list[AuditEntry]] = {}
    for stream, payload in rows:
        invoice = stream.removeprefix(STREAM_PREFIX)
        try:
            grouped.setdefault(invoice, []).append(decoder.decode(payload))
        except msgspec.DecodeError as exc:
            problems.append(f"{invoice}: an entry is not an audit entry ({exc})")
    for invoice, entries in grouped.items():
        entry_count += len(entries)
        problems.extend(f"{invoice}: {problem}" for problem in verify_chain(entries))
        for entry in entries:
            if entry.step not in ("received", "einvoice", "posted", "datev_batch"):
                continue
            try:
                digest = msgspec.json.decode(entry.data).get("sha256", "")
            except msgspec.DecodeError:
                continue
            if not digest:
                continue
            checked_files += 1
            content = stored_copy(conn, digest, legacy.path_of(digest))
            if content is None:
                problems.append(f"{invoice}: {entry.step} file {digest[:16]}... is missing")
            elif blob_key(content) != digest:
                problems.append(f"{invoice}: {entry.step} file {digest[:16]}... was changed")
    return AuditReport(
        invoices=len(grouped), entries=entry_count, files=checked_files, problems=tuple(problems)
    )
