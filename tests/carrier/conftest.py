"""Simulators served for real (the adapters' `serve` fixture) and a TCP label printer."""

from __future__ import annotations

import pytest
import trio

from adapters.labels.simulator import ZebraSimulator as FakeZebra
from tests.adapters.conftest import serve

__all__ = ["FakeZebra", "serve", "zebra"]


@pytest.fixture
async def zebra(nursery: trio.Nursery) -> FakeZebra:
    printer = FakeZebra()
    await nursery.start(printer.serve)  # stopped with the test's nursery
    return printer
