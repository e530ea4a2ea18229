"""The console over real HTTP against a real `somsd run`: sessions, CSRF, the operator's
pages and actions, hostile customer data, time travel and the store worker's scope."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from somsd.domain.testing import sample_line
from tests.adapters.conftest import wait_until
from tests.console.helpers import (
    HOSTILE_NAME,
    OTHER_STAFF_TOKEN,
    STAFF_TOKEN,
    Browser,
    console_config,
    csrf_of,
    hostile_held_order,
    pickup_order,
    put_stock,
)
from tests.harness import running_daemon
from tests.orders.shop import accept, order_body

pytestmark = pytest.mark.slow

PAGES = [
    "/console/",
    "/console/orders",
    "/console/orders/o123",
    "/console/holds",
    "/console/dead-letters",
    "/console/system",
    "/console/store",
    "/console/store/f-1",
    "/console/live",
]
ACTIONS = [
    "/console/logout",
    "/console/orders/o123/release",
    "/console/dead-letters/1/retry",
    "/console/dead-letters/retry-all",
    "/console/system/reload",
    "/console/store/f-1/pick",
]


async def wait_until_dead_letter(admin: httpx.AsyncClient) -> dict[str, object]:
    with trio.fail_after(10):
        while True:
            page = (await admin.get("/v1/dead-letters")).json()["dead_letters"]
            if page:
                return dict(page[0])
            await trio.sleep(0.05)  # polling a real daemon's outbox over HTTP


async def test_no_page_or_action_without_a_valid_session(tmp_path: Path) -> None:
    async with running_daemon(console_config(tmp_path)) as daemon, Browser(daemon) as browser:
        for cookie in (None, "forged.0000", "e30.deadbeef"):
            browser.client.cookies.clear()
            if cookie:
                browser.client.cookies.set("somsd_console", cookie)
            for path in PAGES:
                response = await browser.get(path)
                assert response.status_code == 303, path
                assert response.headers["location"].startswith("/console/login"), path
            for path in ACTIONS:
                response = await browser.client.post(path, data={"reason": "x"})
                assert response.status_code == 403, path
        # what is not a console route is a console error page, not the API's JSON
        response = await browser.get("/console/nope")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert (await browser.get("/console")).status_code == 308
        # a wrong token does not log in
        browser.client.cookies.clear()
        response = await browser.login("not-the-token")
        assert response.status_code == 401
        assert "somsd_console" not in browser.client.cookies
        # a login without the form's CSRF token is refused
        response = await browser.client.post("/console/login", data={"token": "x"})
        assert response.status_code == 403
        # logged in: the cookie is HttpOnly and SameSite=Strict
        response = await browser.login()
        assert response.status_code == 303
        set_cookie = response.headers["set-cookie"].lower()
        assert "httponly" in set_cookie
        assert "samesite=strict" in set_cookie
        assert (await browser.get("/console/orders")).status_code == 200
        # a POST without or with a wrong CSRF token changes nothing
        for form in ({}, {"csrf": "wrong"}):
            response = await browser.client.post("/console/system/reload", data=form)
            assert response.status_code == 403
        # logout ends the session, also for a copy of the cookie kept elsewhere
        kept = browser.client.cookies["somsd_console"]
        response = await browser.post("/console/logout", {}, page="/console/orders")
        assert response.status_code == 303
        browser.client.cookies.set("somsd_console", kept)
        assert (await browser.get("/console/orders")).status_code == 303


async def test_operator_finds_an_order_reads_it_releases_a_hold_and_retries(
    tmp_path: Path,
) -> None:
    async with running_daemon(console_config(tmp_path)) as daemon, daemon.admin() as admin:
        await put_stock(admin, "store-essen", "MUG-1", 50)
        plain = await accept(admin, order_body("C-100"))
        held = await hostile_held_order(admin, "C-666")
        await put_stock(admin, "wh-csv", "CSV-1", 5)
        await accept(admin, order_body("C-200", lines=[sample_line(sku="CSV-1", quantity=1)]))
        dead = await wait_until_dead_letter(admin)

        async with Browser(daemon) as browser:
            assert (await browser.login()).status_code == 303
            # search by number, e-mail, status and channel
            page = (await browser.get("/console/orders", q="C-100")).text
            assert f"/console/orders/{plain}" in page
            assert held not in page
            page = (await browser.get("/console/orders", q="blocked@example.com")).text
            assert held in page
            assert plain not in page
            page = (await browser.get("/console/orders", status="on-hold")).text
            assert held in page
            assert plain not in page
            page = (await browser.get("/console/orders", channel="marketplace")).text
            assert "C-100" not in page
            # hostile customer data is shown as text, never as markup
            for path in ("/console/orders", f"/console/orders/{held}", "/console/holds"):
                response = await browser.get(path)
                assert response.status_code == 200, path
                assert "<script>alert" not in response.text
                assert "<img src=x" not in response.text
                assert "<svg onload" not in response.text
                assert "&lt;script&gt;" in response.text
                assert "script-src 'self'" in response.headers["content-security-policy"]
            assert (
                "&lt;svg onload=alert(2)&gt;" in (await browser.get(f"/console/orders/{held}")).text
            )
            assert HOSTILE_NAME not in (await browser.get("/console/holds")).text

            # the order's detail: lines, totals, payments, fulfilments, timeline, why here
            detail = (await browser.get(f"/console/orders/{plain}")).text
            for text in ("MUG-1", "29.90", "RE-2026-", "OrderReceived", "InvoiceIssued"):
                assert text in detail, text
            assert "store-essen" in detail
            assert "distance" in detail

            # release the hold with a reason; the timeline names who and why
            response = await browser.post(
                f"/console/orders/{held}/release",
                {"reason": "customer called, verified"},
                page="/console/holds",
            )
            assert response.status_code == 303
            state = (await admin.get(f"/v1/orders/{held}")).json()
            assert state["status"] != "on-hold"
            timeline = (await browser.get(f"/console/orders/{held}")).text
            assert "user:Erika<" in timeline
            assert "customer called, verified" in timeline
            # a release without a reason is refused by the API and shown, nothing changes
            response = await browser.post(
                f"/console/orders/{plain}/release", {"reason": ""}, page="/console/holds"
            )
            assert response.status_code in (409, 422)

            # time travel: the held order before its release, in the API and the console
            events = (await admin.get(f"/v1/orders/{held}/events")).json()
            held_at = next(e for e in events if e["event"]["type"] == "OrderHeld")["recorded_at"]
            past = await admin.get(f"/v1/orders/{held}", params={"as_of": held_at})
            assert past.status_code == 200, past.text
            assert past.json()["status"] == "on-hold"
            assert (
                await admin.get(f"/v1/orders/{held}", params={"as_of": "yesterday"})
            ).status_code == 422
            too_early = await admin.get(
                f"/v1/orders/{held}", params={"as_of": "2000-01-01T00:00:00Z"}
            )
            assert too_early.status_code == 404
            page = (await browser.get(f"/console/orders/{held}", as_of=held_at)).text
            assert "on-hold" in page
            assert "customer called, verified" not in page

            # dead letters: inspect, retry one (still broken: dead again), fix, retry all
            page = (await browser.get("/console/dead-letters")).text
            assert str(dead["target"]) in page
            assert "not a folder" in page
            (tmp_path / "blocker").unlink()  # the operator fixes the cause
            outbound = tmp_path / "blocker" / "out"
            outbound.mkdir(parents=True)
            response = await browser.post(
                "/console/dead-letters/retry-all",
                {"target": str(dead["target"])},
                page="/console/dead-letters",
            )
            assert response.status_code == 303
            assert "1" in (await browser.get(response.headers["location"])).text
            await wait_until(lambda: bool(list(outbound.glob("*.csv"))), budget=10)
            assert (await admin.get("/v1/dead-letters")).json()["dead_letters"] == []

            # system: actors, restarts, backlog, reload with its result
            page = (await browser.get("/console/system")).text
            assert "order-desk" in page
            assert "location/wh-csv" in page
            response = await browser.post("/console/system/reload", {}, page="/console/system")
            assert response.status_code == 200
            assert "applied" in response.text

            # German on request, and by the switch
            async with Browser(daemon, language="de-DE,de;q=0.9") as german:
                await german.login()
                assert "Bestellungen" in (await german.get("/console/orders")).text
            response = await browser.get("/console/lang/de", next="/console/orders")
            assert response.status_code == 303
            assert "Bestellungen" in (await browser.get("/console/orders")).text


async def test_store_worker_sees_and_works_only_her_store(tmp_path: Path) -> None:
    async with running_daemon(console_config(tmp_path)) as daemon, daemon.admin() as admin:
        await put_stock(admin, "store-essen", "PICK-1", 5)
        await put_stock(admin, "store-bochum", "PICK-1", 5)
        essen = await pickup_order(admin, "P-1", "store-essen")
        bochum = await pickup_order(admin, "P-2", "store-bochum")
        with trio.fail_after(10):
            while True:
                mine = (await admin.get(f"/v1/orders/{essen}")).json()["fulfilment"]["fulfilments"]
                theirs = (await admin.get(f"/v1/orders/{bochum}")).json()["fulfilment"][
                    "fulfilments"
                ]
                if mine and theirs:
                    break
                await trio.sleep(0.05)
        fid, other = mine[0]["id"], theirs[0]["id"]
        assert mine[0]["location"] == "store-essen"

        async with Browser(daemon) as worker:
            response = await worker.login(STAFF_TOKEN, user="Sabine")
            assert response.headers["location"] == "/console/store"
            page = (await worker.get("/console/store")).text
            assert fid in page
            assert other not in page
            # only store work: the operator's pages are closed to her
            for path in (
                "/console/orders",
                "/console/holds",
                "/console/dead-letters",
                "/console/system",
            ):
                assert (await worker.get(path)).status_code == 403, path
            # another store's fulfilment: 403, to look at and to act on
            assert (await worker.get(f"/console/store/{other}")).status_code == 403
            csrf = csrf_of(page)
            response = await worker.client.post(
                f"/console/store/{other}/accept", data={"csrf": csrf}
            )
            assert response.status_code == 403
            assert (await admin.get(f"/v1/fulfillments/{other}")).json()["state"] == "requested"

            for step in ("accept", "pick", "pack", "ready"):
                response = await worker.post(
                    f"/console/store/{fid}/{step}", {}, page=f"/console/store/{fid}"
                )
                assert response.status_code == 303, (step, response.text)
            code = (await admin.get(f"/v1/orders/{essen}")).json()["fulfilment"]["fulfilments"][0][
                "pickup_code"
            ]
            assert code
            # the code is never on the list, nor on the fulfilment's page
            assert code not in (await worker.get("/console/store")).text
            assert code not in (await worker.get(f"/console/store/{fid}")).text
            wrong = await worker.post(
                f"/console/store/{fid}/picked-up",
                {"pickup_code": "000000" if code != "000000" else "111111"},
                page=f"/console/store/{fid}",
            )
            assert wrong.status_code == 409
            right = await worker.post(
                f"/console/store/{fid}/picked-up",
                {"pickup_code": code},
                page=f"/console/store/{fid}",
            )
            assert right.status_code == 303
            view = (await admin.get(f"/v1/fulfillments/{fid}")).json()
            assert view["state"] == "picked_up"
            assert any(h["actor"] == "user:Sabine" for h in view["history"])

        # the other store's token opens the other store only
        async with Browser(daemon) as colleague:
            await colleague.login(OTHER_STAFF_TOKEN)
            assert (await colleague.get(f"/console/store/{fid}")).status_code == 403
            assert (await colleague.get(f"/console/store/{other}")).status_code == 200
            # she refuses the damaged unit, with the reason; it is routed elsewhere
            response = await colleague.post(
                f"/console/store/{other}/reject",
                {"sku": "PICK-1", "quantity": "1", "reason": "damaged"},
                page=f"/console/store/{other}",
            )
            assert response.status_code == 303, response.text
            view = (await admin.get(f"/v1/fulfillments/{other}")).json()
            assert view["state"] == "rejected"
            response = await colleague.post(
                f"/console/store/{other}/reject",
                {"sku": "PICK-1", "quantity": "many", "reason": "damaged"},
                page=f"/console/store/{other}",
            )
            assert response.status_code == 422


async def live_events(
    api: str,
    cookie: str,
    *,
    until: Callable[[list[dict[str, Any]]], bool],
    opened: trio.Event,
) -> list[dict[str, Any]]:
    """Read `/console/live` as a browser's EventSource does, over a plain socket (the stream
    never ends by itself, and an abandoned httpx stream leaves generators behind), until
    `until(events so far)` holds. Chunked framing keeps each event's `data:` line whole."""
    url = httpx.URL(api)
    request = (
        f"GET /console/live HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Cookie: somsd_console={cookie}\r\nAccept: text/event-stream\r\n\r\n"
    )
    events: list[dict[str, Any]] = []
    stream = await trio.open_tcp_stream(str(url.host), int(url.port or 80))
    async with stream:
        await stream.send_all(request.encode())
        received = b""
        with trio.fail_after(10):
            while not until(events):
                chunk = await stream.receive_some(65536)
                assert chunk, "the live stream ended"
                opened.set()  # the answer has begun: the stream reads from here on
                received += chunk
                lines = re.findall(rb"^data: (\{.*\})$", received, re.MULTILINE)
                events = [json.loads(line) for line in lines]
        assert received.startswith(b"HTTP/1.1 200")
        assert b"text/event-stream" in received.split(b"\r\n\r\n")[0]
    return events


