"""Approved supplier invoices into SelectLine as supplier invoices (`E`), exactly once.

An approval (the decision, or an operator's override) carries, in its own transaction, an
outbox item for target `erp/<erp>/supplier-invoices` with key `supplier-invoice:<id>:erp:<erp>`
when its `[[supplier_inbox]]` names an `erp`. The target belongs to the ERP's duty `erp/<erp>`
(`actors.outbox_claims.duty_of_target`), and its deliverer is registered by the running
`SelectLineErp` of that section with its session (the daemon's one login and licence seat;
`deliverers`): on a cluster the member holding the ERP's lease posts it, whichever member holds
the supplier invoices' (an earlier target, `supplier_invoices.erp`, belonged to no duty, so on
a cluster nobody ever claimed it). The trail is read and extended through the event store
alone (`InvoiceTrails`), so the posting member needs no supplier inbox of its own:

1. the trail has `erp_posted` for this ERP: done (a redelivery after the commit);
2. look: the supplier's `E` documents with the invoice number as reference
   (`adapters.selectline.purchasing`); none: create it;
3. add the positions the document lacks (all of a new one; the missing tail of one whose
   answers were lost, or that a SIGKILL left half-made);
4. read the document back and append `erp_posted` (the ERP, the document key and number, its
   net and gross as the ERP computed them) to the invoice's hash-chained trail.

A refusal (an unknown supplier, an unknown article: 4xx) parks the item in the dead letters
with the ERP's words; after the master data is fixed, requeueing it resumes at step 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, Protocol

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter

from actors.outbox import Deliver
from adapters.errors import PermanentUpstreamError
from adapters.selectline.client import SelectLineClient
from adapters.selectline.purchasing import (
    SUPPLIER,
    SUPPLIER_INVOICE,
    NotPostable,
    PositionsDiffer,
    adoptable_invoice,
    positions_to_add,
    supplier_invoice_header,
    supplier_invoice_positions,
)
from somsd.store import OutboxEntry, OutboxItem
from somsd.supplier_invoices.audit import AuditEntry
from somsd.supplier_invoices.model import SupplierInvoice

__all__ = ["ErpJob", "SupplierInvoicePoster", "erp_item", "erp_posted", "erp_target_of"]

log = structlog.get_logger("actors.supplier_invoices")

_TARGET_SUFFIX: Final = "supplier-invoices"


def erp_target_of(erp: str) -> str:
    """The outbox target of supplier invoices posted to `[[erp]] name = erp`."""
    return f"erp/{erp}/{_TARGET_SUFFIX}"


class ErpJob(msgspec.Struct, frozen=True):
    invoice: str
    erp: str


def erp_item(invoice: str, erp: str) -> OutboxItem:
    key = f"supplier-invoice:{invoice}:erp:{erp}"
    return OutboxItem(erp_target_of(erp), msgspec.json.encode(ErpJob(invoice, erp)), key)


def erp_posted(entries: Sequence[AuditEntry], erp: str) -> bool:
    return any(
        e.step == "erp_posted" and msgspec.json.decode(e.data).get("erp") == erp for e in entries
    )


class Trail(Protocol):
    """What the poster needs of the supplier-invoice actor: an invoice's trail, and appending
    steps to it (`unless` the trail already says it is done)."""

    async def read_trail(self, invoice: str) -> list[AuditEntry]: ...

    async def append_steps(
        self,
        invoice: str,
        steps: Sequence[tuple[str, str]],
        *,
        unless: Callable[[Sequence[AuditEntry]], bool],
        blobs: Sequence[bytes] = (),
    ) -> list[AuditEntry] | None: ...


class SupplierInvoicePoster:
    """Delivers `erp/<name>/supplier-invoices`; see the module docstring. One per daemon."""

    def __init__(self, trail: Trail, registry: CollectorRegistry) -> None:
        self.trail = trail
        self.posted = Counter(
            "somsd_supplier_invoices_erp_posted_total",
            "Approved supplier invoices posted to an ERP as supplier invoice (SelectLine E)",
            ["erp"],
            registry=registry,
        )

    def deliverers(self, erp: str, client: SelectLineClient) -> dict[str, Deliver]:
        """What the running `SelectLineErp` of `erp` registers with its session."""
        return {erp_target_of(erp): partial(self.deliver, client)}

    async def deliver(self, client: SelectLineClient, entry: OutboxEntry) -> None:
        job = msgspec.json.decode(entry.payload, type=ErpJob)
        target = f"erp/{job.erp}"
        entries = await self.trail.read_trail(job.invoice)
        if not entries:
            raise PermanentUpstreamError(target, f"no supplier invoice {job.invoice}")
        if erp_posted(entries, job.erp):
            return
        invoice, supplier = _invoice_of(entries)
        try:
            header = supplier_invoice_header(invoice, supplier, job.invoice)
            wanted = supplier_invoice_positions(invoice)
        except NotPostable as exc:
            raise PermanentUpstreamError(target, f"{job.invoice}: not postable: {exc}") from exc
        found = adoptable_invoice(
            await client.partner_documents(
                SUPPLIER_INVOICE,
                SUPPLIER,
                supplier,
                BusinessPartnerReferenceNumber=invoice.number,
            ),
            supplier,
            invoice.number,
        )
        key = found.key if found else (await client.create_document(header)).DocumentKey
        try:
            missing = positions_to_add(await client.positions(key), wanted)
        except PositionsDiffer as exc:
            raise PermanentUpstreamError(
                target, f"{target}: {key} is not {job.invoice} any more: {exc}"
            ) from exc
        for item in missing:
            await client.add_article(key, item)
        document = await client.document(key)
        data = {
            "erp": job.erp,
            "kind": SUPPLIER_INVOICE,
            "document": key,
            "number": document.Number,
            "positions": len(wanted),
            "found": found is not None,  # adopted a document made by an earlier attempt
            "completed": len(missing) if found is not None else 0,  # positions it still lacked
            "net": document.NetAmount,
            "gross": document.GrossAmount,
        }
        done = await self.trail.append_steps(
            job.invoice,
            [("erp_posted", msgspec.json.encode(data).decode())],
            unless=lambda trail: erp_posted(trail, job.erp),
        )
        if done is None:
            return
        if invoice.grand_total is not None and document.GrossAmount != invoice.grand_total:
            log.warning(
                "supplier_invoice_erp_total_differs",
                invoice=job.invoice,
                document=key,
                erp_gross=str(document.GrossAmount),
                invoice_gross=str(invoice.grand_total),
            )
        self.posted.labels(job.erp).inc()
        log.info("supplier_invoice_erp_posted", invoice=job.invoice, erp=job.erp, document=key)


def _invoice_of(entries: Sequence[AuditEntry]) -> tuple[SupplierInvoice, str]:
    """The extracted invoice and the supplier number the decision identified."""
    extracted = next(e for e in entries if e.step == "extracted")
    invoice = msgspec.convert(
        msgspec.json.decode(extracted.data)["invoice"], SupplierInvoice, strict=False
    )
    supplier = ""
    for entry in entries:
        if entry.step in ("decided", "overridden"):
            supplier = msgspec.json.decode(entry.data).get("supplier") or supplier
    if not supplier:
        raise PermanentUpstreamError("erp", "the invoice has no supplier number to post it under")
    return invoice, supplier
