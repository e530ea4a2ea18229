"""Fixtures for the outbox and location tests: a real store, real simulators on loopback.

The store writes in a worker thread and the simulators answer over real sockets, so these
tests run on trio's real clock. Budgets are small (retries of tens of milliseconds, polls of
50 ms) and every wait is bounded by `wait_until`'s deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from somsd.config import ListenAddress
from somsd.http import HttpListener
from somsd.store import EventStore
from tests.outbox.helpers import Serve


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def store(nursery: trio.Nursery, tmp_path: Path, registry: CollectorRegistry) -> EventStore:
    """A running event store in tmp_path; stopped when the test's nursery is cancelled."""
    store = EventStore(tmp_path / "data" / "events.db", registry=registry)
    await nursery.start(store.run)
    return store


@pytest.fixture
async def serve(nursery: trio.Nursery) -> AsyncIterator[Serve]:
    """Serve an ASGI app with somsd.http on 127.0.0.1:0; returns its URL and its listener."""
    listeners: list[HttpListener] = []

    async def start(app: ASGIApp) -> tuple[str, HttpListener]:
        # graceful_timeout: a request still in flight at teardown must not hold the test.
        listener = HttpListener("test", app, ListenAddress("127.0.0.1:0"), graceful_timeout=0.5)
        await nursery.start(listener.run)
        listeners.append(listener)
        return listener.urls[0], listener

    yield start
    for listener in listeners:
        await listener.stop()
