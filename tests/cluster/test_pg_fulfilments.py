"""The fulfilment projection's queries on PostgreSQL: a location's pick list (the query behind
`GET /v1/fulfillments?location=` and the oversold give-up after a 3PL count) filters by
location there as on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

import msgspec
import trio
from prometheus_client import CollectorRegistry

from somsd.domain.atp import StockLine
from somsd.projections import all_projections
from somsd.projections.fulfilments import (
    OPEN_STATES,
    FulfilmentRequested,
    fulfilment_stream,
    list_fulfilments,
)
from somsd.store import NewEvent
from somsd.store.postgres import PostgresEventStore

AT = datetime(2026, 12, 7, 9, tzinfo=UTC)


def requested(fulfilment_id: str, location: str, sku: str) -> NewEvent:
    lines = (StockLine(sku, 1),)
    event = FulfilmentRequested(
        at=AT,
        actor="fulfilments",
        fulfilment_id=fulfilment_id,
        order_id=f"o-{fulfilment_id}",
        order_number=fulfilment_id,
        location=location,
        kind="ship",
        lines=lines,
        reserved_lines=lines,
    )
    return NewEvent(type(event).__name__, msgspec.json.encode(event))


async def test_a_pick_list_of_one_location_on_postgres(pg_dsn: str, nursery: trio.Nursery) -> None:
    store = PostgresEventStore(pg_dsn, all_projections(), registry=CollectorRegistry())
    await nursery.start(store.run)
    for fulfilment_id, location, sku in [
        ("f-1", "wh-1", "B"),
        ("f-2", "wh-2", "A"),
        ("f-3", "wh-1", "A"),
        ("f-4", "wh-1", "C"),
    ]:
        await store.append(
            fulfilment_stream(fulfilment_id),
            [requested(fulfilment_id, location, sku)],
            expected_version=0,
        )

    async def ids(location: str | None, offset: int = 0, limit: int = 100) -> list[str]:
        found = await store.read(
            partial(
                list_fulfilments, location=location, states=OPEN_STATES, offset=offset, limit=limit
            )
        )
        return [f.fulfilment_id for f in found]

    assert await ids("wh-1") == ["f-3", "f-1", "f-4"]  # by first SKU
    assert await ids(None) == ["f-2", "f-3", "f-1", "f-4"]  # by first SKU, then oldest first
    assert await ids("wh-1", offset=1, limit=1) == ["f-1"]
    assert await ids("wh-3") == []
