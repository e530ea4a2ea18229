"""The HTTP/1.1 server over raw loopback sockets: framing, keep-alive, pipelining, every limit
and timeout, the connection cap and graceful shutdown. Timeouts run on trio's autojump clock,
so "ten seconds idle" takes milliseconds; every response is parsed by h11."""

from __future__ import annotations

import trio
import trio.testing

from somsd.http import BODY_TIMEOUT_SECONDS, LIMITS, READ_TIMEOUT_SECONDS
from somsd.httpserver import SWEEP_SECONDS, Limits
from tests.httpserver.apps import RawClient, get, header, post, serving


async def test_keep_alive_serves_several_requests_then_idles_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        for path in ("/a", "/b"):
            await client.send(get(path))
            response, body = await client.response()
            assert (response.status_code, body) == (200, path.encode())
            assert header(response, b"connection") is None
        idle_from = trio.current_time()
        assert await client.read_until_closed() == b""  # closed without a word
        assert trio.current_time() - idle_from >= READ_TIMEOUT_SECONDS


async def test_pipelined_requests_are_answered_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        # The slow one first: its answer must still come first.
        await client.send(get("/slow") + post("/echo", b"second") + get("/third"))
        bodies = [(await client.response())[1] for _ in range(3)]
        assert bodies == [b"slow", b"second", b"/third"]


async def test_a_413_from_the_route_says_close_and_closes() -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        await client.send(post("/close", b"x" * 5000))
        response, _body = await client.response()
        assert response.status_code == 413
        assert [v for k, v in response.headers if k == b"connection"] == [b"close"]
        assert await client.read_until_closed() == b""


async def test_an_unread_body_closes_the_connection_and_says_so() -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        # Headers only: the body is announced but not sent, the route answers without it.
        await client.stream.send_all(
            b"POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n"
        )
        response, _ = await client.response()
        assert response.status_code == 401
        assert header(response, b"connection") == b"close"


async def test_an_unread_body_already_received_keeps_the_connection() -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        await client.send(post("/reject", b"123456789") + get("/next"))
        assert (await client.response())[0].status_code == 401
        assert (await client.response())[1] == b"/next"


async def test_header_limits() -> None:
    cases = [
        (get("/" + "a" * (LIMITS.max_target_bytes + 1)), 414),
        (get("/", extra=b"X-Big: " + b"v" * LIMITS.max_header_bytes + b"\r\n"), 431),
        (
            get(
                "/", extra=b"".join(b"X-%d: v\r\n" % n for n in range(LIMITS.max_header_count + 1))
            ),
            431,
        ),
    ]
    async with serving() as listener:
        for request, status in cases:
            client = await RawClient.connect(listener)
            await client.send(request)
            response, body = await client.response()
            assert response.status_code == status, body
            assert header(response, b"connection") == b"close"
            assert b"exceed" in body or b"more than" in body
            assert await client.read_until_closed() == b""


