"""A whole fulfilment world on a real store in tmp_path: desk, inventory, fulfilments, router.

The actors are wired exactly as the composition root is asked to wire them (see the router's
and fulfilment desk's docstrings): the desk's `on_committed` and the inventory's
`on_stock_added` feed the router, the router feeds the fulfilment desk and back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry

from actors.fulfilment import FulfilmentDesk
from actors.inventory import Inventory, channel_stock_policies, safety_stock
from actors.order_desk import OrderDesk
from actors.router import Router
from somsd.config import Config
from somsd.domain.policy import OrderPolicy
from somsd.store import EventStore
from tests.fulfilment.support import World, default_config, projections


class Clock:
    """A settable UTC clock for the router (capacity is counted per UTC day)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


StartWorld = Callable[..., Awaitable[World]]


@pytest.fixture
def start_world(nursery: trio.Nursery, tmp_path: Path) -> StartWorld:
    """Start the actors on a fresh store (or `path`); `route=False` leaves the router out."""

    async def start(config: Config | None = None, *, route: bool = True, **kwargs: Any) -> World:
        config = config or default_config()
        registry = CollectorRegistry()
        clock = kwargs.pop("clock", None) or Clock()
        store = EventStore(tmp_path / "somsd.db", projections(), registry=registry)
        await nursery.start(store.run)
        inventory = Inventory(
            store,
            safety=safety_stock(config.location),
            channels=channel_stock_policies(config.channel),
            registry=registry,
        )
        pickups = frozenset(loc.name for loc in config.location if "pickup" in loc.capabilities)
        desk = OrderDesk(store, OrderPolicy(pickup_locations=pickups), registry=registry)
        fulfilments = FulfilmentDesk(store, inventory, desk, config=config, registry=registry)
        router = Router(store, inventory, fulfilments, config=config, registry=registry, now=clock)
        world = World(store, inventory, desk, fulfilments, router, config, clock, registry)
        await nursery.start(inventory.run)
        await nursery.start(desk.run)
        await nursery.start(fulfilments.run)
        if route:
            await world.start_router(nursery)
        return world

    return start
