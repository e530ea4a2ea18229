"""Fixtures: a real event store in tmp_path, and a way to start and stop inventory actors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry

from actors.inventory import Inventory
from somsd.domain.atp import SafetyStock
from somsd.store import EventStore
from tests.inventory.support import projections


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "somsd.db"


@pytest.fixture
async def store(nursery: trio.Nursery, db_path: Path, registry: CollectorRegistry) -> EventStore:
    store = EventStore(db_path, projections(), registry=registry)
    await nursery.start(store.run)
    return store


StartInventory = Callable[..., Awaitable[tuple[Inventory, trio.CancelScope]]]


@pytest.fixture
def start_inventory(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> StartInventory:
    """Start an `Inventory` on the store; returns it and a scope that stops it.

    Each call gets a fresh registry unless one is passed, so a restarted actor can register
    its metrics again (the first one's fixture registry stays inspectable).
    """
    first = [True]

    async def start(**kwargs: Any) -> tuple[Inventory, trio.CancelScope]:
        kwargs.setdefault("safety", SafetyStock())
        kwargs.setdefault("channels", ())
        if "registry" not in kwargs:
            kwargs["registry"] = registry if first[0] else CollectorRegistry()
            first[0] = False
        inventory = Inventory(store, **kwargs)
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await inventory.run(task_status=task_status)

        await nursery.start(run)
        return inventory, scope

    return start
