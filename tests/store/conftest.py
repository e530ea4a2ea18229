from __future__ import annotations

from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry

from somsd.store import EventStore
from tests.pgcluster import server_bindir
from tests.postgres.conftest import pg_cluster  # noqa: F401  # the session's cluster, on demand
from tests.store.helpers import Clock, SqliteBackend, StoreBackend, StreamStats


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "events.db"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, db_path: Path) -> StoreBackend:
    """The store's test suite runs against each backend: an SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return SqliteBackend(db_path)
    if server_bindir() is None:
        pytest.skip("no PostgreSQL server installed (make installs Debian's postgresql)")
    from tests.store.pg_backend import PostgresBackend

    cluster = request.getfixturevalue("pg_cluster")
    return PostgresBackend(cluster.fresh_database())


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(
    nursery: trio.Nursery, backend: StoreBackend, registry: CollectorRegistry, clock: Clock
) -> EventStore:
    """A running store with the StreamStats projection; stopped when the test ends."""
    store = backend.store([StreamStats()], registry=registry, now=clock)
    await nursery.start(store.run)
    return store