async def test_live_updates_announce_new_event_log_rows(tmp_path: Path) -> None:
    """Server-sent events from the event log: an order taken in after the page opened its
    stream is announced with its stream and type; store staff hear only that a fulfilment
    changed."""
    async with running_daemon(console_config(tmp_path)) as daemon, daemon.admin() as admin:
        await put_stock(admin, "store-essen", "PICK-1", 5)
        async with Browser(daemon) as operator, Browser(daemon) as worker:
            await operator.login()
            await worker.login(STAFF_TOKEN)
            seen: dict[str, list[dict[str, Any]]] = {}

            opened = {"operator": trio.Event(), "worker": trio.Event()}

            async def listen(name: str, cookie: str, done: Callable[[list[Any]], bool]) -> None:
                seen[name] = await live_events(daemon.api, cookie, until=done, opened=opened[name])

            order_ids: list[str] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    listen,
                    "operator",
                    operator.client.cookies["somsd_console"],
                    lambda events: any(
                        order_ids and e["stream"] == f"order-{order_ids[0]}" for e in events
                    ),
                )
                nursery.start_soon(listen, "worker", worker.client.cookies["somsd_console"], bool)
                for event in opened.values():  # both streams start at the log's head
                    await event.wait()
                order_ids.append(await pickup_order(admin, "L-1", "store-essen"))
            assert any(e["type"] == "OrderReceived" for e in seen["operator"])
            assert {e["stream"] for e in seen["worker"]} == {"fulfilment"}
