from __future__ import annotations

from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry

from somsd.store import EventStore
from tests.store.helpers import Clock, StreamStats


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "events.db"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(
    nursery: trio.Nursery, db_path: Path, registry: CollectorRegistry, clock: Clock
) -> EventStore:
    """A running store with the StreamStats projection; stopped when the test ends."""
    store = EventStore(db_path, [StreamStats()], registry=registry, now=clock)
    await nursery.start(store.run)
    return store
