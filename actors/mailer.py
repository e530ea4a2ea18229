"""`Mailer`: delivers the customer mails in the outbox over SMTP (target `notify/smtp`).

The planners (`order_mail_effects`, `fulfilment_mail_effects`) sit in the desks' effects hooks
(actors/effects.py): an order received, invoiced, shipped, ready for pickup, returned or
refunded writes one outbox row per mail in the same transaction as its events, keyed
`mail/<order>/<kind>[/<ref>]` (somsd.mail.jobs), so a mail is planned exactly once and never
lost. Which mails a channel's customers get is `notify.mails`, or the channel's own list.

Delivery renders the mail from the order as it stands then (somsd.mail.render) and sends it
through `adapters.smtp.SmtpPool`. SMTP has no idempotency key, so delivery is at least once: a
crash after the relay's 250 and before "delivered" is committed sends the mail again. Its
Message-ID is derived from the outbox key, so the copy is the same message to the customer's
client (which most show once) and recognisable to anyone looking. A 4xx or an unreachable
relay retries with the dispatcher's backoff; a 5xx for the mail, or an address that cannot be
one recipient, parks it in the dead letters with the server's answer.

Config is read at every delivery (`config()`), so a reload that changes `[notify]` takes
effect with the next mail; the connection pool is replaced when the SMTP settings change.

The invoice PDF: `attachments` (set by the composition root to `document_attachments`) is
awaited for each mail and returns the files to attach: the invoice PDF for kind "invoice", the
credit note's PDF for a refund.

Metrics: `somsd_mails_sent_total{kind}`, `somsd_mail_failures_total{kind,outcome}` (transient,
permanent), `somsd_mail_send_seconds` (render + SMTP conversation).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from email.utils import getaddresses
from functools import partial
from typing import Final

import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram

from actors.documents import DocumentReader
from actors.effects import FulfilmentEffects, OrderEffects
from actors.outbox import OutboxDispatcher
from adapters.errors import PermanentUpstreamError, TransientUpstreamError
from adapters.smtp.client import SmtpPool, SmtpSettings
from somsd.config import Config, MailKind, NotifyConfig, StoreAddress
from somsd.domain.events import OrderEvent, OrderReceived
from somsd.domain.state import OrderState
from somsd.mail.jobs import MailJob, decode_job, encode_job, plan_fulfilment_mails, plan_order_mails
from somsd.mail.render import (
    Attachment,
    InvalidRecipient,
    Renderer,
    TemplateProblem,
    build_message,
    mail_settings,
    message_id_for,
)
from somsd.projections.fulfilments import FulfilmentEvent, FulfilmentState
from somsd.projections.orders import decode_state, fetch_state
from somsd.store import EventStore, OutboxEntry, OutboxItem, utc_now

__all__ = [
    "TARGET",
    "AttachmentSource",
    "Mailer",
    "document_attachments",
    "enabled_mails",
    "fulfilment_mail_effects",
    "order_mail_effects",
    "smtp_settings",
]

log = structlog.get_logger("actors.mailer")

TARGET: Final = "notify/smtp"
# Mails in flight at once. A delivery holds its slot while its outcome is committed (an fsync),
# so the dispatcher's default of four leaves the relay idle most of the time; eight is what a
# relay's per-client connection limit usually allows (Postfix: 50), and the pool keeps as many.
CONCURRENCY: Final = 8

AttachmentSource = Callable[[MailJob, OrderState], Awaitable[Sequence[Attachment]]]


def enabled_mails(notify: NotifyConfig, channel: str) -> frozenset[MailKind]:
    own = next((c for c in notify.channel if c.name == channel), None)
    return frozenset(notify.mails if own is None or own.mails is None else own.mails)


def _items(jobs: Sequence[MailJob], enabled: frozenset[MailKind]) -> list[OutboxItem]:
    return [OutboxItem(TARGET, encode_job(job), job.key) for job in jobs if job.kind in enabled]


def order_mail_effects(notify: Callable[[], NotifyConfig | None]) -> OrderEffects:
    """The order desk's planner for customer mails (one line in the composition root)."""

    def effects(
        channel: str, before: OrderState | None, events: Sequence[OrderEvent]
    ) -> list[OutboxItem]:
        config = notify()
        if config is None:
            return []
        if before is not None:
            order_id = before.order_id
        else:
            first = next((e for e in events if isinstance(e, OrderReceived)), None)
            if first is None:
                return []
            order_id = first.order_id
        return _items(plan_order_mails(order_id, before, events), enabled_mails(config, channel))

    return effects


