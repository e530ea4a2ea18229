"""Serving ASGI apps on trio: hypercorn's trio runner in the caller's nursery.

The rest of somsd only sees the ASGI interface, so the server can be swapped (a faster trio
server on llhttp is planned) without touching routes. `serve_asgi` reports the bound URLs
through `task_status`, which is how tests use port 0 without start-up races.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast

import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from starlette.types import ASGIApp

from somsd.config import ListenAddress

__all__ = ["HttpListener", "serve_asgi"]

log = structlog.get_logger("somsd.http")


async def serve_asgi(
    app: ASGIApp,
    listen: ListenAddress,
    *,
    name: str,
    shutdown_trigger: Callable[..., Awaitable[None]],
    graceful_timeout: float = 10.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until `shutdown_trigger` returns, then finish in-flight requests."""
    config = HypercornConfig()
    config.bind = [str(listen)]
    config.graceful_timeout = graceful_timeout
    config.accesslog = None  # one structured line per request is the app's job, not the server's
    config.errorlog = logging.getLogger("hypercorn.error")
    # Keep-alive connections from Prometheus and webhook senders are reused; a minute idle is
    # enough for every scrape interval in common use (15-60 s).
    config.keep_alive_timeout = 65
    config.include_server_header = False

    async def started(*, task_status: trio.TaskStatus[list[str]]) -> None:
        # hypercorn's ASGIFramework type spells the same ASGI callable with its own TypedDicts.
        framework = cast(ASGIFramework, app)
        await serve(framework, config, shutdown_trigger=shutdown_trigger, task_status=task_status)

    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(started)
        log.info("http_listening", listener=name, urls=urls)
        task_status.started(urls)


class HttpListener:
    """A supervised listener: `run` serves until `stop` asks it to finish in-flight requests."""

    def __init__(
        self, name: str, app: ASGIApp, listen: ListenAddress, *, graceful_timeout: float
    ) -> None:
        self.name = name
        self.app = app
        self.listen = listen
        self.graceful_timeout = graceful_timeout
        self.urls: list[str] = []
        self._shutdown = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            self.urls = await nursery.start(
                partial(
                    serve_asgi,
                    self.app,
                    self.listen,
                    name=self.name,
                    shutdown_trigger=self._shutdown.wait,
                    graceful_timeout=self.graceful_timeout,
                )
            )
            task_status.started()

    async def stop(self) -> None:
        self._shutdown.set()
