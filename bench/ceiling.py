"""The ceiling for an HTTP server on trio + httptools: the least such a server can do per request.

    .venv/bin/python bench/ceiling.py    # prints {"url": ...}, serves until killed

One trio task per connection; it reads with `os.read` on the non-blocking socket (waiting on
epoll only when a read would block), feeds llhttp through httptools, and for every complete
request writes one fixed 202 (`date` formatted once per second, the body the size of the
intake's answer) with `os.write`. No limits, no timeouts, no ASGI, no conformance beyond what
llhttp itself checks: not a server to use, only the bound `somsd.httpserver`'s bare 202 is
measured against (bench/peers.py runs both in the same minute).
"""

from __future__ import annotations

import json
import os
import socket
import time
from email.utils import formatdate

import httptools
import trio

ANSWER = b'{"order_id":"o0123456789abcdef","duplicate":false}'
READ_SIZE = 64 * 1024


class _Requests:
    """httptools callbacks: only counts requests that are complete."""

    def __init__(self) -> None:
        self.complete = 0

    def on_message_complete(self) -> None:
        self.complete += 1


class _Date:
    second = 0
    response = b""


def _response() -> bytes:
    now = int(time.time())
    if now != _Date.second:
        _Date.second = now
        _Date.response = (
            b"HTTP/1.1 202 Accepted\r\ndate: "
            + formatdate(now, usegmt=True).encode("ascii")
            + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(ANSWER)
            + ANSWER
        )
    return _Date.response


async def _serve(sock: trio.socket.SocketType) -> None:
    with sock:
        fd = sock.fileno()
        requests = _Requests()
        parser = httptools.HttpRequestParser(requests)
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            except OSError:
                return
            if not data:
                return
            try:
                parser.feed_data(data)
            except httptools.HttpParserError:
                return
            if requests.complete:
                out = _response() * requests.complete
                requests.complete = 0
                try:
                    view = memoryview(out)[os.write(fd, out) :]
                    while view:
                        view = view[await sock.send(view) :]
                except OSError:
                    return
            await trio.lowlevel.checkpoint()


async def main() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    print(json.dumps({"url": f"http://127.0.0.1:{listener.getsockname()[1]}"}), flush=True)
    async with trio.open_nursery() as nursery:
        while True:
            sock, _ = await listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(_serve, sock)


if __name__ == "__main__":
    trio.run(main)
