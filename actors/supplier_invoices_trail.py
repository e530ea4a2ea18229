"""`InvoiceTrails`: reading and extending supplier invoices' hash-chained audit trails.

Each invoice's trail is its stream `supplier-invoice-<id>`; an append seals the new entries
onto the last one read and is written at the version read, so a concurrent append (the
supplier-invoice actor on one cluster member, the ERP posting on another) makes it read and
seal again instead of forking the chain. Only the event store is needed: any member can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

import msgspec

from adapters.errors import TransientUpstreamError
from somsd.store import EventStore, NewEvent, OutboxItem, StoredEvent, VersionConflict
from somsd.supplier_invoices.audit import AuditEntry, seal

__all__ = ["ACTOR", "STREAM_PREFIX", "InvoiceTrails", "entries_of", "now", "stream_of"]

STREAM_PREFIX: Final = "supplier-invoice-"
ACTOR: Final = "supplier_invoices"
_APPEND_ATTEMPTS: Final = 5


def stream_of(invoice: str) -> str:
    return STREAM_PREFIX + invoice


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def entries_of(stored: Sequence[StoredEvent]) -> list[AuditEntry]:
    return [event.decode(AuditEntry) for event in stored]


class InvoiceTrails:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def read_trail(self, invoice: str) -> list[AuditEntry]:
        return entries_of(await self.store.read_stream(stream_of(invoice)))

    async def append_steps(
        self,
        invoice: str,
        steps: Sequence[tuple[str, str]],
        *,
        outbox: Sequence[OutboxItem] = (),
        unless: Callable[[Sequence[AuditEntry]], bool] = lambda entries: False,
        blobs: Sequence[bytes] = (),
    ) -> list[AuditEntry] | None:
        """Chain `steps` onto the invoice's trail at the version read (a concurrent append
        makes it read and seal again), with `blobs` (files the steps name by SHA-256) in the
        same transaction; None when `unless` says it is already done."""
        for _ in range(_APPEND_ATTEMPTS):
            stored = await self.store.read_stream(stream_of(invoice))
            entries = entries_of(stored)
            if unless(entries):
                return None
            previous = entries[-1] if entries else None
            sealed: list[AuditEntry] = []
            at = now()
            for step, data in steps:
                previous = seal(previous, step, at, data)
                sealed.append(previous)
            try:
                await self.store.append(
                    stream_of(invoice),
                    [
                        NewEvent(
                            "SupplierInvoice" + entry.step.title().replace("_", ""),
                            msgspec.json.encode(entry),
                            {"actor": ACTOR},
                        )
                        for entry in sealed
                    ],
                    expected_version=len(stored),
                    outbox=outbox,
                    blobs=blobs,
                )
            except VersionConflict:
                continue
            return [*entries, *sealed]
        raise TransientUpstreamError("supplier_invoices", f"{invoice}: trail kept moving")