def fulfilment_mail_effects(
    store: EventStore, notify: Callable[[], NotifyConfig | None]
) -> FulfilmentEffects:
    """The fulfilment desk's planner: shipped and ready-for-pickup mails."""

    async def effects(
        fulfilment: FulfilmentState, events: Sequence[FulfilmentEvent]
    ) -> list[OutboxItem]:
        config = notify()
        if config is None:
            return []
        jobs = plan_fulfilment_mails(fulfilment, events)
        if not jobs:
            return []
        blob = await store.read(partial(fetch_state, order_id=fulfilment.order_id))
        if blob is None:
            return []
        return _items(jobs, enabled_mails(config, decode_state(blob).channel))

    return effects


def document_attachments(reader: DocumentReader, enabled: Callable[[], bool]) -> AttachmentSource:
    """The invoice mail carries the invoice PDF, the refund mail its credit note's PDF.

    With `[documents]` on, a mail whose document is not rendered yet waits for it (a transient
    failure: the outbox retries with backoff, rendering takes well under a second), and one
    whose e-invoice failed validation is not sent at all: it becomes a dead letter naming the
    document, since an invalid invoice must not reach the customer. With `[documents]` off the
    mail shows the invoice as a table and has no attachment.
    """

    async def attachments(job: MailJob, state: OrderState) -> Sequence[Attachment]:
        if not enabled():
            return ()
        number: str | None = None
        if job.kind == "invoice" and state.invoice is not None:
            number = state.invoice.number
        elif job.credit_note is not None and job.credit_note < len(state.credit_notes):
            number = state.credit_notes[job.credit_note].number
        if number is None:
            return ()
        files = await reader.for_invoice(number)
        if files is not None:
            return (Attachment(f"{number}.pdf", "application/pdf", files.pdf),)
        record = await reader.record(number)
        if record is None:
            raise TransientUpstreamError(TARGET, f"{TARGET}: {number}.pdf is not rendered yet")
        raise PermanentUpstreamError(
            TARGET,
            f"{TARGET}: {number} failed e-invoice validation (GET /v1/documents/invalid); "
            "the mail is held back with it",
        )

    return attachments


def smtp_settings(notify: NotifyConfig) -> SmtpSettings:
    return SmtpSettings(
        host=notify.host,
        port=notify.port,
        security=notify.security,
        user=notify.user,
        password=notify.password_file.secret if notify.password_file is not None else None,
        timeout=notify.timeout.seconds,
        ca_file=notify.ca_file,
        system=TARGET,
    )


class MailerMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.sent = Counter(
            "somsd_mails_sent",
            "Customer mails the SMTP relay accepted, per kind.",
            ["kind"],
            registry=registry,
        )
        self.failures = Counter(
            "somsd_mail_failures",
            "Customer mails that failed an attempt, per kind and outcome (transient: retried; "
            "permanent: dead-lettered).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "somsd_mail_send_seconds",
            "Rendering and sending one customer mail, failures included.",
            registry=registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )


