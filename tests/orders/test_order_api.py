"""The operator API for orders over real HTTP against a real `somsd run`.

Lifecycle, holds, invoicing, cancellation, returns, copies, queries, the CLI, the OpenAPI
document and the metrics, each driven the way an operator or a script would: orders come in
through the signed webhook, actions go to `/v1/orders/{id}/...` with the admin token.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import trio

from somsd.domain.order import Customer
from somsd.domain.testing import sample_line
from tests.harness import DaemonProcess, running_daemon
from tests.orders.shop import (
    CHANNEL,
    OTHER_CHANNEL,
    accept,
    list_all_orders,
    order_body,
    post_order,
    sample_value,
    scrape,
    somsd_cli,
    webhook_config,
)

pytestmark = pytest.mark.slow

CONFIG = """
[[location]]
name = "store-essen"
kind = "store"
capabilities = ["pickup"]

[holds]
unpaid_limits = { EUR = "100.00" }

[[status]]
name = "awaiting-stock"
from = ["pending"]
to = ["processing", "canceled"]
"""

MUG = sample_line()  # 2 x 12.50
TEE = sample_line(sku="TEE-1", name="Tee", quantity=1, unit_price="20.00")


def year() -> int:
    """The numbering year: today in the business's time zone (the `[invoicing]` default)."""
    return datetime.now(ZoneInfo("Europe/Berlin")).year


def invoice_number(sequence: int) -> str:
    return f"RE-{year()}-{sequence:06d}"


def credit_note_number(sequence: int) -> str:
    return f"GS-{year()}-{sequence:06d}"


@dataclass
class Api:
    """A running daemon with a shop (webhook sender) and an operator (admin token) client."""

    config: Path
    daemon: DaemonProcess
    shop: httpx.AsyncClient
    admin: httpx.AsyncClient
    _external_ids: count[int] = field(default_factory=lambda: count(1000))

    async def new_order(self, *, channel: str = CHANNEL, **variations: Any) -> str:
        """Take in `sample_order(**variations)` under a fresh external id; its order id."""
        variations.setdefault("external_id", str(next(self._external_ids)))
        return await accept(self.shop, order_body(**variations), channel=channel)

    async def act(
        self, order_id: str, action: str, body: object = None, *, status: int = 200
    ) -> dict[str, Any]:
        """POST an operator action and return the answer, failing unless it has `status`."""
        response = await self.admin.post(f"/v1/orders/{order_id}/{action}", json=body)
        assert response.status_code == status, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def show(self, order_id: str) -> dict[str, Any]:
        response = await self.admin.get(f"/v1/orders/{order_id}")
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def event_types(self, order_id: str) -> list[str]:
        response = await self.admin.get(f"/v1/orders/{order_id}/events")
        assert response.status_code == 200, response.text
        return [record["event"]["type"] for record in response.json()]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    config = webhook_config(tmp_path, CONFIG)
    async with (
        running_daemon(config) as daemon,
        httpx.AsyncClient(base_url=daemon.api) as shop,
        daemon.admin() as admin,
    ):
        yield Api(config, daemon, shop, admin)


# -- lifecycle and holds ----------------------------------------------------------------------