async def test_a_header_trickled_past_the_size_limit_is_refused() -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ")
        with trio.fail_after(5):
            for _ in range(LIMITS.max_header_bytes // 1024 + 2):
                try:
                    await client.stream.send_all(b"v" * 1024)
                except trio.BrokenResourceError:
                    break
            response, _ = await client.response()
        assert response.status_code == 431


async def test_body_limit_declared_and_chunked() -> None:
    limits = Limits(max_body_bytes=1000)
    async with serving(limits) as listener:
        client = await RawClient.connect(listener)
        await client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
        response, body = await client.response()
        assert response.status_code == 413
        assert b"exceeds 1000 bytes" in body
        assert header(response, b"connection") == b"close"
        chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        client = await RawClient.connect(listener)
        await client.send(
            chunked + b"3e8\r\n" + b"x" * 1000 + b"\r\n10\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n"
        )
        response, _body = await client.response()
        assert response.status_code == 413
        assert header(response, b"connection") == b"close"


async def test_a_stalled_header_gets_408_after_the_header_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        started = trio.current_time()
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        response, _ = await client.response()
        assert response.status_code == 408
        assert trio.current_time() - started >= READ_TIMEOUT_SECONDS
        assert header(response, b"connection") == b"close"


async def test_a_trickled_header_is_cut_off_too(autojump_clock: trio.testing.MockClock) -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        started = trio.current_time()
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        with trio.move_on_after(READ_TIMEOUT_SECONDS * 3):
            try:
                while True:  # one byte a second never completes the header
                    await client.stream.send_all(b"v")
                    await trio.sleep(1)
            except trio.BrokenResourceError:
                pass
        response, _ = await client.response()
        assert response.status_code == 408
        assert trio.current_time() - started < READ_TIMEOUT_SECONDS + 2


async def test_a_trickled_body_gets_408_after_the_body_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        await client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = trio.current_time()
        with trio.move_on_after(BODY_TIMEOUT_SECONDS * 2):
            try:
                while True:
                    await client.stream.send_all(b"x")
                    await trio.sleep(1)
            except trio.BrokenResourceError:
                pass
        response, body = await client.response()
        assert response.status_code == 408, body
        assert BODY_TIMEOUT_SECONDS <= trio.current_time() - started < BODY_TIMEOUT_SECONDS + 2


async def test_the_connection_cap_answers_503_and_closes() -> None:
    async with serving(Limits(max_connections=2)) as listener:
        held = [await RawClient.connect(listener) for _ in range(2)]
        for client in held:  # both served, so both are counted
            await client.send(get("/held"))
            assert (await client.response())[0].status_code == 200
        extra = await RawClient.connect(listener)
        response, body = await extra.response()
        assert response.status_code == 503
        assert header(response, b"connection") == b"close"
        assert header(response, b"retry-after") == b"1"
        assert b"too_many_connections" in body
        await held[0].aclose()
        with trio.fail_after(5):
            while True:  # the freed slot is usable as soon as the server saw the close
                again = await RawClient.connect(listener)
                await again.send(get("/again"))
                response, _ = await again.response()
                if response.status_code == 200:
                    break
                await trio.sleep(0.01)


async def test_graceful_shutdown_finishes_in_flight_and_closes_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as listener:
        idle = await RawClient.connect(listener)
        await idle.send(get("/warm"))
        await idle.response()
        busy = await RawClient.connect(listener)
        await busy.send(get("/slow"))
        await trio.sleep(0.1)  # /slow is in flight now
        await listener.stop()
        response, body = await busy.response()
        assert (response.status_code, body) == (200, b"slow")
        assert header(response, b"connection") == b"close"
        assert await idle.read_until_closed() == b""
        assert await busy.read_until_closed() == b""


async def test_chunked_request_bodies_with_extensions_and_trailers() -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        request = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        await client.send(request + get("/after"))
        assert (await client.response())[1] == b"hello, world"
        assert (await client.response())[1] == b"/after"


async def test_expect_100_continue() -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        await client.stream.send_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await client.stream.receive_some(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await client.stream.send_all(b"body")
        response, body = await client.response()
        assert (response.status_code, body) == (200, b"body")
        # A route that answers without reading gets no 100 sent; the connection then closes.
        client = await RawClient.connect(listener)
        await client.stream.send_all(
            b"POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        raw = await client.read_until_closed()
        assert raw.startswith(b"HTTP/1.1 401 ")
        assert b"100 Continue" not in raw
        assert b"connection: close" in raw


async def test_http_10_closes_unless_asked_to_keep_alive() -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        await client.send(b"GET /old HTTP/1.0\r\n\r\n")
        raw = await client.read_until_closed()
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in raw
        assert raw.endswith(b"/old")
        client = await RawClient.connect(listener)
        await client.send(
            b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n"
        )
        raw = await client.read_until_closed()
        assert raw.count(b"HTTP/1.1 200 ") == 2
        assert b"connection: keep-alive" in raw
        assert raw.endswith(b"/b")
        # A streamed answer to HTTP/1.0 has no length: its end is the close.
        client = await RawClient.connect(listener)
        await client.send(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        raw = await client.read_until_closed()
        assert b"connection: close" in raw
        assert raw.endswith(b"\r\n\r\none,two")


async def test_streamed_response_is_chunked_and_head_has_no_body() -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        await client.send(get("/stream"))
        response, body = await client.response()
        assert header(response, b"transfer-encoding") == b"chunked"
        assert body == b"one,two"
        await client.send(b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n")
        response, body = await client.response(head=True)
        assert header(response, b"content-length") == b"5"
        assert body == b""
        await client.send(get("/after-head"))
        assert (await client.response())[1] == b"/after-head"


async def test_a_short_body_and_a_crash_close_the_connection() -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        await client.send(get("/short"))
        raw = await client.read_until_closed()
        assert raw.endswith(b"\r\n\r\nabc")  # announced 10, sent 3: only a close ends it
        client = await RawClient.connect(listener)
        await client.send(get("/crash"))
        response, _ = await client.response()
        assert response.status_code == 500  # a bug in a route, not the client's input
        assert header(response, b"connection") == b"close"


async def test_malformed_requests_get_400_with_a_reason() -> None:
    cases = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\nHost: x\r\n\r\n",
        b"CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    async with serving() as listener:
        for request in cases:
            client = await RawClient.connect(listener)
            await client.send(request)
            response, body = await client.response()
            assert 400 <= response.status_code < 500, (request, body)
            assert header(response, b"connection") == b"close"
            assert b'"message":"' in body


async def test_an_upgrade_request_is_served_as_http_11() -> None:
    async with serving() as listener:
        client = await RawClient.connect(listener)
        await client.send(
            get("/up", extra=b"Upgrade: h2c\r\nConnection: Upgrade\r\n") + get("/next")
        )
        assert (await client.response())[1] == b"/up"
        assert (await client.response())[1] == b"/next"


async def test_idle_and_header_timeouts_fire_at_most_one_sweep_late(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The sweeper ends waits past their deadline: never early, at most one interval late,
    for an idle connection (closed) and one stuck in a head (408) at the same time."""
    async with serving() as listener:
        idle = await RawClient.connect(listener)
        await idle.send(get("/warm"))
        await idle.response()
        stuck = await RawClient.connect(listener)
        started = trio.current_time()
        await stuck.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert await idle.read_until_closed() == b""
        idle_for = trio.current_time() - started
        response, _ = await stuck.response()
        stuck_for = trio.current_time() - started
        assert response.status_code == 408
        for waited in (idle_for, stuck_for):
            assert READ_TIMEOUT_SECONDS <= waited <= READ_TIMEOUT_SECONDS + SWEEP_SECONDS + 0.1