class Mailer:
    """Registers the `notify/smtp` deliverer and keeps the SMTP pool; see the module docstring.

    Like the dispatcher it has no mailbox: its input is the outbox."""

    def __init__(
        self,
        store: EventStore,
        dispatcher: OutboxDispatcher,
        *,
        config: Callable[[], Config],
        registry: CollectorRegistry | None = None,
        now: Callable[[], datetime] = utc_now,
        attachments: AttachmentSource | None = None,
    ) -> None:
        self.name = "mailer"
        self.store = store
        self.dispatcher = dispatcher
        self.config = config
        self.now = now
        self.attachments = attachments
        self.metrics = MailerMetrics(registry)
        self._pool: SmtpPool | None = None
        self._renderer: Renderer | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.dispatcher.register(TARGET, self.deliver, limit=CONCURRENCY)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.dispatcher.unregister(TARGET, self.deliver)
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def pool(self, notify: NotifyConfig) -> SmtpPool:
        settings = smtp_settings(notify)
        if self._pool is None or self._pool.settings != settings:
            if self._pool is not None:
                self._pool.close()
            self._pool = SmtpPool(settings, max_idle=CONCURRENCY)
        return self._pool

    def renderer(self, notify: NotifyConfig) -> Renderer:
        if self._renderer is None or self._renderer.template_dir != notify.template_dir:
            self._renderer = Renderer(notify.template_dir)
        return self._renderer

    async def deliver(self, entry: OutboxEntry) -> None:
        job = decode_job(entry.payload)
        started = time.perf_counter()
        try:
            await self._deliver(entry, job)
        except PermanentUpstreamError:
            self.metrics.failures.labels(job.kind, "permanent").inc()
            raise
        except Exception:
            self.metrics.failures.labels(job.kind, "transient").inc()
            raise
        finally:
            self.metrics.seconds.observe(time.perf_counter() - started)
        self.metrics.sent.labels(job.kind).inc()

    async def _deliver(self, entry: OutboxEntry, job: MailJob) -> None:
        config = self.config()
        notify = config.notify
        if notify is None:
            raise TransientUpstreamError(
                TARGET, f"{TARGET}: no [notify] section configured; the mail waits for one"
            )
        blob = await self.store.read(partial(fetch_state, order_id=job.order_id))
        if blob is None:
            raise PermanentUpstreamError(TARGET, f"{TARGET}: order {job.order_id} does not exist")
        state = decode_state(blob)
        stores: dict[str, StoreAddress] = {
            location.name: location.address
            for location in config.location
            if location.address is not None
        }
        settings = mail_settings(notify, state.channel, stores)
        attachments = await self.attachments(job, state) if self.attachments else ()
        renderer, pool, now = self.renderer(notify), self.pool(notify), self.now()

        def compose_and_send() -> tuple[list[str], dict[str, str]]:
            # On the worker thread, with the SMTP conversation: building a mail is ~4 ms of
            # CPU, mostly the email package's header parsing, which the trio thread (every
            # request and actor of the daemon) should not pay. Jinja renders thread-safely.
            try:
                message, envelope = build_message(
                    job, state, settings, renderer, now=now, attachments=attachments
                )
            except InvalidRecipient as exc:
                raise PermanentUpstreamError(TARGET, f"{TARGET}: {exc}") from exc
            except TemplateProblem as exc:
                # A broken override template: retried, so fixing the file is all it takes.
                raise TransientUpstreamError(TARGET, f"{TARGET}: {exc}") from exc
            sender = getaddresses([settings.sender])[0][1]
            return envelope, pool.send_sync(sender, envelope, message.as_bytes())

        envelope, refused = await trio.to_thread.run_sync(compose_and_send)
        customer = envelope[0]
        if customer in refused:
            # The relay took a BCC but refused the customer: the mail is not delivered.
            answer = refused[customer]
            kind = PermanentUpstreamError if answer.startswith("5") else TransientUpstreamError
            raise kind(TARGET, f"{TARGET}: refused the recipient ({customer}: {answer})")
        log.info(
            "mail_sent",
            kind=job.kind,
            order_id=job.order_id,
            message_id=message_id_for(job.key, settings.sender),
            attempt=entry.attempts + 1,
        )
        if refused:
            # The customer got it; a BCC address was refused. Not worth a second mail.
            log.warning("mail_bcc_refused", order_id=job.order_id, refused=refused)
