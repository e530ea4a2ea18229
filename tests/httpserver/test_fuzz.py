"""Hypothesis-generated requests against the server: whatever arrives, the server never
crashes, never answers 5xx, and every byte it sends parses as HTTP/1.1 responses (h11).

The server runs in a thread with its own trio run for the module; each example is one real
TCP connection from a blocking socket, bounded by a socket timeout.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import h11
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from somsd.httpserver import Limits
from tests.httpserver.apps import serving

pytestmark = pytest.mark.slow

LIMITS = Limits(max_body_bytes=4096, idle_timeout=2, header_timeout=2, body_timeout=2)


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    ready = threading.Event()
    port: list[int] = []
    stop: list[trio.Event] = []
    token: list[trio.lowlevel.TrioToken] = []

    async def main() -> None:
        token.append(trio.lowlevel.current_trio_token())
        stop.append(trio.Event())
        async with serving(LIMITS, graceful=1) as listener:
            port.append(int(listener.urls[0].rsplit(":", 1)[1]))
            ready.set()
            await stop[0].wait()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port[0]
    trio.from_thread.run_sync(stop[0].set, trio_token=token[0])
    thread.join(10)
    assert not thread.is_alive()


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse and close before all is sent
        received = bytearray()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return bytes(received)


def parse_responses(data: bytes) -> list[int]:
    """Statuses of the responses in `data`; h11 raises if the framing is wrong."""
    statuses = []
    while data:
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        client.receive_data(data)
        client.receive_data(b"")  # the server closed: a close-delimited body ends here
        while True:
            event = client.next_event()
            assert event is not h11.NEED_DATA, data
            if isinstance(event, h11.Response):
                statuses.append(event.status_code)
            if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if isinstance(event, h11.ConnectionClosed):
            break
        data, _closed = client.trailing_data
    return statuses


def assert_sane(port: int, request: bytes) -> None:
    statuses = parse_responses(exchange(port, request))
    assert all(status < 500 for status in statuses), (request, statuses)


TOKEN = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=12,
)
methods = st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]), TOKEN)
targets = st.one_of(
    st.sampled_from(
        ["/", "/echo", "/stream", "/reject", "/close", "*", "http://x/echo", "/%ff", "/?a=b"]
    ),
    st.binary(max_size=40).map(lambda raw: b"/" + raw).map(lambda raw: raw.decode("latin-1")),
)
versions = st.sampled_from(
    ["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTP/1", "http/1.1", ""]
)
header_names = st.one_of(
    st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect"]), TOKEN
)
header_values = st.one_of(
    st.sampled_from(
        ["x", "0", "5", "-1", "chunked", "close", "keep-alive", "100-continue", "9" * 30]
    ),
    st.binary(max_size=30).map(lambda raw: raw.decode("latin-1")),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    line = f"{draw(methods)} {draw(targets)} {draw(versions)}".encode("latin-1")
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=6))
    if draw(st.booleans()):
        headers.insert(0, ("Host", "x"))
    block = b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in headers)
    body = draw(st.binary(max_size=64))
    request = line + b"\r\n" + block + b"\r\n" + body
    if draw(st.booleans()):  # a pipelined second request, well-formed
        request += b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
    cut = draw(st.integers(min_value=0, max_value=len(request)))
    return request[:cut] if draw(st.booleans()) else request


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests())
def test_generated_requests_never_get_a_5xx(server_port: int, request: bytes) -> None:
    assert_sane(server_port, request)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(min_size=1, max_size=512))
def test_random_bytes_never_get_a_5xx(server_port: int, garbage: bytes) -> None:
    assert_sane(server_port, garbage)


def test_the_server_still_serves_after_the_fuzz(server_port: int) -> None:
    data = exchange(server_port, b"GET /alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert parse_responses(data) == [200]
    assert data.endswith(b"/alive")
