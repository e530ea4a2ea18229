"""The `rest` 3PL client against the real simulator, served by somsd.http on 127.0.0.1:0.

Sockets are in flight, so these tests run on trio's real clock with small budgets (steps of
tens of milliseconds, `fail_after` of a few seconds); the state machine's timing is checked
exactly on an autojump clock in the tests that talk to the app in-process (no socket).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from adapters.errors import PermanentUpstreamError, TransientUpstreamError
from adapters.threepl import (
    Fulfillment,
    FulfillmentConflict,
    FulfillmentLine,
    FulfillmentNotFound,
    InvalidCallback,
    ProtocolViolation,
    StatusCallback,
    ThreePLClient,
    ThreePLKnobs,
    ThreePLSimulator,
    WebhookTarget,
    decode_callback,
    encode_callback,
    rejected_lines,
    shipped_lines,
    stock_report,
)
from adapters.threepl.wire import FulfillmentMode, FulfillmentRequest, RequestLine, ShipTo
from somsd.domain.atp import StockCount, StockLine
from somsd.http import HttpListener
from somsd.signing import SIGNATURE_HEADER, SignatureError, sign

from .conftest import Serve

SHIP_TO = ShipTo(name="Max Muster", street="Hauptstr. 1", zip="10115", city="Berlin", country="DE")
# Real sockets: a loaded CI machine answers loopback requests in milliseconds; five seconds is
# a generous bound that still fails fast when something hangs.
BUDGET = 5.0

Connect = Callable[..., Awaitable[tuple[ThreePLClient, HttpListener]]]


def fulfilment(
    fulfilment_id: str = "ful-1",
    lines: tuple[tuple[str, int], ...] = (("MUG-1", 2),),
    mode: FulfillmentMode = "ship",
) -> FulfillmentRequest:
    return FulfillmentRequest(
        id=fulfilment_id,
        order_ref="1042",
        mode=mode,
        ship_to=SHIP_TO,
        lines=tuple(RequestLine(sku=sku, quantity=quantity) for sku, quantity in lines),
    )


@pytest.fixture
async def connect(serve: Serve, nursery: trio.Nursery) -> AsyncIterator[Connect]:
    """Serve a simulator, optionally run its work loop, and return a client for it."""
    async with AsyncExitStack() as stack:

        async def start(
            sim: ThreePLSimulator, *, run: bool = True, read: float = 2.0, token: str | None = None
        ) -> tuple[ThreePLClient, HttpListener]:
            url, listener = await serve(sim)
            if run:
                await nursery.start(sim.run)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=url, headers=headers, timeout=httpx.Timeout(2.0, read=read)
                )
            )
            return ThreePLClient(http, system="wh-test"), listener

        yield start


async def wait_for_status(client: ThreePLClient, fulfilment_id: str, status: str) -> None:
    """Poll (as a location actor would) until the fulfilment reaches `status`."""
    with trio.fail_after(BUDGET):
        while True:
            if (await client.fetch_fulfillment(fulfilment_id)).status == status:
                return
            await trio.sleep(0.01)


# -- happy path ----------------------------------------------------------------------------------


async def test_fulfilment_is_sent_and_walks_to_shipped(connect: Connect) -> None:
    """A sent fulfilment is accepted at once and shipped with carrier and tracking later."""
    sim = ThreePLSimulator(knobs=ThreePLKnobs(step_delay=0.02), stock={"MUG-1": 10})
    client, _ = await connect(sim)
    accepted = await client.send_fulfillment(fulfilment(), idempotency_key="key-1")
    assert (accepted.id, accepted.status, accepted.order_ref) == ("ful-1", "accepted", "1042")

    await wait_for_status(client, "ful-1", "shipped")
    shipped = await client.fetch_fulfillment("ful-1")
    assert shipped.carrier == "dhl"
    assert shipped.tracking_number is not None
    assert len(shipped.tracking_number) == 20
    assert shipped_lines(shipped) == (StockLine("MUG-1", 2),)
    stock = await client.fetch_stock()
    assert [(item.sku, item.on_hand) for item in stock.items] == [("MUG-1", 8)]
    report = stock_report("wh-dortmund", stock)
    assert report.complete
    assert report.counts == (StockCount("MUG-1", 8),)


async def test_updates_feed_returns_each_change_once_by_cursor(connect: Connect) -> None:
    """Polling by cursor pages through changes and returns the same cursor when nothing moved."""
    sim = ThreePLSimulator()
    client, _ = await connect(sim, run=False)
    for number in range(3):
        await client.send_fulfillment(fulfilment(f"ful-{number}"), idempotency_key=f"k{number}")

    first = await client.fetch_updates_since(None, limit=2)
    assert [item.id for item in first.items] == ["ful-0", "ful-1"]
    assert first.has_more
    second = await client.fetch_updates_since(first.next_cursor, limit=2)
    assert [item.id for item in second.items] == ["ful-2"]
    assert not second.has_more
    idle = await client.fetch_updates_since(second.next_cursor)
    assert idle.items == ()
    assert idle.next_cursor == second.next_cursor


# -- idempotency ---------------------------------------------------------------------------------


async def test_repeat_with_same_key_returns_same_fulfilment_created_once(connect: Connect) -> None:
    """A retried POST with the same Idempotency-Key is answered, not executed, again."""
    sim = ThreePLSimulator()
    client, _ = await connect(sim, run=False)
    first = await client.send_fulfillment(fulfilment(), idempotency_key="outbox-17")
    again = await client.send_fulfillment(fulfilment(), idempotency_key="outbox-17")
    assert again == first
    assert sim.fulfillment_ids == ["ful-1"]
    assert sim.idempotency_keys == ["outbox-17", "outbox-17"]
    assert [r.status for r in sim.requests] == [201, 201]


async def test_lost_answer_is_transient_and_the_retry_creates_nothing_new(
    connect: Connect,
) -> None:
    """The WMS created it but the answer was lost: the retry with the same key gets it back."""
    sim = ThreePLSimulator(knobs=ThreePLKnobs(lost_response_rate=1.0))
    client, _ = await connect(sim, run=False)
    with pytest.raises(TransientUpstreamError) as lost:
        await client.send_fulfillment(fulfilment(), idempotency_key="outbox-18")
    assert isinstance(lost.value.__cause__, httpx.RemoteProtocolError)
    assert sim.fulfillment_ids == ["ful-1"]  # created before the connection dropped

    sim.knobs.lost_response_rate = 0.0
    retried = await client.send_fulfillment(fulfilment(), idempotency_key="outbox-18")
    assert retried.id == "ful-1"
    assert sim.fulfillment_ids == ["ful-1"]
    assert sim.idempotency_keys == ["outbox-18", "outbox-18"]


async def test_same_key_with_another_body_is_refused_for_good(connect: Connect) -> None:
    """Reusing a key for a different request is a client bug, not something to retry."""
    client, _ = await connect(ThreePLSimulator(), run=False)
    await client.send_fulfillment(fulfilment(), idempotency_key="k")
    with pytest.raises(PermanentUpstreamError) as refused:
        await client.send_fulfillment(fulfilment(lines=(("MUG-1", 3),)), idempotency_key="k")
    assert refused.value.status_code == 422
    assert "idempotency_key_reused" in str(refused.value)


async def test_same_id_under_another_key_is_a_conflict(connect: Connect) -> None:
    """One fulfilment id claimed by two requests is reported as FulfillmentConflict."""
    client, _ = await connect(ThreePLSimulator(), run=False)
    await client.send_fulfillment(fulfilment(), idempotency_key="k1")
    with pytest.raises(FulfillmentConflict):
        await client.send_fulfillment(fulfilment(), idempotency_key="k2")


async def test_post_without_idempotency_key_is_refused(connect: Connect) -> None:
    """The protocol makes the key mandatory: without it no retry could be safe."""
    sim = ThreePLSimulator()
    _, listener = await connect(sim, run=False)
    async with httpx.AsyncClient(base_url=listener.urls[0]) as http:
        response = await http.post("/fulfillments", content=b"{}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_idempotency_key"
    assert sim.fulfillment_ids == []


# -- failures: transient -----------------------------------------------------------------------


async def test_server_errors_are_transient_and_create_nothing(connect: Connect) -> None:
    """A 500 before anything happened is worth retrying and left no fulfilment behind."""
    sim = ThreePLSimulator(knobs=ThreePLKnobs(error_rate=1.0))
    client, _ = await connect(sim, run=False)
    with pytest.raises(TransientUpstreamError) as failed:
        await client.send_fulfillment(fulfilment(), idempotency_key="k")
    assert failed.value.status_code == 500
    assert failed.value.system == "wh-test"
    assert sim.fulfillment_ids == []


async def test_outage_answers_503_with_retry_after(connect: Connect) -> None:
    """An unavailable WMS is transient and says when to come back."""
    client, _ = await connect(ThreePLSimulator(knobs=ThreePLKnobs(outage="unavailable")))
    with pytest.raises(TransientUpstreamError) as unavailable:
        await client.fetch_stock()
    assert (unavailable.value.status_code, unavailable.value.retry_after) == (503, 1.0)


async def test_dropped_connection_is_transient(connect: Connect) -> None:
    """A server that hangs up mid-answer is retried like a timeout."""
    client, _ = await connect(ThreePLSimulator(knobs=ThreePLKnobs(outage="drop")))
    with pytest.raises(TransientUpstreamError, match="dropped the connection"):
        await client.fetch_stock()


async def test_read_timeout_is_transient(connect: Connect) -> None:
    """A WMS slower than the read budget is reported as a retryable timeout."""
    sim = ThreePLSimulator(knobs=ThreePLKnobs(latency=1.0))
    client, _ = await connect(sim, run=False, read=0.05)
    with trio.fail_after(BUDGET), pytest.raises(TransientUpstreamError) as slow:
        await client.send_fulfillment(fulfilment(), idempotency_key="k")
    assert isinstance(slow.value.__cause__, httpx.ReadTimeout)
    assert "timed out" in str(slow.value)


async def test_stopped_server_refuses_connections_transiently(serve: Serve) -> None:
    """Once the listener is gone the port refuses connections: transient, not permanent."""
    url, listener = await serve(ThreePLSimulator())
    await listener.stop()
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(1.0)) as http:
        client = ThreePLClient(http, system="wh-test")
        refused: TransientUpstreamError | None = None
        with trio.fail_after(BUDGET):
            while refused is None:  # the server closes its socket shortly after stop() returns
                try:
                    await client.fetch_stock()
                except TransientUpstreamError as exc:
                    if isinstance(exc.__cause__, httpx.ConnectError):
                        refused = exc
                        continue
                await trio.sleep(0.01)
    assert "could not connect" in str(refused)


# -- failures: permanent -------------------------------------------------------------------------


async def test_unknown_sku_is_permanent(connect: Connect) -> None:
    """A SKU the warehouse does not stock will never be accepted: dead-letter it."""
    client, _ = await connect(ThreePLSimulator(stock={"MUG-1": 1}), run=False)
    with pytest.raises(PermanentUpstreamError) as refused:
        await client.send_fulfillment(fulfilment(lines=(("GHOST-9", 1),)), idempotency_key="k")
    assert refused.value.status_code == 422
    assert "unknown_sku" in str(refused.value)
    assert "GHOST-9" in str(refused.value)


async def test_wrong_token_is_permanent_and_never_quoted(connect: Connect) -> None:
    """401 asks the operator to check the credentials; neither token appears in the message."""
    sim = ThreePLSimulator(api_token="right-s3cret")
    client, _ = await connect(sim, run=False, token="wrong-s3cret")
    with pytest.raises(PermanentUpstreamError) as refused:
        await client.fetch_stock()
    message = str(refused.value)
    assert refused.value.status_code == 401
    assert "credentials" in message
    assert "s3cret" not in message
    assert "s3cret" not in repr(refused.value)

    authorised, _ = await connect(sim, run=False, token="right-s3cret")
    assert (await authorised.fetch_stock()).items == ()


async def test_unknown_fulfilment_is_not_found(connect: Connect) -> None:
    """Asking for an id the WMS never saw raises FulfillmentNotFound (permanent)."""
    client, _ = await connect(ThreePLSimulator(), run=False)
    with pytest.raises(FulfillmentNotFound) as missing:
        await client.fetch_fulfillment("ful-nope")
    assert isinstance(missing.value, PermanentUpstreamError)


async def test_non_protocol_answer_is_a_protocol_violation(serve: Serve) -> None:
    """A 200 with an HTML page (a captive proxy, a wrong url) is not taken for stock."""

    async def portal(request: Request) -> Response:
        return HTMLResponse("<html>Welcome to the proxy</html>")

    url, _ = await serve(Starlette(routes=[Route("/stock", portal)]))
    async with httpx.AsyncClient(base_url=url) as http:
        with pytest.raises(ProtocolViolation, match="check the configured url"):
            await ThreePLClient(http, system="wh-test").fetch_stock()


# -- callbacks -----------------------------------------------------------------------------------


async def test_status_callbacks_arrive_signed_and_in_order(connect: Connect, serve: Serve) -> None:
    """Every change is posted to the webhook, signed; a failed delivery is retried."""
    secret = b"callback-key"
    received: list[StatusCallback] = []
    all_four = trio.Event()
    answers = iter([503])  # the first delivery fails once, then the receiver is fine

    async def receive(request: Request) -> Response:
        try:
            callback = decode_callback(
                await request.body(), request.headers.get(SIGNATURE_HEADER), secret, now=time.time()
            )
        except SignatureError:
            return Response(status_code=401)
        status = next(answers, 204)
        if status == 204:
            received.append(callback)
            if len(received) == 4:
                all_four.set()
        return Response(status_code=status)

    hook_url, _ = await serve(Starlette(routes=[Route("/hook", receive, methods=["POST"])]))
    sim = ThreePLSimulator(
        knobs=ThreePLKnobs(step_delay=0.02), webhook=WebhookTarget(f"{hook_url}/hook", secret)
    )
    client, _ = await connect(sim)
    await client.send_fulfillment(fulfilment(), idempotency_key="k")
    with trio.fail_after(BUDGET):
        await all_four.wait()
    assert [c.fulfillment.status for c in received] == ["accepted", "picked", "packed", "shipped"]
    assert [int(c.cursor) for c in received] == sorted(int(c.cursor) for c in received)
    assert sim.callbacks_failed == []
    assert "callback-key" not in repr(sim.webhook)


def test_callback_with_wrong_signature_or_body_is_refused() -> None:
    """Tampered bodies and wrong keys fail the signature; a signed non-callback is invalid."""
    now = 1_800_000_000
    callback = StatusCallback(
        event_id="ful-1:1",
        cursor="1",
        fulfillment=Fulfillment(
            id="ful-1",
            order_ref="1042",
            mode="ship",
            status="accepted",
            lines=(FulfillmentLine(sku="MUG-1", quantity=2),),
            updated_at=datetime(2026, 11, 21, 10, tzinfo=UTC),
        ),
    )
    body, signature = encode_callback(callback, b"key", timestamp=now)
    assert decode_callback(body, signature, b"key", now=now) == callback
    with pytest.raises(SignatureError):
        decode_callback(body.replace(b"ful-1", b"ful-2"), signature, b"key", now=now)
    with pytest.raises(SignatureError):
        decode_callback(body, signature, b"other-key", now=now)
    junk = b'{"event_id": 5}'
    with pytest.raises(InvalidCallback):
        decode_callback(junk, sign(b"key", junk, now), b"key", now=now)


# -- the state machine on virtual time (no sockets: the app is called in-process) ----------------


async def in_process(sim: ThreePLSimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sim), base_url="http://wms.test")


async def test_statuses_advance_one_step_per_delay(autojump_clock: trio.abc.Clock) -> None:
    """Each step takes exactly step_delay; a pickup waits collect_delay for the customer."""
    sim = ThreePLSimulator(knobs=ThreePLKnobs(step_delay=60, collect_delay=3600))
    async with trio.open_nursery() as nursery, await in_process(sim) as http:
        await nursery.start(sim.run)
        client = ThreePLClient(http, system="wh")
        await client.send_fulfillment(fulfilment("ship-1"), idempotency_key="a")
        await client.send_fulfillment(fulfilment("pick-1", mode="pickup"), idempotency_key="b")
        seen: list[tuple[float, str, str]] = []
        start = trio.current_time()
        for _ in range(8):
            await trio.sleep(59.5)  # just before the next step is due
            for fulfilment_id in ("ship-1", "pick-1"):
                status = (await client.fetch_fulfillment(fulfilment_id)).status
                seen.append((round(trio.current_time() - start, 1), fulfilment_id, status))
            await trio.sleep(0.5)
        assert seen[:6] == [
            (59.5, "ship-1", "accepted"),
            (59.5, "pick-1", "accepted"),
            (119.5, "ship-1", "picked"),
            (119.5, "pick-1", "picked"),
            (179.5, "ship-1", "packed"),
            (179.5, "pick-1", "packed"),
        ]
        assert (await client.fetch_fulfillment("ship-1")).status == "shipped"
        assert (await client.fetch_fulfillment("pick-1")).status == "ready_for_pickup"
        await trio.sleep(3600)
        assert (await client.fetch_fulfillment("pick-1")).status == "picked_up"
        nursery.cancel_scope.cancel()


async def test_lines_are_rejected_while_picking(autojump_clock: trio.abc.Clock) -> None:
    """Short stock rejects the missing units only; reject_skus rejects a whole line; a
    fulfilment with nothing left is rejected outright."""
    sim = ThreePLSimulator(
        knobs=ThreePLKnobs(step_delay=1, reject_skus={"TEE-M": "damaged"}),
        stock={"MUG-1": 1, "TEE-M": 5, "LAMP-1": 0},
    )
    async with trio.open_nursery() as nursery, await in_process(sim) as http:
        await nursery.start(sim.run)
        client = ThreePLClient(http, system="wh")
        await client.send_fulfillment(
            fulfilment("mixed", lines=(("MUG-1", 3), ("TEE-M", 1))), idempotency_key="a"
        )
        await client.send_fulfillment(
            fulfilment("empty", lines=(("LAMP-1", 1),)), idempotency_key="b"
        )
        await trio.sleep(10)
        mixed = await client.fetch_fulfillment("mixed")
        empty = await client.fetch_fulfillment("empty")
        nursery.cancel_scope.cancel()

    assert mixed.status == "shipped"
    assert [(r.sku, r.quantity, r.reason) for r in rejected_lines(mixed)] == [
        ("MUG-1", 2, "stock_missing"),
        ("TEE-M", 1, "damaged"),
    ]
    assert shipped_lines(mixed) == (StockLine("MUG-1", 1),)
    assert empty.status == "rejected"
    assert rejected_lines(empty)[0].reason == "stock_missing"
    assert sim.stock == {"MUG-1": 0, "TEE-M": 5, "LAMP-1": 0}
