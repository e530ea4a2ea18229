"""The trio side: accept connections, run each one's requests through the ASGI app in order.

One task per connection reads, parses and calls the app itself, so a connection's requests
are answered strictly one after the other (pipelining-safe by construction) and there is no
per-request task or queue. Reading happens only when a request is awaited or its body is
asked for, so a pipelining client can not make the server buffer more than one read ahead.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
import trio

from somsd.httpserver._protocol import (
    END,
    Limits,
    ProtocolError,
    RequestHead,
    RequestParser,
    encode_error,
    encode_head,
)

__all__ = ["Server"]

log = structlog.get_logger("somsd.http")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

READ_SIZE = 64 * 1024
# After a response that closes the connection, unread request bytes are read and dropped for
# this long before closing: closing with unread data sends a TCP reset, which can destroy the
# response before the client has read it (the 413 case).
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
# Over the connection cap, this many connections at a time get the 503; the rest are closed.
MAX_REJECTING = 64
# How often the waits of idle connections and of unfinished heads are checked against their
# deadlines (at most; a tenth of the shorter timeout when that is less).
SWEEP_SECONDS = 0.5
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_NO_BODY_STATUSES = frozenset({204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT: Message = {"type": "http.disconnect"}


class Server:
    """Connections of one listener: the cap, the count, and graceful shutdown."""

    def __init__(self, app: ASGIApp, limits: Limits, *, name: str) -> None:
        self.app = app
        self.limits = limits
        self.name = name
        self.connections: set[Connection] = set()
        self.rejecting = 0
        self.rejected_total = 0
        self.shutting_down = False
        self._all_closed = trio.Event()

    async def serve(
        self,
        listener: trio.socket.SocketType,
        *,
        shutdown_trigger: Callable[[], Awaitable[None]],
        graceful_timeout: float,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with listener:
            await self._serve(listener, shutdown_trigger, graceful_timeout, task_status)

    async def _serve(
        self,
        listener: trio.socket.SocketType,
        shutdown_trigger: Callable[[], Awaitable[None]],
        graceful_timeout: float,
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with trio.open_nursery() as connections:
            connections.start_soon(self._sweep)
            async with trio.open_nursery() as accepting:
                accepting.start_soon(self._accept, listener, connections)
                task_status.started()
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            listener.close()
            self.begin_shutdown()
            with trio.move_on_after(graceful_timeout):
                await self._all_closed.wait()
            connections.cancel_scope.cancel()

    async def _accept(self, listener: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            try:
                sock, address = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                # Out of descriptors: the backlog holds new clients until some close.
                log.warning("http_accept_failed", listener=self.name, error=str(exc))
                await trio.sleep(0.1)
                continue
            if len(self.connections) >= self.limits.max_connections:
                self.rejected_total += 1
                if self.rejecting < MAX_REJECTING:
                    nursery.start_soon(self._reject, sock)
                else:
                    sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = Connection(self, sock, address)
            self.connections.add(connection)
            nursery.start_soon(connection.run)

    async def _sweep(self) -> None:
        """End the waits of connections idle or in a head past their deadline.

        One task checking every connection a few times per timeout instead of a cancel scope
        with a deadline around every wait for a request: entering and leaving those scopes
        was ~12 % of the server's time per request (py-spy, bench/peers.py bare 202). A
        timeout fires up to one interval late, never early.
        """
        interval = min(
            SWEEP_SECONDS, self.limits.idle_timeout / 10, self.limits.header_timeout / 10
        )
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for connection in self.connections:
                deadline = connection.wait_deadline
                if deadline is not None and deadline <= now:
                    connection.end_wait()

    async def _reject(self, sock: trio.socket.SocketType) -> None:
        self.rejecting += 1
        try:
            reason = f"the server has {self.limits.max_connections} connections open; retry"
            await _send_and_linger(sock, encode_error(503, reason, extra=(b"retry-after: 1\r\n",)))
        finally:
            self.rejecting -= 1
            sock.close()

    def begin_shutdown(self) -> None:
        """Stop keeping connections alive; close the ones waiting for a next request."""
        self.shutting_down = True
        for connection in list(self.connections):
            connection.close_if_idle()
        if not self.connections:
            self._all_closed.set()

    def closed(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if self.shutting_down and not self.connections:
            self._all_closed.set()


async def _send_and_linger(sock: trio.socket.SocketType, data: bytes) -> None:
    with trio.move_on_after(LINGER_SECONDS):
        try:
            await _send_all(sock, data)
            sock.shutdown(socket.SHUT_WR)
            dropped = 0
            while dropped < LINGER_BYTES:
                chunk = await sock.recv(READ_SIZE)
                if not chunk:
                    break
                dropped += len(chunk)
        except OSError:
            pass


async def _send_all(sock: trio.socket.SocketType, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


def _address(address: Any) -> tuple[str, int] | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return (str(address[0]), int(address[1]))
    return None


class Connection:
    """One client connection: requests in, responses out, in order."""

    def __init__(self, server: Server, sock: trio.socket.SocketType, address: Any) -> None:
        self.server = server
        self.sock = sock
        # Reads and writes first try the non-blocking socket directly and only wait (trio's
        # epoll) when it would block: trio's own recv/send also yield to the scheduler after
        # every call that succeeded at once, a round trip per read and per write that was
        # measured as a tenth of the server's time per request (bench/intake.py, issue 11).
        self.fd = sock.fileno()
        self.limits = server.limits
        self.parser = RequestParser(server.limits)
        self.client = _address(address)
        self.local = _address(sock.getsockname())
        # What every request's ASGI scope shares; `Cycle.scope` copies it.
        self.scope_template: dict[str, Any] = {
            "type": "http",
            "server": self.local,
            "client": self.client,
            "scheme": "http",
            "root_path": "",
        }
        self.alive = True  # the socket can still be written
        self.eof = False
        # While the connection waits for a request's bytes: when that wait ends (the server's
        # sweeper wakes it past this time) and whether it waits for a next request at all
        # (idle) or for the rest of a head (a timeout there answers 408).
        self.wait_deadline: float | None = None
        self.waiting_idle = False

    def close_if_idle(self) -> None:
        if self.wait_deadline is not None and self.waiting_idle:
            self.end_wait()

    def end_wait(self) -> None:
        """Wake the connection's wait for bytes with `trio.ClosedResourceError`."""
        self.wait_deadline = None
        trio.lowlevel.notify_closing(self.fd)

    async def run(self) -> None:
        try:
            with self.sock:
                linger = await self._serve_requests()
                if linger and self.alive:
                    await _send_and_linger(self.sock, b"")
        except OSError:
            pass  # the client went away; nothing to answer
        finally:
            self.server.closed(self)

    async def _serve_requests(self) -> bool:
        """Serve until the connection closes; True if unread request bytes may remain."""
        while True:
            head = await self._next_head()
            if head is None:
                return False
            cycle = Cycle(self, head)
            await cycle.run()
            if not (cycle.keep_alive and self.alive) or self.server.shutting_down:
                return self.alive and not self.eof
            # A body the app did not read is dropped; it is all parsed (else no keep-alive).
            events = self.parser.events
            while events and not isinstance(events[0], RequestHead):
                events.popleft()

    async def _next_head(self) -> RequestHead | None:
        parser = self.parser
        events = parser.events
        # Taken only when a wait is needed: most requests of a busy connection are waiting.
        idle_deadline: float | None = None
        header_deadline: float | None = None
        while True:
            if events:
                first = events[0]
                if isinstance(first, RequestHead):
                    events.popleft()
                    return first
                events.popleft()  # leftovers of a request answered without reading its body
                continue
            if (error := parser.pending_error()) is not None:
                await self._fail(error)
                return None
            if self.eof or (self.server.shutting_down and header_deadline is None):
                return None
            if header_deadline is None and parser.in_head:
                header_deadline = trio.current_time() + self.limits.header_timeout
            data = self.read_ready()
            if data is None:
                if idle_deadline is None:
                    idle_deadline = trio.current_time() + self.limits.idle_timeout
                self.waiting_idle = header_deadline is None
                self.wait_deadline = idle_deadline if header_deadline is None else header_deadline
                try:
                    await trio.lowlevel.wait_readable(self.fd)
                except trio.ClosedResourceError:  # past its deadline, or shutting down idle
                    if header_deadline is not None:
                        await self._fail(ProtocolError(408, "request headers not complete in time"))
                    return None
                finally:
                    self.wait_deadline = None
                data = self.read_ready()
                if data is None:
                    continue  # woken, but nothing to read after all
            else:
                # Bytes were waiting (a pipelined request, or one that came while the last
                # was answered): let other tasks run, or such a client could hold the loop.
                await trio.lowlevel.checkpoint()
            if not data:
                self.eof = True
                return None
            if header_deadline is None:
                header_deadline = trio.current_time() + self.limits.header_timeout
            parser.feed(data)
            if (error := parser.pending_error()) is not None and not events:
                await self._fail(error)
                return None

    def read_ready(self) -> bytes | None:
        """What the socket has to read now (b"" at EOF), or None if a read would block."""
        try:
            return os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None

    async def _fail(self, error: ProtocolError) -> None:
        """Answer a request the server refuses itself; the connection closes after it."""
        log.info("http_request_refused", status=error.status, reason=error.reason)
        await self.write(encode_error(error.status, error.reason))

    async def write(self, data: bytes) -> None:
        if not self.alive:
            return
        try:
            sent = os.write(self.fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.alive = False
            return
        if sent >= len(data):
            return
        with trio.move_on_after(self.limits.write_timeout) as scope:
            try:
                await _send_all(self.sock, memoryview(data)[sent:])
                return
            except OSError:
                pass
        if scope.cancelled_caught:
            log.info("http_write_timeout", client=self.client)
        self.alive = False


class Cycle:
    """One request and its response: the ASGI `receive` and `send` of one app call."""

    __slots__ = (
        "_finished_event",
        "body_deadline",
        "body_done",
        "chunked",
        "connection",
        "continue_sent",
        "declared_length",
        "finished",
        "head",
        "keep_alive",
        "pending_head",
        "sent_length",
        "started",
    )

    def __init__(self, connection: Connection, head: RequestHead) -> None:
        self.connection = connection
        self.head = head
        self.body_done = False
        self.continue_sent = False
        self.started = False
        self.finished = False
        self.keep_alive = False
        self.chunked = False
        self.declared_length: int | None = None
        self.sent_length = 0
        self.pending_head = b""
        # Set at the first read the body needs from the socket (see `_body_deadline`).
        self.body_deadline: float | None = None
        self._finished_event: trio.Event | None = None

    def scope(self) -> dict[str, Any]:
        head = self.head
        scope = self.connection.scope_template.copy()
        scope["asgi"] = {"version": "3.0", "spec_version": "2.3"}  # apps may write to it
        scope["http_version"] = head.http_version
        scope["method"] = head.method
        scope["path"] = head.path
        scope["raw_path"] = head.raw_path
        scope["query_string"] = head.query_string
        scope["headers"] = head.headers
        return scope

    def _body_deadline(self) -> float:
        # The body's time runs from the end of the headers; the first read from the socket
        # happens right after (a body that came with its head needs no clock at all).
        if self.body_deadline is None:
            self.body_deadline = trio.current_time() + self.connection.limits.body_timeout
        return self.body_deadline

    async def run(self) -> None:
        connection = self.connection
        try:
            await connection.server.app(self.scope(), self.receive, self.send)
        except Exception:
            log.exception("http_app_error", path=self.head.path, method=self.head.method)
            if not self.started:
                await connection.write(encode_error(500, "internal error"))
            self.keep_alive = False
            return
        finally:
            if self._finished_event is not None:
                self._finished_event.set()
        if not self.finished:
            if not self.started:
                log.error("http_app_no_response", path=self.head.path, method=self.head.method)
                await connection.write(encode_error(500, "the route sent no response"))
            # A response without its end can not be framed for a next request.
            self.keep_alive = False

    def _request_complete(self) -> bool:
        """The whole request, body included, has been parsed (read or not)."""
        return self.body_done or END in self.connection.parser.events

    async def receive(self) -> Message:
        if self.body_done or self.finished or not self.connection.alive:
            return await self._wait_for_disconnect()
        connection = self.connection
        events = connection.parser.events
        if self.head.expect_continue and not self.continue_sent and not self.started:
            self.continue_sent = True
            if not events:
                await connection.write(_CONTINUE)
        while True:
            if events:
                chunks: list[bytes] = []
                while events:
                    event = events[0]
                    if isinstance(event, bytes):
                        chunks.append(event)
                        events.popleft()
                        continue
                    if event is END:
                        events.popleft()
                        self.body_done = True
                    break
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                return {"type": "http.request", "body": body, "more_body": not self.body_done}
            if (error := connection.parser.pending_error()) is not None:
                await self._refuse(error)
                return await self._wait_for_disconnect()
            if connection.eof:
                return await self._wait_for_disconnect()
            with trio.move_on_at(self._body_deadline()):
                try:
                    data = connection.read_ready()
                    if data is None:
                        data = await connection.sock.recv(READ_SIZE)
                except OSError:
                    data = b""
                if not data:
                    connection.eof = True
                    return await self._wait_for_disconnect()
                connection.parser.feed(data)
                if (error := connection.parser.pending_error()) is not None and not events:
                    await self._refuse(error)
                    return await self._wait_for_disconnect()
                continue
            await self._refuse(ProtocolError(408, "request body not complete in time"))
            return await self._wait_for_disconnect()

    async def _refuse(self, error: ProtocolError) -> None:
        """The server answers (if the app has not begun to) and the connection ends."""
        self.keep_alive = False
        if not self.started:
            self.started = self.finished = True
            await self.connection._fail(error)
        self.connection.alive = False

    async def _wait_for_disconnect(self) -> Message:
        # ASGI: after the body, `receive` blocks until the response is done or the client left.
        if not self.finished and self.connection.alive:
            if self._finished_event is None:
                self._finished_event = trio.Event()
            await self._finished_event.wait()
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                if self.finished and not self.connection.alive:
                    return  # the server already answered (a refused body)
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self._start(message["status"], message.get("headers") or ())
        elif kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body before http.response.start")
            if self.finished:
                return
            await self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _start(self, status: int, headers: Any) -> None:
        head = self.head
        lines: list[bytes] = []
        close = False
        length: int | None = None
        for name, value in headers:
            lower = name.lower()
            if lower == b"connection":
                close = close or b"close" in value.lower()
                continue  # the server says what it will do, below
            if lower == b"content-length":
                length = int(value)
            elif lower == b"transfer-encoding":
                continue  # framing is the server's job
            lines.append(b"%s: %s\r\n" % (name, value))
        no_body = status in _NO_BODY_STATUSES or status < 200
        if no_body:
            length = 0
        elif length is None and head.method != "HEAD":
            if head.http_version == "1.1":
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                close = True  # HTTP/1.0 without a length: the end of the body is the close
        self.declared_length = length
        connection = self.connection
        keep_alive = (
            head.keep_alive
            and not close
            and not connection.server.shutting_down
            and self._request_complete()
        )
        self.keep_alive = keep_alive
        if not keep_alive:
            marker: bytes | None = b"close"
        elif head.http_version == "1.0":
            marker = b"keep-alive"
        else:
            marker = None
        self.pending_head = encode_head(status, lines, marker)

    async def _body(self, body: bytes, more_body: bool) -> None:
        if self.head.method == "HEAD" or self.declared_length == 0:
            body = b""
        self.sent_length += len(body)
        if self.declared_length is not None and self.sent_length > self.declared_length:
            raise RuntimeError("response body longer than its Content-Length")
        if self.chunked:
            framed = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more_body:
                framed += b"0\r\n\r\n"
        else:
            framed = body
        if self.pending_head:
            framed = self.pending_head + framed
            self.pending_head = b""
        if not more_body:
            self.finished = True
            if (
                self.declared_length is not None
                and self.sent_length < self.declared_length
                and self.head.method != "HEAD"
            ):
                self.keep_alive = False  # announced more than it sent: only a close ends it
                await self.connection.write(framed)
                self.connection.alive = False
                return
        if framed:
            await self.connection.write(framed)
        if self.finished and self._finished_event is not None:
            self._finished_event.set()
