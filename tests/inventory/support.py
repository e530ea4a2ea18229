"""Helpers for the inventory tests: asking the actor in one line, fixed report times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from actors.inventory import (
    GetPositions,
    Inventory,
    ReleaseStock,
    ReportStock,
    ReserveStock,
)
from somsd.domain.atp import (
    ChannelStockPolicy,
    ReservationReleased,
    StockCount,
    StockLine,
    StockPosition,
    StockRefused,
    StockReport,
    StockReportDecision,
    StockReserved,
)
from somsd.projections import all_projections
from somsd.projections.stock import StockLevels
from somsd.store import Projection

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def projections() -> list[Projection]:
    """The daemon's projections plus the stock levels (until the daemon lists them itself)."""
    listed = all_projections()
    if not any(p.name == StockLevels.name for p in listed):
        listed.append(StockLevels())
    return listed


def shop(*locations: str, **kwargs: Any) -> ChannelStockPolicy:
    return ChannelStockPolicy("shop", frozenset(locations), **kwargs)


async def report(
    inventory: Inventory,
    location: str,
    counts: dict[str, int],
    *,
    as_of: datetime = T0,
    complete: bool = False,
) -> StockReportDecision:
    rows = tuple(StockCount(sku, on_hand) for sku, on_hand in counts.items())
    stock_report = StockReport(location, as_of, rows, complete)
    decision: StockReportDecision = await inventory.ask(
        lambda reply: ReportStock(stock_report, reply)
    )
    return decision


async def reserve(
    inventory: Inventory, rid: str, location: str, **lines: int
) -> StockReserved | StockRefused:
    wanted = tuple(StockLine(sku, quantity) for sku, quantity in lines.items())
    result: StockReserved | StockRefused = await inventory.ask(
        lambda reply: ReserveStock(rid, location, wanted, reply)
    )
    return result


async def release(
    inventory: Inventory, rid: str, **lines: int
) -> ReservationReleased | StockRefused:
    wanted = tuple(StockLine(sku, q) for sku, q in lines.items()) if lines else None
    result: ReservationReleased | StockRefused = await inventory.ask(
        lambda reply: ReleaseStock(rid, wanted, reply)
    )
    return result


async def positions(inventory: Inventory, sku: str) -> tuple[StockPosition, ...]:
    found: tuple[StockPosition, ...] = await inventory.ask(lambda reply: GetPositions(sku, reply))
    return found


def later(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)
