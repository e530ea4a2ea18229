"""The actor behind a `[[channel]]` of kind `edifact`: a B2B partner's EANCOM drop folder.

Intake: every `poll_interval` the actor claims complete files from `<folder>/in/` (one atomic
rename into processing/; a crash leaves the file there and the next run takes it again),
reads every ORDERS message, maps it to the canonical order (`adapters.edifact.messages`) and
hands it to the order desk like any other channel's order (external id: sender GLN + order
number, so a file read twice is recognised as a duplicate). A new order is answered with an
ORDRSP in `<folder>/out/`. A file that cannot be read, names an unknown partner, reuses a
UNB control reference that partner already sent in another file, or holds an order the desk
refuses is moved to failed/ with `<name>.reason.txt` (segment and reason) and counted in
`somsd_edifact_files_total{channel,outcome}`. The partner side of all this is
`adapters/edifact/simulator.py` (`python -m adapters.edifact`).

Outbound: `edifact_effects_for` (one line in the daemon's `all_order_effects`) plans an outbox
item for every shipment (DESADV) and every issued invoice or credit note (INVOIC) of this
channel's orders; `deliver` writes the file, named after the shipment or document number so a
redelivery after a crash finds it written and writes nothing twice. Every interchange takes a
fresh UNB control reference from a persisted counter per partner (never repeated).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Final, Literal

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter
from pydifact.segments import Segment

from actors.effects import OrderEffects
from actors.integration import IntegrationActor
from actors.order_desk import OrderDesk, ReceiveOrder
from actors.outbox import OutboxDispatcher
from adapters.edifact.eancom import EdifactError, build_interchange, read_orders
from adapters.edifact.folder import ControlReferences, DropFolder, ReceivedReferences
from adapters.edifact.messages import Partner, desadv, invoic, ordrsp, to_canonical
from somsd.config import ChannelConfig
from somsd.domain.errors import DomainError
from somsd.domain.events import (
    UNNUMBERED,
    CreditNoteIssued,
    InvoiceIssued,
    LinesShipped,
    OrderEvent,
    OrderReceived,
    decode_event,
    encode_event,
)
from somsd.domain.order import Address
from somsd.domain.state import OrderState
from somsd.projections.orders import order_stream
from somsd.store import EventStore, OutboxEntry, OutboxItem

__all__ = ["EdifactChannelActor", "EdifactMetrics", "edifact_effects_for", "edifact_target"]

log = structlog.get_logger("actors.edifact")

_MAX_FILES_PER_POLL: Final = 1000


def edifact_target(channel: str) -> str:
    return f"edifact/{channel}"


class EdifactJob(msgspec.Struct, frozen=True):
    kind: Literal["desadv", "invoic"]
    order_id: str
    ref: str  # shipment id, or the hash of the unnumbered invoice event


def _event_hash(event: InvoiceIssued | CreditNoteIssued) -> str:
    unnumbered = msgspec.structs.replace(event, number=UNNUMBERED)
    return hashlib.sha256(encode_event(unnumbered)).hexdigest()[:32]


def edifact_effects_for(channels: Callable[[], Mapping[str, ChannelConfig]]) -> OrderEffects:
    """Order-desk planner: DESADV per shipment, INVOIC per invoice, for edifact channels."""

    def effects(
        channel: str, before: OrderState | None, events: Sequence[OrderEvent]
    ) -> list[OutboxItem]:
        section = channels().get(channel)
        if section is None or section.kind != "edifact" or before is None:
            return []
        items: list[OutboxItem] = []
        for event in events:
            job: EdifactJob | None = None
            if isinstance(event, LinesShipped):
                job = EdifactJob("desadv", before.order_id, event.shipment_id)
            elif isinstance(event, InvoiceIssued | CreditNoteIssued):
                job = EdifactJob("invoic", before.order_id, _event_hash(event))
            if job is not None:
                items.append(
                    OutboxItem(
                        edifact_target(channel),
                        msgspec.json.encode(job),
                        f"edifact:{job.order_id}:{job.kind}:{job.ref}",
                    )
                )
        return items

    return effects


class EdifactMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.files = Counter(
            "somsd_edifact_files_total",
            "EDIFACT files taken from a partner's folder, by outcome (processed, failed)",
            ["channel", "outcome"],
            registry=registry,
        )
        self.sent = Counter(
            "somsd_edifact_messages_sent_total",
            "EDIFACT interchanges written to a partner's out/ folder, by message type",
            ["channel", "message"],
            registry=registry,
        )


def _partners(section: ChannelConfig) -> dict[str, Partner]:
    return {
        partner.gln: Partner(
            gln=partner.gln,
            name=partner.name,
            email=partner.email,
            address=Address(
                name=partner.name,
                street=partner.street,
                zip=partner.zip,
                city=partner.city,
                country=partner.country,
            ),
            tax_rate=partner.tax_rate,
            customer_id=partner.customer_id or "",
        )
        for partner in section.partners
    }


class EdifactChannelActor(IntegrationActor):
    def __init__(
        self,
        section: ChannelConfig,
        *,
        store: EventStore,
        dispatcher: OutboxDispatcher,
        desk: OrderDesk,
        metrics: EdifactMetrics,
    ) -> None:
        super().__init__(f"channel/{section.name}", section, driver="edifact folder")
        self.channel = section
        self.store = store
        self.dispatcher = dispatcher
        self.desk = desk
        self.metrics = metrics
        assert section.folder is not None
        assert section.gln is not None
        self.folder = DropFolder(Path(section.folder))
        self.gln = section.gln
        self.partners = _partners(section)
        self.target = edifact_target(section.name)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.dispatcher.register(self.target, self.deliver)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(super().run)
                nursery.start_soon(self._poll_loop)
                task_status.started()
        finally:
            self.dispatcher.unregister(self.target, self.deliver)

    async def _poll_loop(self) -> None:
        while True:
            await self.poll()
            await trio.sleep(self.channel.poll_interval.seconds)

    def _control_reference(self, partner: str) -> int:
        return ControlReferences(self.folder.root / ".control" / partner).next()

    async def _send(self, name: str, partner: str, kind: str, body: Sequence[Segment]) -> None:
        if (self.folder.outbound / name).exists():
            return  # written by an earlier delivery (a crash before it was marked done)
        reference = await trio.to_thread.run_sync(self._control_reference, partner)
        text = build_interchange(
            sender=self.gln,
            recipient=partner,
            control_reference=reference,
            at=datetime.now(UTC),
            messages=[(kind, body)],
        )
        await trio.to_thread.run_sync(self.folder.send, name, text)
        self.metrics.sent.labels(self.channel.name, kind).inc()

    async def poll(self) -> int:
        """Take every complete file now; returns how many were handled."""
        paths = await trio.to_thread.run_sync(
            lambda: list(self.folder.claim())[:_MAX_FILES_PER_POLL]
        )
        for path in paths:
            try:
                await self._take(path)
            except EdifactError as exc:
                await trio.to_thread.run_sync(self.folder.quarantine, path, str(exc))
                self.metrics.files.labels(self.channel.name, "failed").inc()
                log.warning(
                    "edifact_file_failed",
                    channel=self.channel.name,
                    file=path.name,
                    segment=exc.segment,
                    tag=exc.tag,
                    reason=exc.reason,
                )
            else:
                await trio.to_thread.run_sync(self.folder.done, path)
                self.metrics.files.labels(self.channel.name, "processed").inc()
        return len(paths)

    async def _take(self, path: Path) -> None:
        try:
            text = await trio.to_thread.run_sync(self.folder.read, path)
        except (OSError, ValueError) as exc:
            raise EdifactError(0, "?", f"unreadable file: {exc}") from exc
        messages = read_orders(text)
        for orders in messages:
            if orders.sender not in self.partners:
                raise EdifactError(
                    1, "UNB", f"sender GLN {orders.sender} is not a configured partner"
                )
            if orders.recipient != self.gln:
                raise EdifactError(
                    1, "UNB", f"recipient GLN {orders.recipient} is not ours ({self.gln})"
                )
        if messages:
            sender, reference = messages[0].sender, messages[0].control_reference
            references = ReceivedReferences(self.folder.root / ".control" / f"received-{sender}")
            earlier = await trio.to_thread.run_sync(references.file_of, reference)
            if earlier is not None and earlier != path.name:
                raise EdifactError(
                    1,
                    "UNB",
                    f"control reference {reference} from {sender} was already received"
                    f" in {earlier}",
                )
        for orders in messages:
            partner = self.partners[orders.sender]
            order = to_canonical(orders, partner, received_at=datetime.now(UTC))
            try:
                received = await self.desk.ask(partial(ReceiveOrder, self.channel.name, order))
            except DomainError as exc:
                raise EdifactError(0, "BGM", f"order {orders.order_number} refused: {exc}") from exc
            if not received.duplicate:
                log.info(
                    "edifact_order_received",
                    channel=self.channel.name,
                    order_id=received.order_id,
                    number=orders.order_number,
                )
            body = ordrsp(
                orders, number=f"AB-{orders.order_number}", at=datetime.now(UTC), supplier=self.gln
            )
            await self._send(
                f"ordrsp-{orders.sender}-{_safe(orders.order_number)}.edi",
                orders.sender,
                "ORDRSP",
                body,
            )
        if messages and earlier is None:
            await trio.to_thread.run_sync(references.record, reference, path.name)

    async def deliver(self, entry: OutboxEntry) -> None:
        job = msgspec.json.decode(entry.payload, type=EdifactJob)
        stored = await self.store.read_stream(order_stream(job.order_id))
        events = [decode_event(item.payload) for item in stored]
        received = next(event for event in events if isinstance(event, OrderReceived))
        partner, _, order_number = received.order.external_id.partition(":")
        now = datetime.now(UTC)
        if job.kind == "desadv":
            shipped = next(
                (e for e in events if isinstance(e, LinesShipped) and e.shipment_id == job.ref),
                None,
            )
            if shipped is None:
                return
            lines = [(received.order.lines[q.line].sku, q.quantity) for q in shipped.lines]
            body = desadv(
                number=shipped.shipment_id,
                at=now,
                order_number=order_number,
                buyer=partner,
                supplier=self.gln,
                delivery_party=partner,
                lines=lines,
            )
            await self._send(f"desadv-{_safe(shipped.shipment_id)}.edi", partner, "DESADV", body)
            return
        issued = next(
            (
                e
                for e in events
                if isinstance(e, InvoiceIssued | CreditNoteIssued) and _event_hash(e) == job.ref
            ),
            None,
        )
        if issued is None or issued.number == UNNUMBERED:
            return
        preceding = issued.invoice_number if isinstance(issued, CreditNoteIssued) else ""
        body = invoic(
            issued.document,
            number=issued.number,
            at=now,
            order_number=order_number,
            buyer=partner,
            supplier=self.gln,
            preceding_invoice=preceding,
        )
        await self._send(f"invoic-{issued.number}.edi", partner, "INVOIC", body)


def _safe(text: str) -> str:
    """A file-name part: letters, digits, '-', '_' and '.' only."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]
