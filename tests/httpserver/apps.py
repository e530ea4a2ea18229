"""A raw ASGI app with one route per server behaviour under test, and a raw-socket client.

Responses are parsed with h11 (a strict, independent HTTP/1.1 implementation), so every test
also checks the server's framing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import h11
import trio

from somsd.config import ListenAddress
from somsd.http import LIMITS, HttpListener
from somsd.httpserver import Limits

Message = MutableMapping[str, Any]
# Clients the tests opened; `serving` closes them when it ends.
_open_clients: list[RawClient] = []


async def read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def app(scope: Message, receive: Any, send: Any) -> None:
    """Routes: /echo, /slow, /stream, /short, /reject, /close, /crash, anything else: path."""
    assert scope["type"] == "http"
    path = scope["path"]

    async def answer(status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
        head = [(b"content-length", str(len(body)).encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    if path == "/echo":
        await answer(200, await read_body(receive))
    elif path == "/slow":
        await trio.sleep(1)
        await answer(200, b"slow")
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})
    elif path == "/short":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
        )
        await send({"type": "http.response.body", "body": b"abc"})
    elif path == "/reject":
        await answer(401, b"no")
    elif path == "/close":
        await answer(413, b"too big", (b"connection", b"close"))
    elif path == "/crash":
        raise RuntimeError("a bug in a route")
    else:
        await answer(200, path.encode())


@asynccontextmanager
async def serving(limits: Limits = LIMITS, *, graceful: float = 5.0) -> AsyncIterator[HttpListener]:
    """The test app on 127.0.0.1:0 in this trio run; stopped (gracefully) on exit."""
    listener = HttpListener(
        "test", app, ListenAddress("127.0.0.1:0"), graceful_timeout=graceful, limits=limits
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        try:
            yield listener
        finally:
            while _open_clients:
                await _open_clients.pop().aclose()
            await listener.stop()


def port_of(listener: HttpListener) -> int:
    return int(listener.urls[0].rsplit(":", 1)[1])


class RawClient:
    """One TCP connection; bytes out, h11-parsed responses in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.closed = False

    @classmethod
    async def connect(cls, listener: HttpListener) -> RawClient:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port_of(listener)))
        _open_clients.append(client)
        return client

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def response(self, *, head: bool = False) -> tuple[h11.Response, bytes]:
        """The next whole response (h11 checks its framing); fails if the server closed first."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        if self.h11.our_state is h11.IDLE:
            # h11 must know what was asked to frame the answer (HEAD has no body).
            method = b"HEAD" if head else b"GET"
            self.h11.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            self.h11.send(h11.EndOfMessage())
        response: h11.Response | None = None
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                self.h11.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("connection closed before a whole response")

    async def read_until_closed(self) -> bytes:
        data = bytearray()
        while chunk := await self.stream.receive_some(65536):
            data += chunk
        return bytes(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


def header(response: h11.Response, name: bytes) -> bytes | None:
    for key, value in response.headers:
        if key == name:
            return bytes(value)
    return None


def get(path: str = "/", *, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"GET " + path.encode() + b" HTTP/" + version + b"\r\nHost: x\r\n" + extra + b"\r\n"


def post(path: str, body: bytes, *, extra: bytes = b"") -> bytes:
    length = b"Content-Length: %d\r\n" % len(body)
    return b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + length + extra + b"\r\n" + body
