"""Simulators served for real (the adapters' `serve` fixture), a TCP label printer, and the
throwaway PostgreSQL of tests/postgres for labels shared by a cluster."""

from __future__ import annotations

import pytest
import trio

from adapters.labels.simulator import ZebraSimulator as FakeZebra
from tests.adapters.conftest import serve
from tests.postgres.conftest import pg_cluster, pg_dsn

__all__ = ["FakeZebra", "pg_cluster", "pg_dsn", "serve", "zebra"]


@pytest.fixture
async def zebra(nursery: trio.Nursery) -> FakeZebra:
    printer = FakeZebra()
    await nursery.start(printer.serve)  # stopped with the test's nursery
    return printer
