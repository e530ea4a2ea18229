"""Serving ASGI apps on trio: somsd's own HTTP/1.1 server (`somsd.httpserver`, on llhttp).

The rest of somsd only sees the ASGI interface. `serve_asgi` reports the bound URLs through
`task_status`, which is how tests use port 0 without start-up races.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from functools import partial

import structlog
import trio
from starlette.types import ASGIApp

from somsd.config import MAX_BODY_BYTES, ListenAddress
from somsd.httpserver import Limits, Server

__all__ = ["HttpListener", "ListenError", "bind_listener", "serve_asgi"]

log = structlog.get_logger("somsd.http")

# A kept-alive connection may wait this long for its next request, and a request's headers
# (from its first byte) and a stalled read take at most this long: a slowloris client
# trickling a header is cut off after it. Ten seconds is far above any real client's header
# time; a scraper polling every 15 s pays one TCP handshake per scrape for it.
READ_TIMEOUT_SECONDS = 10
# A body may trickle in for this long in all, however steadily its bytes come.
BODY_TIMEOUT_SECONDS = 30
# Request line plus headers may take at most this many bytes (431 beyond).
MAX_HEADER_BYTES = 16 * 1024
# Open connections per listener; one more is answered 503 and closed. Each idle
# kept-alive connection costs a few KiB (one trio task, one parser).
MAX_CONNECTIONS = 4096
LISTEN_BACKLOG = 1024

LIMITS = Limits(
    max_header_bytes=MAX_HEADER_BYTES,
    max_body_bytes=MAX_BODY_BYTES,
    idle_timeout=READ_TIMEOUT_SECONDS,
    header_timeout=READ_TIMEOUT_SECONDS,
    body_timeout=BODY_TIMEOUT_SECONDS,
    write_timeout=READ_TIMEOUT_SECONDS,
    max_connections=MAX_CONNECTIONS,
)


class ListenError(OSError):
    """A listener could not bind its address; the message names the address and the cause."""


def bind_listener(listen: ListenAddress) -> socket.socket:
    """Bind and listen on `listen` now, so a busy port fails before anything else starts.

    Binding early is what lets the daemon refuse to start, or a reload to be rejected, with the
    address in the message.
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
    limits: Limits = LIMITS,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until `shutdown_trigger` returns, then finish in-flight requests.

    `sock` is a socket `bind_listener` bound earlier; without one, `listen` is bound here.
    """
    sock = sock if sock is not None else bind_listener(listen)
    listener = trio.socket.from_stdlib_socket(sock)  # closed by the server when it stops
    host, port = sock.getsockname()[:2]
    urls = [f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"]
    server = Server(app, limits, name=name)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                server.serve,
                listener,
                shutdown_trigger=shutdown_trigger,
                graceful_timeout=graceful_timeout,
            )
        )
        log.info("http_listening", listener=name, urls=urls)
        task_status.started(urls)


class HttpListener:
    """A supervised listener: `run` serves until `stop` asks it to finish in-flight requests."""

    def __init__(
        self,
        name: str,
        app: ASGIApp,
        listen: ListenAddress,
        *,
        graceful_timeout: float,
        limits: Limits = LIMITS,
    ) -> None:
        self.name = name
        self.limits = limits
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
                    limits=self.limits,
                )
            )
            task_status.started()

    async def stop(self) -> None:
        self._shutdown.set()
