"""`CsvLocation`: a location that exchanges CSV files through folders (`adapter = "csv"`).

Many warehouses and older WMSs take work as files on a share and drop status and stock files
back. Two folders per location:

```
outbound/               fulfilment files we write; the warehouse takes them away
inbound/                status*.csv and stock*.csv the warehouse writes (atomically, please)
inbound/processed/      every inbound file we have handled, kept as evidence
inbound/quarantine/     refused rows (<stem>.<hash>.rejected.csv) and why
                        (<stem>.<hash>.reason.txt); whole files we could not read at all
```

Writing is atomic (see `files.py`): the warehouse never sees a half-written fulfilment. The
same fulfilment id always gets the same file name, so a retry replaces the file instead of
adding a second one — as long as the warehouse has not taken the first away yet; after that a
retry delivers it again, and the warehouse must ignore a fulfilment id it already has (the
same rule as the `rest` protocol's idempotency, in file form).

Reading is two steps so that nothing is lost: `read_inbound()` parses the finished files and
quarantines what it refuses; the caller records the good rows durably and only then calls
`mark_processed(file)`, which moves the file to `processed/`. A crash in between reads the file
again on restart, which is harmless: statuses only move forward and stock counts are absolute
and time-stamped. Good rows of a file with bad rows still count; the bad ones wait in
quarantine with their line numbers, for someone to fix and drop back in as a new file.

All file I/O runs in worker threads (`trio.to_thread.run_sync`) behind one `CapacityLimiter`
per location, so a slow share blocks only this location's adapter, never the event loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from adapters.csvfiles.errors import translate_os_error
from adapters.csvfiles.files import list_pending, move_unique, write_atomic
from adapters.csvfiles.wire import (
    FulfillmentFile,
    MalformedFile,
    StatusFile,
    StockFile,
    format_fulfillment,
    format_problem_reasons,
    format_problem_rows,
    fulfillment_file_name,
    parse_inbound,
)

__all__ = ["PROCESSED", "QUARANTINE", "CsvLocation", "InboundFile"]

PROCESSED = "processed"
QUARANTINE = "quarantine"

InboundFile = StatusFile | StockFile
T = TypeVar("T")


class CsvLocation:
    """The folders of one CSV location; `system` is its configured name, used in errors."""

    def __init__(
        self,
        *,
        outbound: Path,
        inbound: Path,
        system: str,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.outbound = outbound
        self.inbound = inbound
        self.system = system
        # One file operation at a time per location: moves and scans of one folder never race.
        self._limiter = limiter or trio.CapacityLimiter(1)

    async def send_fulfillment(self, fulfillment: FulfillmentFile) -> Path:
        """Write `fulfillment-<id>.csv` to the outbound folder, atomically; returns its path."""
        name = fulfillment_file_name(fulfillment.fulfillment_id)
        data = format_fulfillment(fulfillment).encode()
        return await self._run(
            partial(write_atomic, self.outbound, name, data), "write", self.outbound / name
        )

    async def read_inbound(self) -> list[InboundFile]:
        """Every finished inbound file, parsed, in name order; refused rows are quarantined.

        A file that cannot be read at all is moved to quarantine whole and not returned.
        """
        return await self._run(partial(_read_inbound, self.inbound), "read", self.inbound)

    async def mark_processed(self, file: InboundFile) -> Path:
        """Move a handled file to `processed/`; call it after its rows are recorded."""
        source = self.inbound / file.name
        return await self._run(
            partial(move_unique, source, self.inbound / PROCESSED), "move", source
        )

    async def _run(self, step: Callable[[], T], operation: str, path: Path) -> T:
        try:
            return await trio.to_thread.run_sync(step, limiter=self._limiter)
        except OSError as exc:
            raise translate_os_error(
                exc, system=self.system, operation=operation, path=path
            ) from exc


def _read_inbound(inbound: Path) -> list[InboundFile]:
    """The blocking body of `read_inbound` (one thread hop for the whole scan)."""
    quarantine = inbound / QUARANTINE
    files: list[InboundFile] = []
    for path in list_pending(inbound):
        data = path.read_bytes()
        try:
            parsed = parse_inbound(path.name, data)
        except MalformedFile as exc:
            quarantine.mkdir(exist_ok=True)
            moved = move_unique(path, quarantine)
            write_atomic(quarantine, f"{moved.name}.reason.txt", f"{exc}\n".encode())
            continue
        if parsed.parsed.problems:
            _quarantine_rows(quarantine, path, data, parsed)
        files.append(parsed)
    return files


def _quarantine_rows(quarantine: Path, source: Path, data: bytes, file: InboundFile) -> None:
    """Write the refused rows and their reasons beside each other in quarantine.

    Named by the file's stem and a hash of its content: reading the same file again (after a
    crash before `mark_processed`) rewrites the same two files, while a later file reusing the
    name (`stock.csv` every hour) gets its own pair.
    """
    quarantine.mkdir(exist_ok=True)
    base = f"{source.stem}.{hashlib.sha256(data).hexdigest()[:8]}"
    parsed = file.parsed
    rows = format_problem_rows(parsed.header, parsed.problems)
    reasons = format_problem_reasons(source.name, parsed.problems)
    write_atomic(quarantine, f"{base}.rejected.csv", rows.encode())
    write_atomic(quarantine, f"{base}.reason.txt", reasons.encode())
