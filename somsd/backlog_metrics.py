"""Gauges of the work standing in the projections: orders per status, open fulfilments.

The counters (`somsd_order_status_total`, `somsd_fulfilment_steps_total`) say how much moved;
a dashboard's "orders by status" and "fulfilment backlog per location" need how much *stands*
right now. Both are read from the projection tables by one scrape hook (a worker-thread read
through the store, like the outbox gauges), so a scrape never blocks the event loop.
"""

from __future__ import annotations

import msgspec
from prometheus_client import CollectorRegistry, Gauge

from somsd.projections.fulfilments import OPEN_STATES
from somsd.store import Connection

__all__ = ["BacklogCounts", "BacklogMetrics", "count_backlog"]


class BacklogCounts(msgspec.Struct, frozen=True):
    orders_by_status: dict[str, int]
    open_fulfilments: dict[tuple[str, str], int]  # (location, state) -> count


def count_backlog(conn: Connection) -> BacklogCounts:
    orders = dict(conn.execute("SELECT status, count(*) FROM orders GROUP BY status").fetchall())
    # covered by the index fulfilments_by_location; finished states are dropped here
    rows = conn.execute(
        "SELECT location, state, count(*) FROM fulfilments GROUP BY location, state"
    ).fetchall()
    return BacklogCounts(
        orders_by_status={str(s): int(n) for s, n in orders.items()},
        open_fulfilments={
            (str(loc), str(state)): int(n) for loc, state, n in rows if state in OPEN_STATES
        },
    )


class BacklogMetrics:
    """`somsd_orders{status}` and `somsd_fulfilments_open{location,state}`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.orders = Gauge(
            "somsd_orders",
            "Orders currently in each status (from the orders projection).",
            ["status"],
            registry=registry,
        )
        self.fulfilments_open = Gauge(
            "somsd_fulfilments_open",
            "Fulfilments a location still has to work on, by location and state.",
            ["location", "state"],
            registry=registry,
        )

    def publish(self, counts: BacklogCounts) -> None:
        # clear() first: a status or location that emptied must drop to nothing, not freeze
        self.orders.clear()
        for status, count in counts.orders_by_status.items():
            self.orders.labels(status).set(count)
        self.fulfilments_open.clear()
        for (location, state), count in counts.open_fulfilments.items():
            self.fulfilments_open.labels(location, state).set(count)
