"""Serving ASGI apps on trio: hypercorn's trio runner in the caller's nursery.

The rest of somsd only sees the ASGI interface, so the server can be swapped (a faster trio
server on llhttp is planned) without touching routes. `serve_asgi` reports the bound URLs
through `task_status`, which is how tests use port 0 without start-up races.
"""

from __future__ import annotations

import logging
import socket
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

__all__ = ["HttpListener", "ListenError", "bind_listener", "serve_asgi"]

log = structlog.get_logger("somsd.http")

# hypercorn's keep-alive timer runs from the end of one request (or the connection's start) until
# the next request's headers are complete; raw bytes do not reset it. So it is also the deadline
# for reading a request's headers: a slowloris client trickling a header is cut off after it.
# The read timeout cuts off a client that goes silent anywhere, a short body included. Ten
# seconds is far above any real client's header time; a scraper polling every 15 s pays one
# TCP handshake per scrape for it.
READ_TIMEOUT_SECONDS = 10
# Request line plus headers may take at most this many bytes before h11 rejects them.
MAX_HEADER_BYTES = 16 * 1024
LISTEN_BACKLOG = 100


class ListenError(OSError):
    """A listener could not bind its address; the message names the address and the cause."""


def bind_listener(listen: ListenAddress) -> socket.socket:
    """Bind and listen on `listen` now, so a busy port fails before anything else starts.

    The socket is handed to hypercorn later (`fd://`); binding early is what lets the daemon
    refuse to start, or a reload to be rejected, with the address in the message.
    """
    host = listen.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, listen.port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise ListenError(exc.errno, f"cannot listen on {listen}: {reason}") from None
    return sock


async def serve_asgi(
    app: ASGIApp,
    listen: ListenAddress,
    *,
    name: str,
    shutdown_trigger: Callable[..., Awaitable[None]],
    graceful_timeout: float = 10.0,
    sock: socket.socket | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until `shutdown_trigger` returns, then finish in-flight requests.

    `sock` is a socket `bind_listener` bound earlier; without one, `listen` is bound here.
    """
    config = HypercornConfig()
    sock = sock if sock is not None else bind_listener(listen)
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns and closes the descriptor now
    config.graceful_timeout = graceful_timeout
    config.accesslog = None  # one structured line per request is the app's job, not the server's
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = READ_TIMEOUT_SECONDS  # the header deadline, see above
    config.read_timeout = READ_TIMEOUT_SECONDS
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
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
        self._socket: socket.socket | None = None

    def bind(self) -> None:
        """Bind the address now (raises `ListenError`); the next `run` serves on it."""
        if self._socket is None:
            self._socket = bind_listener(self.listen)

    def adopt(self, sock: socket.socket) -> None:
        """Serve on a socket bound by the caller (a reload binds before it applies)."""
        self._socket = sock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._shutdown = trio.Event()
        # A restart after a crash binds afresh: the pre-bound socket went to the first run.
        sock, self._socket = self._socket, None
        async with trio.open_nursery() as nursery:
            self.urls = await nursery.start(
                partial(
                    serve_asgi,
                    self.app,
                    self.listen,
                    name=self.name,
                    shutdown_trigger=self._shutdown.wait,
                    graceful_timeout=self.graceful_timeout,
                    sock=sock,
                )
            )
            task_status.started()

    async def stop(self) -> None:
        self._shutdown.set()
