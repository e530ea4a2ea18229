"""Approved supplier invoices into one DATEV Buchungsstapel per booking day, crash-safe.

An accounted invoice's `posted` step names its booking day (`booking_day` of its approval, in
the [invoicing] timezone with the inbox's `datev_cutoff`) and carries its DATEV bookings. Once
that day has ended (`day_end`), its batch is closed in three steps, each safe to repeat:

1. **Decide** (`close`): which invoices are in the day's batch and the exact bookings of each
   file (split per fiscal year) are one `DatevBatchDecided` event, stream
   `supplier-datev-<inbox>-<YYYYMMDD>` at version 0 (so a day is decided once), with an
   outbox item `supplier_invoices.datev` in the same transaction. After this commit no
   invoice can join or leave the batch; one approved later goes to the next open day.
2. **Write** (`deliver`): each file's bytes follow from the event alone (the header's creation
   time is the decision's), are kept for the audit as a blob of the event store (step 3), and
   written as `<datev_dir>/.<name>.part`, fsynced, renamed to `<name>` and the folder fsynced:
   the final name only ever shows a whole file. A redelivery after a crash writes the same
   bytes again.
3. **Record**: `datev_batch` (the file, its SHA-256, the batch) is appended to each invoice's
   trail with the file's bytes, unless it is there already.

Deliveries and closings run under one lock with the `posted` appends, so the day an invoice is
booked on and the set a closing takes cannot cross.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import msgspec
import structlog
import trio

from actors.outbox import OutboxDispatcher
from actors.supplier_invoices_erp import Trail
from adapters.errors import PermanentUpstreamError
from somsd.config import Config, SupplierInboxConfig
from somsd.files import write_atomically
from somsd.store import (
    MAX_BLOB_BYTES,
    Connection,
    EventStore,
    NewEvent,
    OutboxEntry,
    OutboxItem,
    VersionConflict,
    blob_key,
)
from somsd.supplier_invoices.audit import AuditEntry
from somsd.supplier_invoices.datev import (
    BatchPart,
    DatevBatch,
    DatevBooking,
    batch_parts,
    booking_day,
    datev_csv,
    day_end,
    day_start,
    parse_cutoff,
)

__all__ = ["BATCH_PREFIX", "DATEV_TARGET", "BatchDecided", "DatevBatcher"]

log = structlog.get_logger("actors.supplier_invoices")

DATEV_TARGET: Final = "supplier_invoices.datev"
BATCH_PREFIX: Final = "supplier-datev-"
_SCAN_LIMIT: Final = 100_000  # batch decisions read at start


class BatchJob(msgspec.Struct, frozen=True):
    inbox: str
    day: date


class BatchDecided(msgspec.Struct, frozen=True, kw_only=True):
    inbox: str
    day: date
    decided_at: datetime
    consultant: str
    client: str
    folder: str
    parts: tuple[BatchPart, ...]


def batch_stream(inbox: str, day: date) -> str:
    return f"{BATCH_PREFIX}{inbox}-{day:%Y%m%d}"


def _batch_rows(conn: Connection) -> list[bytes]:
    rows = conn.execute(
        "SELECT payload FROM events WHERE stream >= ? AND stream < ? AND type = ? "
        "ORDER BY seq LIMIT ?",
        (BATCH_PREFIX, BATCH_PREFIX[:-1] + ".", "DatevBatchDecided", _SCAN_LIMIT),
    ).fetchall()
    return [bytes(row[0]) for row in rows]


def has_batch(entries: Sequence[AuditEntry]) -> bool:
    return any(e.step == "datev_batch" for e in entries)


def _write_export(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return  # written before a crash; rewriting it would only move its mtime
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


class DatevBatcher:
    """The day batches of all inboxes; see the module docstring. Owned by the supplier-invoice
    actor (which calls `load`, `book`, `accounted` and `close_due`, and registers `deliver`)."""

    def __init__(
        self,
        config: Callable[[], Config],
        *,
        store: EventStore,
        dispatcher: OutboxDispatcher,
        trail: Trail,
        folder: Callable[[SupplierInboxConfig], Path],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.trail = trail
        self.folder = folder
        self.clock = clock
        self.lock = trio.Lock()
        # (inbox, day) -> invoice -> its bookings, for the days not yet decided
        self.open: dict[tuple[str, date], dict[str, tuple[DatevBooking, ...]]] = {}
        self.closed: set[tuple[str, date]] = set()

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.config().invoicing.timezone)

    # -- the index ----------------------------------------------------------------------

    async def load(self, posted: Sequence[tuple[str, str, date, tuple[DatevBooking, ...]]]) -> None:
        """At start: the decided days, then the accounted invoices no decision took."""
        decided = [
            msgspec.json.decode(row, type=BatchDecided)
            for row in await self.store.read(_batch_rows)
        ]
        batched = {invoice for d in decided for part in d.parts for invoice in part.invoices}
        self.closed = {(d.inbox, d.day) for d in decided}
        for invoice, inbox, day, bookings in posted:
            if invoice not in batched:
                self.open.setdefault((inbox, day), {})[invoice] = bookings

    def book(self, section: SupplierInboxConfig, approved_at: datetime) -> tuple[date, date]:
        """(booking day, Belegdatum) of an approval: its day, or the first one still open
        after it when that day's batch was decided already (an output delivered late). Call
        under `lock`."""
        zone = self._zone()
        cutoff = parse_cutoff(section.datev_cutoff)
        day = booking_day(approved_at, cutoff, zone)
        at = approved_at
        while (section.name, day) in self.closed:
            day += timedelta(days=1)
            at = max(at, day_start(day, cutoff, zone))
        return day, at.astimezone(zone).date()

    def accounted(
        self, inbox: str, day: date, invoice: str, bookings: tuple[DatevBooking, ...]
    ) -> None:
        self.open.setdefault((inbox, day), {})[invoice] = bookings

    # -- closing --------------------------------------------------------------------------

    async def close_due(self) -> int:
        """Decide every open day that has ended; the number decided."""
        now = self.clock()
        zone = self._zone()
        decided = 0
        for inbox, day in sorted(self.open):
            section = next((s for s in self.config().supplier_inbox if s.name == inbox), None)
            if section is None or day_end(day, parse_cutoff(section.datev_cutoff), zone) > now:
                continue
            await self.close(section, day)
            decided += 1
        return decided

    async def close(self, section: SupplierInboxConfig, day: date) -> None:
        async with self.lock:
            accounted = self.open.get((section.name, day))
            if not accounted:
                return
            decision = BatchDecided(
                inbox=section.name,
                day=day,
                decided_at=self.clock(),
                consultant=section.datev_consultant,
                client=section.datev_client,
                folder=str(self.folder(section)),
                parts=tuple(
                    batch_parts(
                        f"EXTF_Buchungsstapel_{day:%Y%m%d}_{section.name}",
                        accounted.items(),
                        section.fiscal_year_start_month,
                    )
                ),
            )
            try:
                await self.store.append(
                    batch_stream(section.name, day),
                    [
                        NewEvent(
                            "DatevBatchDecided",
                            msgspec.json.encode(decision),
                            {"actor": "supplier_invoices"},
                        )
                    ],
                    expected_version=0,
                    outbox=[
                        OutboxItem(
                            DATEV_TARGET,
                            msgspec.json.encode(BatchJob(section.name, day)),
                            f"supplier-datev:{section.name}:{day:%Y%m%d}",
                        )
                    ],
                )
            except VersionConflict:
                # Decided already (by an earlier owner of the lease): what it did not take goes
                # into the next day's batch, never into none or two.
                stored = await self.store.read_stream(batch_stream(section.name, day))
                earlier = stored[0].decode(BatchDecided)
                taken = {invoice for part in earlier.parts for invoice in part.invoices}
                left = {i: b for i, b in accounted.items() if i not in taken}
                if left:
                    self.open.setdefault((section.name, day + timedelta(days=1)), {}).update(left)
                log.warning(
                    "datev_batch_decided_before", inbox=section.name, day=str(day), moved=len(left)
                )
            self.closed.add((section.name, day))
            del self.open[(section.name, day)]
        log.info(
            "datev_batch_decided",
            inbox=section.name,
            day=str(day),
            invoices=len(accounted),
            files=[part.file for part in decision.parts],
        )
        self.dispatcher.wake()

    # -- writing (the outbox's delivery) ------------------------------------------------------

    async def deliver(self, entry: OutboxEntry) -> None:
        job = msgspec.json.decode(entry.payload, type=BatchJob)
        stored = await self.store.read_stream(batch_stream(job.inbox, job.day))
        decision = stored[0].decode(BatchDecided)
        folder = Path(decision.folder)
        for part in decision.parts:
            data = datev_csv(
                DatevBatch(
                    consultant=decision.consultant,
                    client=decision.client,
                    fiscal_year_start=part.fiscal_year_start,
                    created_at=decision.decided_at,
                    bookings=part.bookings,
                )
            )
            if len(data) > MAX_BLOB_BYTES:
                # Kept for the audit as a blob, which holds at most this: not worth retrying.
                raise PermanentUpstreamError(
                    DATEV_TARGET,
                    f"{DATEV_TARGET}: {part.file} is {len(data)} bytes, more than the "
                    f"{MAX_BLOB_BYTES} somsd stores",
                    operation="datev batch",
                )
            sha256 = blob_key(data)
            path = folder / part.file
            await trio.to_thread.run_sync(_write_export, path, data)
            step = msgspec.json.encode(
                {
                    "target": "datev",
                    "batch": batch_stream(job.inbox, job.day),
                    "day": job.day,
                    "file": str(path),
                    "sha256": sha256,
                    "invoices": len(part.invoices),
                }
            ).decode()
            for invoice in part.invoices:
                # Each invoice's step carries the batch's bytes (stored once: the key is their
                # hash), so they are in whichever append commits first after a crash.
                await self.trail.append_steps(
                    invoice, [("datev_batch", step)], unless=has_batch, blobs=[data]
                )
            log.info("datev_batch_written", file=str(path), invoices=len(part.invoices))
