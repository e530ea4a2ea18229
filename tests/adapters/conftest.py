"""Serving simulators for real: somsd.http on 127.0.0.1:0 inside the test's nursery.

`serve(app)` returns the bound base URL once the listener accepts connections (no fixed port,
no start-up race) and returns the listener too, so a test can stop it to get a refused
connection. pytest-trio cancels the nursery when the test ends; listeners still running are
asked to stop first so in-flight requests finish.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
from starlette.types import ASGIApp

from somsd.config import ListenAddress
from somsd.http import HttpListener

Serve = Callable[[ASGIApp], Awaitable[tuple[str, HttpListener]]]


@pytest.fixture
async def serve(nursery: trio.Nursery) -> AsyncIterator[Serve]:
    listeners: list[HttpListener] = []

    async def start(app: ASGIApp) -> tuple[str, HttpListener]:
        # graceful_timeout: a test's slow request (latency knob) must not hold teardown long.
        listener = HttpListener("sim", app, ListenAddress("127.0.0.1:0"), graceful_timeout=0.5)
        await nursery.start(listener.run)
        listeners.append(listener)
        return listener.urls[0], listener

    yield start
    for listener in listeners:
        await listener.stop()


async def wait_until(condition: Callable[[], bool], *, budget: float = 5.0) -> None:
    """Poll `condition` on the real clock until it holds; fail after `budget` seconds.

    For state owned by another task that offers no event to wait on (a simulator working on a
    schedule). Five seconds is far above the milliseconds these waits take on loopback.
    """
    with trio.fail_after(budget):
        while True:
            if condition():
                return
            await trio.sleep(0.005)
