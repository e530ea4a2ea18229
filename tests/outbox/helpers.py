"""Shared pieces of the outbox tests: a recording sink, fast settings, small waits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import trio
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from actors.location import (
    DeliveryLine,
    FulfilmentStatus,
    LineRejection,
    SendFulfilment,
)
from actors.outbox import OutboxDispatcher
from somsd.config import Duration, LocationConfig, SecretFile
from somsd.domain.atp import RejectionReason, StockReport
from somsd.domain.order import Address
from somsd.http import HttpListener
from somsd.secrets import Secret
from somsd.store import EventStore, NewEvent, OutboxEntry, OutboxItem, OutboxState
from somsd.supervisor import Backoff

Serve = Callable[[ASGIApp], Awaitable[tuple[str, HttpListener]]]

# Real sockets and a store thread: loopback answers in milliseconds, so five seconds fails a
# hung test quickly while absorbing a loaded CI machine.
BUDGET = 5.0
# Retries in tens of milliseconds: the production schedule (1 s doubling to 5 min) scaled down
# so a test sees several attempts in well under a second.
FAST_BACKOFF = Backoff(initial=0.02, factor=2.0, maximum=0.2, jitter=0.2)
SHIP_TO = Address(name="Max Muster", street="Hauptstr. 1", zip="10115", city="Berlin", country="DE")
ADMIN_TOKEN = "admin-token-for-tests"


def fast_dispatcher(
    store: EventStore, registry: CollectorRegistry, **overrides: Any
) -> OutboxDispatcher:
    settings: dict[str, Any] = {
        "backoff": FAST_BACKOFF,
        "max_attempts": 1000,
        "poll_interval": 0.05,
        **overrides,
    }
    return OutboxDispatcher(store, registry=registry, **settings)


def payload(fulfilment_id: str, *lines: tuple[str, int], mode: str = "ship") -> bytes:
    return msgspec.json.encode(
        SendFulfilment(
            fulfilment_id=fulfilment_id,
            order_ref=f"order-{fulfilment_id}",
            mode="pickup" if mode == "pickup" else "ship",
            ship_to=SHIP_TO,
            lines=tuple(
                DeliveryLine(sku=sku, quantity=qty) for sku, qty in lines or [("MUG-1", 1)]
            ),
        )
    )


async def add_outbox(store: EventStore, target: str, items: Iterable[tuple[bytes, str]]) -> None:
    """Append one event carrying outbox items (payload, idempotency key) for `target`."""
    await store.append(
        "test-effects",
        [NewEvent("effect_requested", b"{}")],
        outbox=[OutboxItem(target, body, key) for body, key in items],
    )


async def outbox_states(store: EventStore, target: str | None = None) -> dict[str, int]:
    """Pending and dead counts (delivered ones are not counted by the store)."""
    counts = await store.outbox_counts()
    if target is None:
        return {"pending": sum(counts.pending.values()), "dead": sum(counts.dead.values())}
    return {"pending": counts.pending.get(target, 0), "dead": counts.dead.get(target, 0)}


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], *, budget: float = BUDGET
) -> None:
    """Check `condition` on the real clock until it holds; fail after `budget` seconds."""
    with trio.fail_after(budget):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.01)


async def counts_are(store: EventStore, *, pending: int, dead: int) -> bool:
    return await outbox_states(store) == {"pending": pending, "dead": dead}


async def all_delivered(store: EventStore) -> bool:
    return await counts_are(store, pending=0, dead=0)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def location(
    tmp_path: Path,
    name: str = "wh-1",
    *,
    adapter: str = "rest",
    url: str | None = None,
    token: str | None = None,
    callback_secret: str | None = None,
    poll: str = "50ms",
    outbound: Path | None = None,
    inbound: Path | None = None,
) -> LocationConfig:
    def secret_file(kind: str, value: str | None) -> SecretFile | None:
        if value is None:
            return None
        path = tmp_path / f"{name}.{kind}"
        path.write_text(value + "\n")
        return SecretFile(path, Secret(value + "\n"))

    return LocationConfig(
        name=name,
        adapter=adapter,  # type: ignore[arg-type]  # tests pass the literal names
        url=url,
        token_file=secret_file("token", token),
        callback_secret_file=secret_file("callback", callback_secret),
        poll_interval=Duration(poll),
        outbound_dir=str(outbound) if outbound else None,
        inbound_dir=str(inbound) if inbound else None,
    )


class Update(msgspec.Struct, frozen=True):
    location: str
    fulfilment_id: str
    status: str
    lines: tuple[LineRejection, ...]
    tracking_number: str | None
    carrier: str | None
    reason: str | None
    at: datetime | None


class RecordingSink:
    """A `LocationSink` that records every call; `refuse` makes it raise instead."""

    def __init__(self) -> None:
        self.updates: list[Update] = []
        self.reports: list[StockReport] = []
        self.refuse = False
        self.refused = 0

    async def location_update(
        self,
        location: str,
        fulfilment_id: str,
        status: FulfilmentStatus,
        *,
        lines: tuple[LineRejection, ...] = (),
        tracking_number: str | None = None,
        carrier: str | None = None,
        reason: RejectionReason | None = None,
        at: datetime | None = None,
    ) -> None:
        await trio.lowlevel.checkpoint()
        if self.refuse:
            self.refused += 1
            raise RuntimeError("sink refuses (test)")
        self.updates.append(
            Update(location, fulfilment_id, status, lines, tracking_number, carrier, reason, at)
        )

    async def stock_report(self, report: StockReport) -> None:
        await trio.lowlevel.checkpoint()
        if self.refuse:
            self.refused += 1
            raise RuntimeError("sink refuses (test)")
        self.reports.append(report)

    def statuses(self, fulfilment_id: str) -> list[str]:
        return [u.status for u in self.updates if u.fulfilment_id == fulfilment_id]


async def entries(store: EventStore) -> list[OutboxEntry]:
    """Every due pending entry (a test's view of what still waits)."""
    return [e for e in await store.due_outbox(limit=1000) if e.state is OutboxState.PENDING]
