"""`CsvWarehouseSimulator`: the warehouse on the other side of a CSV location's folders.

Shipped for `somsd demo` and the tests: it does to the folders what a file-based WMS does, so
the real `CsvLocation` runs against real files. Every `poll_interval` it takes the finished
fulfilment files from the outbound folder (moving them to `outbound/taken/`, as a WMS removes
what it imported) and works each one: every `step_delay` seconds it writes one status file
(accepted, picked, packed, then shipped with carrier and tracking number, or ready_for_pickup
and picked_up) into the inbound folder, atomically, named `status-<sequence>.csv` so name
order is change order. With `stock=` it tracks on-hand counts: lines short of stock are
rejected out_of_stock while picking, shipped units leave the count, and a `stock-<sequence>.csv`
with every SKU follows each shipment. `bad_row_rate` adds an unreadable row to that share of
status files, to show quarantine at work. A fulfilment file it cannot read is moved to
`outbound/refused/`.

Time is trio's (sleeps), so it runs on the real clock; the file operations are threads, which
an autojump clock would not wait for.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Final, TypeVar

import msgspec
import trio

from adapters.csvfiles.files import list_pending, move_unique, write_atomic
from adapters.csvfiles.wire import (
    FulfillmentFile,
    MalformedFile,
    Status,
    StatusRow,
    StockRow,
    decode_text,
    format_status,
    format_stock,
    parse_fulfillment,
)

__all__ = ["CsvWarehouseSimulator"]

_TRACKING_PREFIX: Final = "00340434"  # DHL Parcel DE shipment numbers: 20 digits, this prefix
_STEPS: Final[dict[str, tuple[Status, ...]]] = {
    "ship": ("accepted", "picked", "packed", "shipped"),
    "pickup": ("accepted", "picked", "packed", "ready_for_pickup", "picked_up"),
}
T = TypeVar("T")
_BAD_ROW: Final = "\r\n;exploded;yesterday;;;;;\r\n"  # three problems, one row


class CsvWarehouseSimulator:
    """Works fulfilment files from `outbound` and reports into `inbound` (see module docs)."""

    def __init__(
        self,
        *,
        outbound: Path,
        inbound: Path,
        step_delay: float = 1.0,
        poll_interval: float = 0.5,
        stock: Mapping[str, int] | None = None,
        carrier: str = "dhl",
        bad_row_rate: float = 0.0,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbound = outbound
        self.inbound = inbound
        self.step_delay = step_delay
        self.poll_interval = poll_interval
        self.stock: dict[str, int] | None = dict(stock) if stock is not None else None
        self.carrier = carrier
        self.bad_row_rate = bad_row_rate
        self.taken: list[str] = []  # fulfilment ids, in the order they were taken
        self._clock = clock
        self._rng = random.Random(seed)
        self._sequence = 0
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll the outbound folder and work what arrives, until cancelled."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                for fulfillment in await self._thread(self._take_files):
                    self.taken.append(fulfillment.fulfillment_id)
                    nursery.start_soon(self._work, fulfillment)
                await trio.sleep(self.poll_interval)

    def _take_files(self) -> list[FulfillmentFile]:
        taken: list[FulfillmentFile] = []
        for path in list_pending(self.outbound, prefix="fulfillment-"):
            try:
                fulfillment = parse_fulfillment(
                    decode_text(path.read_bytes(), path.name), path.name
                )
            except MalformedFile:
                move_unique(path, self.outbound / "refused")
                continue
            move_unique(path, self.outbound / "taken")
            taken.append(fulfillment)
        return taken

    async def _work(self, fulfillment: FulfillmentFile) -> None:
        kept = {line.sku: 0 for line in fulfillment.lines}
        for line in fulfillment.lines:
            kept[line.sku] += line.quantity
        for status in _STEPS[fulfillment.mode]:
            await trio.sleep(self.step_delay)
            rows = self._step(fulfillment.fulfillment_id, status, kept)
            await self._write_status(rows)
            if all(row.status == "rejected" for row in rows):
                return  # every unit rejected: nothing left to pack
            if status in ("shipped", "picked_up") and self.stock is not None:
                await self._write_stock()

    def _step(self, fulfillment_id: str, status: Status, kept: dict[str, int]) -> list[StatusRow]:
        """The rows one step writes; picking rejects what stock cannot cover (updating `kept`),
        shipping or collecting takes the kept units off the count."""
        at = datetime.fromtimestamp(self._clock(), UTC)
        row = StatusRow(fulfillment_id=fulfillment_id, status=status, at=at)
        if status == "picked" and self.stock is not None:
            rejected: list[StatusRow] = []
            for sku, quantity in kept.items():
                short = quantity - max(0, min(quantity, self.stock.get(sku, 0)))
                if short:
                    kept[sku] -= short
                    rejected.append(
                        StatusRow(
                            fulfillment_id=fulfillment_id,
                            status="rejected",
                            at=at,
                            sku=sku,
                            quantity=short,
                            reason="out_of_stock",
                        )
                    )
            return rejected if not any(kept.values()) else [row, *rejected]
        if status in ("shipped", "picked_up") and self.stock is not None:
            for sku, quantity in kept.items():
                self.stock[sku] = self.stock.get(sku, 0) - quantity
        if status == "shipped":
            tracking = _TRACKING_PREFIX + "".join(str(self._rng.randrange(10)) for _ in range(12))
            return [msgspec.structs.replace(row, carrier=self.carrier, tracking_number=tracking)]
        return [row]

    async def _write_status(self, rows: list[StatusRow]) -> None:
        text = format_status(rows)
        if self._rng.random() < self.bad_row_rate:
            text = text.rstrip("\r\n") + _BAD_ROW
        await self._write(f"status-{self._next():08d}.csv", text)

    async def _write_stock(self) -> None:
        as_of = datetime.fromtimestamp(self._clock(), UTC)
        rows = [
            StockRow(sku=sku, on_hand=n, as_of=as_of)
            for sku, n in sorted((self.stock or {}).items())
        ]
        await self._write(f"stock-{self._next():08d}.csv", format_stock(rows))

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    async def _write(self, name: str, text: str) -> None:
        await self._thread(partial(write_atomic, self.inbound, name, text.encode()))

    async def _thread(self, step: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(step, limiter=self._limiter)