async def test_status_route_follows_the_machine_and_409_lists_the_allowed(api: Api) -> None:
    """Legal moves (custom status included) succeed; an illegal one is 409 naming the options."""
    order_id = await api.new_order()

    refused = await api.act(order_id, "status", {"status": "complete", "reason": "r"}, status=409)
    assert refused["error"]["code"] == "illegal_transition"
    assert refused["error"]["message"] == (
        'cannot change status from "pending" to "complete"; '
        "allowed: processing, on-hold, canceled, awaiting-stock"
    )

    response = await api.admin.post(
        f"/v1/orders/{order_id}/status",
        json={"status": "awaiting-stock", "reason": "supplier late"},
        headers={"X-Somsd-User": "anna"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "awaiting-stock"

    refused = await api.act(order_id, "status", {"status": "pending", "reason": "r"}, status=409)
    assert refused["error"]["message"].endswith("allowed: processing, canceled")
    state = await api.act(order_id, "status", {"status": "processing", "reason": "stock in"})
    assert state["status"] == "processing"

    history = [
        (h["status"], h["actor"], h["reason"]) for h in (await api.show(order_id))["history"]
    ]
    assert history == [
        ("new", "order-desk", "received"),
        ("pending", "order-desk", "accepted"),
        ("awaiting-stock", "user:anna", "supplier late"),
        ("processing", "user:admin", "stock in"),
    ]
    cancel = await api.act(order_id, "status", {"status": "canceled", "reason": "r"}, status=409)
    assert cancel["error"]["code"] == "use_cancel"
    no_reason = await api.act(order_id, "status", {"status": "complete", "reason": " "}, status=422)
    assert no_reason["error"]["path"] == "$.reason"
    missing = await api.act(order_id, "status", {"status": "complete"}, status=422)
    assert "reason" in missing["error"]["message"]


async def test_unpaid_order_over_the_limit_is_held_until_released(api: Api) -> None:
    """An invoice order above `unpaid_limits` lands on-hold; release returns it to pending."""
    held_id = await api.new_order(
        lines=[sample_line(quantity=10)], payment_method="invoice", payment_status="pending"
    )
    held = await api.show(held_id)
    assert held["status"] == "on-hold"
    assert [reason["code"] for reason in held["hold_reasons"]] == ["unpaid_over_limit"]
    assert held["draft"]["gross"] == "129.90"
    assert held["invoice"] is None

    refused = await api.act(held_id, "invoice", status=409)
    assert refused["error"]["code"] == "not_invoiceable"
    refused = await api.act(held_id, "status", {"status": "processing", "reason": "r"}, status=409)
    assert refused["error"]["message"].endswith("allowed: pending, canceled")

    released = await api.act(held_id, "release", {"reason": "customer verified"})
    assert released["status"] == "pending"
    assert released["hold_reasons"] == []
    assert released["history"][-1]["reason"] == "customer verified"
    invoiced = await api.act(held_id, "invoice")
    assert invoiced["invoice"]["number"] == invoice_number(1)

    again_held = await api.new_order(
        lines=[sample_line(quantity=10)], payment_method="cod", payment_status="pending"
    )
    by_status = await api.act(again_held, "status", {"status": "pending", "reason": "checked"})
    assert (by_status["status"], by_status["held_from"]) == ("pending", None)

    small_id = await api.new_order(payment_method="invoice", payment_status="pending")
    assert (await api.show(small_id))["status"] == "pending"
    not_held = await api.act(small_id, "release", {"reason": "r"}, status=409)
    assert not_held["error"]["code"] == "not_on_hold"


# -- invoicing ---------------------------------------------------------------------------------


async def test_invoices_follow_the_payment_method(api: Api) -> None:
    """Paid card orders are invoiced at intake, PayPal on payment, invoice orders on request."""
    card = await api.show(await api.new_order())
    assert card["invoice"]["number"] == invoice_number(1)
    assert card["invoice"]["document"]["gross"] == "29.90"
    assert card["draft"] is None

    paypal_id = await api.new_order(payment_method="paypal", payment_status="pending")
    paypal = await api.show(paypal_id)
    assert (paypal["invoice"], paypal["draft"]) == (None, None)
    paid = await api.act(paypal_id, "payments", {"amount": "29.90", "reference": "PP-1"})
    assert paid["invoice"]["number"] == invoice_number(2)

    invoice_id = await api.new_order(payment_method="invoice", payment_status="pending")
    drafted = await api.show(invoice_id)
    assert drafted["invoice"] is None
    assert drafted["draft"]["gross"] == "29.90"
    issued = await api.act(invoice_id, "invoice")
    assert issued["invoice"]["number"] == invoice_number(3)
    assert issued["draft"] is None
    again = await api.act(invoice_id, "invoice", status=409)
    assert again["error"]["code"] == "already_invoiced"

    samples = await scrape(api.daemon)
    assert sample_value(samples, "somsd_documents_issued_total", kind="invoice") == 3


async def test_concurrent_invoicing_takes_gapless_numbers(api: Api) -> None:
    """Forty concurrent `POST /invoice` get RE-<year>-000001..000040: no gap, no double."""
    orders = 40
    order_ids: list[str] = []

    async def take_in(external_id: str) -> None:
        order_ids.append(
            await api.new_order(
                external_id=external_id, payment_method="invoice", payment_status="pending"
            )
        )

    async with trio.open_nursery() as nursery:
        for index in range(orders):
            nursery.start_soon(take_in, f"gapless-{index}")
    numbers: dict[str, str] = {}

    async def invoice(order_id: str) -> None:
        numbers[order_id] = (await api.act(order_id, "invoice"))["invoice"]["number"]

    async with trio.open_nursery() as nursery:
        for order_id in order_ids:
            nursery.start_soon(invoice, order_id)
    assert sorted(numbers.values()) == [invoice_number(n) for n in range(1, orders + 1)]
    for order_id in order_ids[:5]:
        assert (await api.show(order_id))["invoice"]["number"] == numbers[order_id]
    verify = await somsd_cli("db", "verify", "-c", str(api.config))
    assert verify.returncode == 0, verify.stderr.decode()


# -- cancellation and returns ------------------------------------------------------------------


async def test_cancelling_before_invoicing_voids_the_draft(api: Api) -> None:
    """Whole: canceled, draft gone, no document; partial: the draft shrinks, status stays."""
    whole_id = await api.new_order(payment_method="invoice", payment_status="pending")
    whole = await api.act(whole_id, "cancel", {"reason": "customer changed mind"})
    assert (whole["status"], whole["canceled"], whole["draft"]) == ("canceled", True, None)
    assert whole["credit_notes"] == []
    assert whole["refunded"] == "0"
    again = await api.act(whole_id, "cancel", {"reason": "twice"}, status=409)
    assert again["error"]["code"] == "already_canceled"

    partial_id = await api.new_order(
        lines=[MUG, TEE], payment_method="invoice", payment_status="pending"
    )
    assert (await api.show(partial_id))["draft"]["gross"] == "49.90"
    partial = await api.act(
        partial_id, "cancel", {"reason": "tee sold out", "lines": [{"line": 1, "quantity": 1}]}
    )
    assert partial["status"] == "pending"
    assert partial["lines"][1]["canceled"] == 1
    assert partial["draft"]["gross"] == "29.90"
    too_many = await api.act(
        partial_id, "cancel", {"reason": "r", "lines": [{"line": 0, "quantity": 3}]}, status=422
    )
    assert too_many["error"]["path"] == "$.lines[0].quantity"


async def test_cancelling_after_invoicing_issues_a_credit_note_and_a_refund(api: Api) -> None:
    """Whole: a credit note for the invoice and the payment refunded; partial: for the units."""
    whole_id = await api.new_order()
    whole = await api.act(whole_id, "cancel", {"reason": "fraud suspected"})
    assert whole["status"] == "canceled"
    [note] = whole["credit_notes"]
    assert note["number"] == credit_note_number(1)
    assert note["document"]["gross"] == whole["invoice"]["document"]["gross"] == "29.90"
    assert whole["refunded"] == "29.90"
    types = await api.event_types(whole_id)
    assert types[-3:] == ["OrderCanceled", "CreditNoteIssued", "RefundRecorded"]

    partial_id = await api.new_order(lines=[MUG, TEE])
    partial = await api.act(
        partial_id, "cancel", {"reason": "one mug broke", "lines": [{"line": 0, "quantity": 1}]}
    )
    assert partial["status"] == "pending"
    [note] = partial["credit_notes"]
    assert note["number"] == credit_note_number(2)
    assert note["document"]["gross"] == "12.50"
    assert partial["refunded"] == "12.50"
    events = (await api.admin.get(f"/v1/orders/{partial_id}/events")).json()
    refund = events[-1]["event"]
    assert (refund["type"], refund["amount"], refund["cause"]) == (
        "RefundRecorded",
        "12.50",
        "cancellation",
    )


async def test_concurrent_actions_on_one_order_are_serialised(api: Api) -> None:
    """Ten concurrent one-unit cancellations all apply, in turn: ten gapless credit notes."""
    order_id = await api.new_order(lines=[sample_line(quantity=10)])  # 125.00 + 4.90, paid
    statuses: list[str] = []

    async def cancel_one_unit() -> None:
        body = {"reason": "unit short", "lines": [{"line": 0, "quantity": 1}]}
        statuses.append((await api.act(order_id, "cancel", body))["status"])

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(cancel_one_unit)
    # The last one leaves nothing open: it cancels the order and credits the shipping too.
    assert statuses == ["pending"] * 9 + ["canceled"]
    state = await api.show(order_id)
    assert [note["number"] for note in state["credit_notes"]] == [
        credit_note_number(n) for n in range(1, 11)
    ]
    assert [note["document"]["gross"] for note in state["credit_notes"]] == ["12.50"] * 9 + [
        "17.40"
    ]
    assert state["refunded"] == state["paid"] == "129.90"


async def test_return_is_requested_approved_received_and_refunded(api: Api) -> None:
    """Ship, request, approve, receive with conditions, refund: a credit note for the units."""
    order_id = await api.new_order(lines=[MUG, TEE])
    not_shipped = await api.act(
        order_id, "returns", {"lines": [{"line": 0, "quantity": 1}], "reason": "r"}, status=422
    )
    assert not_shipped["error"]["code"] == "exceeds_returnable"

    shipped = await api.act(
        order_id,
        "shipments",
        {
            "lines": [{"line": 0, "quantity": 2}, {"line": 1, "quantity": 1}],
            "tracking_number": "T1",
        },
    )
    assert shipped["status"] == "complete"

    too_many = await api.act(
        order_id, "returns", {"lines": [{"line": 0, "quantity": 3}], "reason": "r"}, status=422
    )
    assert too_many["error"]["path"] == "$.lines[0].quantity"
    requested = await api.act(
        order_id,
        "returns",
        {"lines": [{"line": 0, "quantity": 2}], "reason": "too small"},
        status=201,
    )
    rma = requested["returns"][-1]
    assert (rma["status"], rma["lines"]) == ("requested", [{"line": 0, "quantity": 2}])
    rma_id = rma["rma_id"]

    early = await api.act(order_id, f"returns/{rma_id}/refund", status=409)
    assert early["error"]["code"] == "return_state"
    approved = await api.act(order_id, f"returns/{rma_id}/approve", {"reason": "ok"})
    assert approved["returns"][-1]["status"] == "approved"
    received = await api.act(
        order_id,
        f"returns/{rma_id}/receive",
        {
            "lines": [
                {"line": 0, "quantity": 1, "condition": "resellable"},
                {"line": 0, "quantity": 1, "condition": "damaged"},
            ]
        },
    )
    assert received["returns"][-1]["status"] == "received"
    refunded = await api.act(order_id, f"returns/{rma_id}/refund")
    assert refunded["returns"][-1]["status"] == "refunded"
    [note] = refunded["credit_notes"]
    assert note["number"] == credit_note_number(1)
    assert note["document"]["gross"] == "25.00"
    assert refunded["refunded"] == "25.00"
    assert refunded["status"] == "complete"  # returns do not move the status

    nothing_left = await api.act(
        order_id, "returns", {"lines": [{"line": 0, "quantity": 1}], "reason": "r"}, status=422
    )
    assert nothing_left["error"]["code"] == "exceeds_returnable"
    unknown = await api.act(order_id, "returns/rma-nope/approve", status=404)
    assert unknown["error"]["code"] == "unknown_return"
    await api.act(order_id, f"returns/{rma_id}/bounce", status=404)


async def test_copy_creates_a_linked_repeat_or_free_replacement(api: Api) -> None:
    """A copy is 201 with the new order, linked both ways; a replacement is free."""
    original_id = await api.new_order(external_id="copy-me")
    repeat = await api.act(original_id, "copy", {"reason": "customer reorders"}, status=201)
    assert repeat["order_id"] != original_id
    assert repeat["copied_from"] == original_id
    assert repeat["order"]["number"] == "copy-me-C"
    assert repeat["order"]["payment"] == {
        "method": "creditcard",
        "status": "pending",
        "amount": "29.90",
    }
    assert (repeat["status"], repeat["invoice"], repeat["replacement"]) == ("pending", None, False)

    free = await api.act(
        original_id, "copy", {"reason": "parcel lost", "replacement": True}, status=201
    )
    assert free["replacement"] is True
    assert free["order"]["number"] == "copy-me-R"
    assert free["order"]["payment"]["amount"] == "0.00"
    assert (free["invoice"], free["draft"]) == (None, None)

    original = await api.show(original_id)
    assert original["copies"] == [repeat["order_id"], free["order_id"]]
    listed = {o["order_id"]: o for o in await list_all_orders(api.admin)}
    assert listed[free["order_id"]]["channel"] == CHANNEL


# -- queries -----------------------------------------------------------------------------------


async def test_order_list_filters_and_pages_with_a_cursor(api: Api) -> None:
    """status, channel and q (name, e-mail, number) filter; the cursor walks every order once."""
    people = [("Erika Mustermann", "erika@example.org"), ("Jörg Öztürk", "joerg@beispiel.de")]
    ids = [
        await api.new_order(
            external_id=f"N-{index}",
            customer=Customer(id=None, email=email, name=name),
        )
        for index, (name, email) in enumerate(people * 3)
    ]
    other = await api.new_order(channel=OTHER_CHANNEL, external_id="M-1")
    await api.act(ids[0], "cancel", {"reason": "test"})

    async def listed(**params: str) -> list[str]:
        return [o["order_id"] for o in await list_all_orders(api.admin, **params)]

    assert await listed() == [*ids, other]
    assert await listed(channel=OTHER_CHANNEL) == [other]
    assert await listed(channel=CHANNEL) == ids
    assert await listed(status="canceled") == [ids[0]]
    assert await listed(status="pending", channel=CHANNEL) == ids[1:]
    assert await listed(q="erika") == ids[0::2]  # name, case-insensitive
    assert await listed(q="Öztürk") == ids[1::2]
    assert await listed(q="@beispiel.de") == ids[1::2]  # e-mail
    assert await listed(q="M-1") == [other]  # number
    assert await listed(q="%") == []  # a LIKE wildcard is searched for literally
    assert await listed(q="_") == []

    walked: list[str] = []
    cursor = "0"
    for _ in range(10):
        page = (await api.admin.get("/v1/orders", params={"limit": "2", "cursor": cursor})).json()
        assert len(page["orders"]) <= 2
        walked += [o["order_id"] for o in page["orders"]]
        if page["next_cursor"] is None:
            break
        cursor = str(page["next_cursor"])
    assert walked == [*ids, other]

    for bad in ({"limit": "0"}, {"cursor": "abc"}, {"limit": "x"}):
        response = await api.admin.get("/v1/orders", params=bad)
        assert response.status_code == 422, bad
        assert response.json()["error"]["code"] == "invalid_query"


async def test_text_search_ignores_case_beyond_ascii(api: Api) -> None:
    """`q` is case-insensitive for umlauts too: "öztürk" and "JÖRG" find "Jörg Öztürk"."""
    order_id = await api.new_order(
        customer=Customer(id=None, email="joerg@example.org", name="Jörg Öztürk")
    )
    for text in ("öztürk", "JÖRG"):
        page = (await api.admin.get("/v1/orders", params={"q": text})).json()
        assert [o["order_id"] for o in page["orders"]] == [order_id], text


async def test_empty_filters_mean_no_filter(api: Api) -> None:
    """`?status=&channel=&q=` (a form sent empty) lists every order, as if absent."""
    order_id = await api.new_order()
    page = await api.admin.get("/v1/orders", params={"status": "", "channel": "", "q": ""})
    assert page.status_code == 200
    assert [o["order_id"] for o in page.json()["orders"]] == [order_id]


async def test_event_history_is_listed_oldest_first(api: Api) -> None:
    """`GET /v1/orders/{id}/events` lists every event with rising seq and versions 1..n."""
    order_id = await api.new_order()
    await api.act(order_id, "status", {"status": "processing", "reason": "picked"})
    records = (await api.admin.get(f"/v1/orders/{order_id}/events")).json()
    assert [r["event"]["type"] for r in records] == [
        "OrderReceived",
        "OrderAccepted",
        "PaymentRecorded",
        "InvoiceIssued",
        "StatusChanged",
    ]
    assert [r["version"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["seq"] for r in records] == sorted({r["seq"] for r in records})
    assert records[0]["event"]["order_id"] == order_id
    assert records[-1]["event"]["actor"] == "user:admin"


async def test_unknown_orders_are_404_and_every_order_route_needs_the_token(api: Api) -> None:
    """No such order: 404 `order_not_found`; no bearer token: 401 on every `/v1/orders` route."""
    for path in ("/v1/orders/o-nope", "/v1/orders/o-nope/events"):
        response = await api.admin.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "order_not_found"
    for action, body in (
        ("status", {"status": "processing", "reason": "r"}),
        ("cancel", {"reason": "r"}),
        ("copy", {"reason": "r"}),
        ("invoice", None),
    ):
        refused = await api.act("o-nope", action, body, status=404)
        assert refused["error"]["code"] == "order_not_found", action

    order_id = await api.new_order()
    for method, path in (
        ("GET", "/v1/orders"),
        ("GET", f"/v1/orders/{order_id}"),
        ("GET", f"/v1/orders/{order_id}/events"),
        ("POST", f"/v1/orders/{order_id}/cancel"),
        ("POST", f"/v1/orders/{order_id}/invoice"),
    ):
        body = {"reason": "r"} if method == "POST" else None
        response = await api.shop.request(method, path, json=body)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await api.show(order_id))["canceled"] is False


async def test_cli_lists_shows_and_prints_events_of_orders(api: Api) -> None:
    """`somsd orders list/show/events -c CONFIG` read the data dir while the daemon runs."""
    first = await api.new_order(external_id="CLI-1")
    second = await api.new_order(
        external_id="CLI-2", payment_method="invoice", payment_status="pending"
    )
    await api.act(second, "cancel", {"reason": "test"})
    config = str(api.config)

    listing = await somsd_cli("orders", "list", "-c", config)
    assert listing.returncode == 0, listing.stderr.decode()
    lines = listing.stdout.decode().splitlines()
    assert lines[0].split() == ["order", "channel", "number", "status", "total", "customer"]
    assert [line.split()[:4] for line in lines[1:]] == [
        [first, CHANNEL, "CLI-1", "pending"],
        [second, CHANNEL, "CLI-2", "canceled"],
    ]
    canceled = await somsd_cli("orders", "list", "--status", "canceled", "-c", config)
    assert [line.split()[0] for line in canceled.stdout.decode().splitlines()[1:]] == [second]
    paged = await somsd_cli("orders", "list", "--limit", "1", "-c", config)
    assert paged.stdout.decode().splitlines()[-1].startswith("(more: --cursor ")

    shown = await somsd_cli("orders", "show", first, "-c", config)
    assert shown.returncode == 0, shown.stderr.decode()
    assert json.loads(shown.stdout) == await api.show(first)

    events = await somsd_cli("orders", "events", first, "-c", config)
    assert events.returncode == 0, events.stderr.decode()
    printed = [line.split()[:3] for line in events.stdout.decode().splitlines()]
    assert [(version, kind) for version, _, kind in printed] == [
        ("1", "OrderReceived"),
        ("2", "OrderAccepted"),
        ("3", "PaymentRecorded"),
        ("4", "InvoiceIssued"),
    ]

    missing = await somsd_cli("orders", "show", "o-nope", "-c", config)
    assert missing.returncode == 1
    assert missing.stderr.decode() == "somsd: no order 'o-nope'\n"


# -- documentation and metrics -----------------------------------------------------------------

ORDER_ROUTES = {
    ("/v1/channels/{channel}/orders", "post"),
    ("/v1/orders", "get"),
    ("/v1/orders/{order_id}", "get"),
    ("/v1/orders/{order_id}/events", "get"),
    ("/v1/orders/{order_id}/documents", "get"),
    ("/v1/orders/{order_id}/status", "post"),
    ("/v1/orders/{order_id}/release", "post"),
    ("/v1/orders/{order_id}/address", "post"),
    ("/v1/orders/{order_id}/payments", "post"),
    ("/v1/orders/{order_id}/shipments", "post"),
    ("/v1/orders/{order_id}/invoice", "post"),
    ("/v1/orders/{order_id}/cancel", "post"),
    ("/v1/orders/{order_id}/copy", "post"),
    ("/v1/orders/{order_id}/returns", "post"),
    ("/v1/orders/{order_id}/returns/{rma_id}/approve", "post"),
    ("/v1/orders/{order_id}/returns/{rma_id}/reject", "post"),
    ("/v1/orders/{order_id}/returns/{rma_id}/receive", "post"),
    ("/v1/orders/{order_id}/returns/{rma_id}/refund", "post"),
}


async def test_openapi_documents_every_order_route(api: Api) -> None:
    """`/openapi.json` has each order route with its security, body and error answers."""
    document = (await api.shop.get("/openapi.json")).json()
    documented = {
        (path, method)
        for path, operations in document["paths"].items()
        if "/orders" in path
        for method in operations
    }
    assert documented == ORDER_ROUTES
    for path, method in ORDER_ROUTES:
        operation = document["paths"][path][method]
        assert operation["summary"], path
        if path.startswith("/v1/orders"):
            assert operation["security"] == [{"bearer": []}], path
            assert "401" in operation["responses"], path
        if "{order_id}" in path:
            assert "404" in operation["responses"], path
    intake = document["paths"]["/v1/channels/{channel}/orders"]["post"]
    assert "security" not in intake  # the HMAC signature authenticates webhooks
    assert {"202", "200", "400", "401", "404", "413", "422"} <= set(intake["responses"])
    assert intake["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("Order")
    status = document["paths"]["/v1/orders/{order_id}/status"]["post"]
    assert "409" in status["responses"]


async def test_openapi_documents_the_order_list_query_parameters(api: Api) -> None:
    """A client generated from `/openapi.json` can filter and page `GET /v1/orders`."""
    document = (await api.shop.get("/openapi.json")).json()
    parameters = document["paths"]["/v1/orders"]["get"].get("parameters", [])
    assert {(p["name"], p["in"]) for p in parameters} == {
        (name, "query") for name in ("status", "channel", "q", "cursor", "limit")
    }


async def test_metrics_count_intake_statuses_and_documents(api: Api) -> None:
    """The scrape has received/duplicate per channel, status entries, documents, intake time."""
    await api.new_order(external_id="m-1")
    held = await api.new_order(
        external_id="m-2",
        lines=[sample_line(quantity=10)],
        payment_method="invoice",
        payment_status="pending",
    )
    await api.new_order(channel=OTHER_CHANNEL, external_id="m-1")
    redelivered = await post_order(api.shop, order_body("m-1"))
    assert redelivered.status_code == 200
    await api.act(held, "release", {"reason": "ok"})
    await api.act(held, "invoice")

    samples = await scrape(api.daemon)
    expected = {
        ("somsd_orders_received_total", ("channel", CHANNEL)): 2,
        ("somsd_orders_received_total", ("channel", OTHER_CHANNEL)): 1,
        ("somsd_orders_duplicate_total", ("channel", CHANNEL)): 1,
        ("somsd_order_status_total", ("status", "new")): 3,
        ("somsd_order_status_total", ("status", "on-hold")): 1,
        ("somsd_order_status_total", ("status", "pending")): 4,  # three accepted, one released
        ("somsd_order_holds_total", ("reason", "unpaid_over_limit")): 1,
        ("somsd_documents_issued_total", ("kind", "invoice")): 3,
        ("somsd_intake_request_seconds_count", ("outcome", "accepted")): 3,
        ("somsd_intake_request_seconds_count", ("outcome", "duplicate")): 1,
    }
    actual = {
        (name, label): sample_value(samples, name, **dict([label])) for name, label in expected
    }
    assert actual == expected
    buckets = sample_value(
        samples, "somsd_intake_request_seconds_bucket", outcome="accepted", le="+Inf"
    )
    assert buckets == 3
