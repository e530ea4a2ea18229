"""Simulators served for real (the adapters' `serve` fixture) and a TCP label printer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio

from tests.adapters.conftest import serve

__all__ = ["FakeZebra", "serve", "zebra"]


class FakeZebra:
    """A raw-TCP listener standing in for a Zebra on port 9100: keeps every job's bytes."""

    def __init__(self) -> None:
        self.jobs: list[bytes] = []
        self.port = 0
        self.changed = trio.Event()

    async def _handle(self, stream: trio.SocketStream) -> None:
        data = b""
        async with stream:
            while chunk := await stream.receive_some(65536):
                data += chunk
        self.jobs.append(data)
        self.changed.set()
        self.changed = trio.Event()


@pytest.fixture
async def zebra(nursery: trio.Nursery) -> AsyncIterator[FakeZebra]:
    printer = FakeZebra()
    listeners = await nursery.start(partial(trio.serve_tcp, printer._handle, 0, host="127.0.0.1"))
    printer.port = listeners[0].socket.getsockname()[1]
    yield printer
    for listener in listeners:
        await listener.aclose()
