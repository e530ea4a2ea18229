"""Webhook intake refuses bad input over real HTTP: the right status, the path, nothing stored.

Each refusal is checked against a real `somsd run`: status code, the `{"error": {...}}` body
naming the JSON path where there is one, no order in the list, no count in
`somsd_orders_received_total`, and a daemon that is still ready. A hypothesis fuzz then throws
random JSON and mutated orders at the route: nothing may produce a 5xx, and whatever is
accepted must be retrievable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from somsd.domain.order import (
    MAX_QUANTITY,
    PAYMENT_METHODS,
    PAYMENT_STATUSES,
    Address,
    Customer,
    Order,
    decode_order,
)
from somsd.domain.testing import CONTRACT_EXAMPLE, sample_line, sample_order
from somsd.signing import SIGNATURE_HEADER
from tests.harness import ADMIN_TOKEN, running_daemon
from tests.orders.shop import (
    CHANNEL,
    BodyChunks,
    daemon_in_thread,
    intake_path,
    list_all_orders,
    order_body,
    post_order,
    sample_value,
    scrape,
    signed,
    webhook_config,
)

pytestmark = pytest.mark.slow

MAX_BODY_BYTES = 4096  # small enough that an order of 60 lines exceeds it
STORES = """
[[location]]
name = "store-essen"
kind = "store"
capabilities = ["pickup"]

[[channel]]
name = "shop"
kind = "smartstore"
url = "https://shop.example.com"
public_key = "pk"
secret_key_file = "b2b.secret"
"""


def edited(external_id: str, edit: Callable[[dict[str, Any]], object]) -> bytes:
    """The contract example under `external_id`, changed in place by `edit` (JSON level)."""
    document = json.loads(CONTRACT_EXAMPLE)
    document["external_id"] = document["number"] = external_id
    edit(document)
    return json.dumps(document).encode()


@dataclass(frozen=True)
class Refusal:
    name: str
    body: bytes
    status: int
    code: str
    path: str | None = None  # the JSON path the error names; None: no path expected
    headers: dict[str, str] | None = None  # None: signed correctly, now
    channel: str = CHANNEL
    chunked: bool = False  # send without Content-Length


def refusals() -> list[Refusal]:
    valid = order_body("sig-valid")
    # 10 s beyond the 300 s window: the seconds the test itself takes cannot bring a timestamp
    # back inside it (signatures carry whole seconds).
    now = time.time()
    many_lines = [sample_line(sku=f"SKU-{i}", quantity=1) for i in range(60)]
    too_large = order_body("too-large", lines=many_lines)
    assert len(too_large) > MAX_BODY_BYTES
    return [
        Refusal("wrong key", valid, 401, "bad_signature", headers=signed(valid, key="not-it")),
        Refusal(
            "stale timestamp", valid, 401, "bad_signature", headers=signed(valid, at=now - 310)
        ),
        Refusal(
            "future timestamp", valid, 401, "bad_signature", headers=signed(valid, at=now + 310)
        ),
        Refusal("missing header", valid, 401, "bad_signature", headers={}),
        Refusal(
            "garbled header", valid, 401, "bad_signature", headers={SIGNATURE_HEADER: "v1=abc"}
        ),
        Refusal(
            "body changed after signing",
            valid.replace(b'"Max Muster"', b'"Eve Muster"', 1),
            401,
            "bad_signature",
            headers=signed(valid),
        ),
        Refusal("malformed JSON", b'{"external_id": "m1", ', 400, "malformed_json", "$"),
        Refusal("not an object", b"[1, 2, 3]", 422, "invalid_order", "$"),
        Refusal(
            "quantity as a string",
            edited("types-1", lambda d: d["lines"][0].update(quantity="2")),
            422,
            "invalid_order",
            "$.lines[0].quantity",
        ),
        Refusal(
            "customer as a list",
            edited("types-2", lambda d: d.update(customer=["max@example.com"])),
            422,
            "invalid_order",
            "$.customer",
        ),
        Refusal(
            "missing currency",
            edited("types-3", lambda d: d.pop("currency")),
            422,
            "invalid_order",
            "$.currency",
        ),
        Refusal(
            "no lines",
            edited("rule-lines", lambda d: d.update(lines=[])),
            422,
            "invalid_order",
            "$.lines",
        ),
        Refusal(
            "quantity below 1",
            edited("rule-qty", lambda d: d["lines"][0].update(quantity=0)),
            422,
            "invalid_order",
            "$.lines[0].quantity",
        ),
        Refusal(
            "unknown currency",
            edited("rule-currency", lambda d: d.update(currency="EUX")),
            422,
            "invalid_order",
            "$.currency",
        ),
        Refusal(
            "totals off by two cents",
            edited("rule-total", lambda d: d["payment"].update(amount="29.92")),
            422,
            "invalid_order",
            "$.payment.amount",
        ),
        Refusal(
            "pickup without a store",
            edited("rule-pickup", lambda d: d["shipping"].update(method="pickup")),
            422,
            "invalid_order",
            "$.shipping.pickup_location",
        ),
        Refusal(
            "unknown pickup store",
            edited(
                "rule-store",
                lambda d: d["shipping"].update(method="pickup", pickup_location="store-mars"),
            ),
            422,
            "invalid_order",
            "$.shipping.pickup_location",
        ),
        Refusal(
            "unknown payment method",
            edited("rule-pay", lambda d: d["payment"].update(method="bitcoin")),
            422,
            "invalid_order",
            "$.payment.method",
        ),
        Refusal(
            "placed_at without offset",
            edited("rule-time", lambda d: d.update(placed_at="2026-11-21T10:00:00")),
            422,
            "invalid_order",
            "$.placed_at",
        ),
        Refusal("oversized body", too_large, 413, "body_too_large"),
        Refusal("oversized chunked body", too_large, 413, "body_too_large", chunked=True),
        Refusal("unknown channel", valid, 404, "unknown_channel", channel="nowhere"),
        Refusal("channel without webhooks", valid, 404, "unknown_channel", channel="shop"),
    ]


async def send(client: httpx.AsyncClient, case: Refusal) -> httpx.Response:
    """Send the case's body with its headers, with a Content-Length or chunked."""
    headers = signed(case.body) if case.headers is None else case.headers
    request = client.build_request("POST", intake_path(case.channel), headers=headers)
    if case.chunked:
        request.headers.pop("Content-Length", None)
        request.headers["Transfer-Encoding"] = "chunked"
        size = len(case.body) // 4 + 1
        parts = [case.body[i : i + size] for i in range(0, len(case.body), size)]
        request.stream = BodyChunks(*parts)
    else:
        request.headers["Content-Length"] = str(len(case.body))
        request.stream = BodyChunks(case.body)
    return await client.send(request)


def error_problems(case: Refusal, response: httpx.Response) -> list[str]:
    """What is wrong with the answer to `case` (empty: it is right)."""
    try:
        body = response.json()
    except json.JSONDecodeError:
        return [f"{case.name}: {response.status_code} with a non-JSON body {response.text!r}"]
    problems: list[str] = []
    if response.status_code != case.status:
        problems.append(f"{case.name}: status {response.status_code}, expected {case.status}")
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(body) != {"error"}:
        return [*problems, f"{case.name}: body is not {{'error': {{...}}}}: {body!r}"]
    if error.get("code") != case.code:
        problems.append(f"{case.name}: code {error.get('code')!r}, expected {case.code!r}")
    if not isinstance(error.get("message"), str) or not error["message"]:
        problems.append(f"{case.name}: no message in {error!r}")
    if case.path is not None and error.get("path") != case.path:
        problems.append(f"{case.name}: path {error.get('path')!r}, expected {case.path!r}")
    return problems


async def test_refused_orders_are_answered_with_their_path_and_never_stored(
    tmp_path: Path,
) -> None:
    """Every kind of bad delivery gets its status and JSON path; nothing is stored or counted."""
    config = webhook_config(tmp_path, STORES, max_body_bytes=MAX_BODY_BYTES)
    cases = refusals()
    async with (
        running_daemon(config) as daemon,
        httpx.AsyncClient(base_url=daemon.api) as client,
        daemon.admin() as admin,
    ):
        problems: list[str] = []
        for case in cases:
            problems += error_problems(case, await send(client, case))
        assert not problems, "\n".join(problems)

        assert await list_all_orders(admin) == []
        samples = await scrape(daemon)
        assert sample_value(samples, "somsd_orders_received_total", channel=CHANNEL) == 0
        assert sample_value(samples, "somsd_orders_duplicate_total", channel=CHANNEL) == 0
        refused = sample_value(samples, "somsd_intake_request_seconds_count", outcome="rejected")
        assert refused == len(cases)
        assert (await client.get("/readyz")).status_code == 200

        # Still serving: an order whose total is off by exactly the one cent tolerated.
        one_cent = edited("one-cent", lambda d: d["payment"].update(amount="29.91"))
        accepted = await post_order(client, one_cent)
        assert accepted.status_code == 202, accepted.text
        assert [o["external_id"] for o in await list_all_orders(admin)] == ["one-cent"]


async def test_every_problem_of_an_order_is_listed_with_its_path(tmp_path: Path) -> None:
    """A body breaking several rules is answered once, listing each problem's JSON path."""
    config = webhook_config(tmp_path)

    def break_three_rules(document: dict[str, Any]) -> None:
        document["currency"] = "EUX"
        document["lines"][0]["quantity"] = 0
        document["customer"]["email"] = "not an address"

    body = edited("three", break_three_rules)
    async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.api) as client:
        response = await post_order(client, body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["path"] == "$.currency"  # the first, in document order
    assert [p["path"] for p in error["problems"]] == [
        "$.currency",
        "$.customer.email",
        "$.lines[0].quantity",
    ]


# -- fuzz -----------------------------------------------------------------------------------

# Strings that commonly break money, date and enum parsing: special decimals, huge exponents,
# lookalike digits, bidi and NUL characters, impossible dates.
AWKWARD_STRINGS = [
    "",
    " ",
    "NaN",
    "-Infinity",
    "sNaN",
    "1e999999999",
    "-0",
    "0.001",
    "1E+30",
    "99999999999999999999999999999.99",
    "\u0663",
    "\u202e",
    "\U0001d7d8",
    "\x00",
    "12.50",
    "EUR",
    "pickup",
    "invoice",
    "2026-13-45T99:00:00Z",
    "9999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00-23:59",
]
AWKWARD_NUMBERS = [0, -1, 2**31, 2**63, -(2**63) - 1, 10**30, 1e308, -0.0, 5e-324]
_text = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=12)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    _text,
    st.sampled_from(AWKWARD_STRINGS),
    st.sampled_from(AWKWARD_NUMBERS),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)

_fresh_ids = count()


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@st.composite
def mutated_orders(draw: st.DrawFn) -> object:
    """The contract example with a fresh external id and one to four random mutations."""
    document: Any = json.loads(CONTRACT_EXAMPLE)
    document["external_id"] = f"fuzz-{next(_fresh_ids)}-{time.monotonic_ns()}"
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(document) if p]
        if not paths:
            return draw(json_values)
        *parent_path, key = draw(st.sampled_from(paths))
        parent = document
        for step in parent_path:
            parent = parent[step]
        action = draw(st.sampled_from(["drop", "replace", "awkward", "duplicate"]))
        if action == "drop":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(json_values)
        elif action == "awkward":
            parent[key] = draw(st.sampled_from([*AWKWARD_STRINGS, *AWKWARD_NUMBERS]))
        elif isinstance(parent, list):
            parent.append(parent[key])
        else:
            parent[key] = [parent[key], parent[key]]
    return document


_names = st.text(min_size=1, max_size=24).filter(str.strip)


@st.composite
def awkward_valid_orders(draw: st.DrawFn) -> Order:
    """Orders the rules allow, at their edges: any unicode, huge quantities and prices."""
    lines = draw(
        st.lists(
            st.builds(
                sample_line,
                sku=_names,
                name=st.text(max_size=24),
                quantity=st.integers(1, MAX_QUANTITY),
                unit_price=st.decimals(0, 10**6, places=2).map(str),
                tax_rate=st.sampled_from(["0", "7", "19", "100"]),
            ),
            min_size=1,
            max_size=5,
        )
    )
    address = st.builds(
        Address,
        name=_names,
        company=st.none() | st.text(max_size=24),
        street=_names,
        zip=_names,
        city=_names,
        country=st.sampled_from(["DE", "AT", "NL", "CH", "US", "JP"]),
    )
    return sample_order(
        external_id=f"fuzz-valid-{next(_fresh_ids)}-{draw(_names)}",
        lines=lines,
        shipping_method=draw(st.sampled_from(["standard", "express"])),
        shipping_price=str(draw(st.decimals(0, 1000, places=2))),
        payment_method=draw(st.sampled_from(sorted(PAYMENT_METHODS))),
        payment_status=draw(st.sampled_from(sorted(PAYMENT_STATUSES))),
        customer=Customer(id=draw(st.none() | _names), email=draw(st.emails()), name=draw(_names)),
        billing_address=draw(address),
        shipping_address=draw(address),
    )


def encoded(value: object, ascii_only: bool) -> bytes:
    # surrogatepass: lone surrogates become the (invalid) UTF-8 a broken sender would send.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    awkward_valid_orders().map(msgspec.json.encode),
    st.builds(encoded, mutated_orders(), st.booleans()),
    st.builds(encoded, json_values, st.booleans()),
    st.binary(max_size=64),
)


class Stored(msgspec.Struct):
    order: Order


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One daemon for all examples, reached with a synchronous client."""
    config = webhook_config(tmp_path_factory.mktemp("fuzz"), STORES)
    with daemon_in_thread(config) as daemon, httpx.Client(base_url=daemon.api) as client:
        yield client


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=bodies)
def test_fuzzed_intake_never_fails_with_5xx(fuzz_target: httpx.Client, body: bytes) -> None:
    """Random JSON and mutated orders are refused with 4xx or accepted and retrievable."""
    response = fuzz_target.post(intake_path(), content=body, headers=signed(body))
    event(f"answered {response.status_code}")  # --hypothesis-show-statistics shows the mix
    assert response.status_code in (200, 202, 400, 413, 422), (response.status_code, response.text)
    answer = response.json()
    if response.status_code >= 400:
        error = answer["error"]
        assert isinstance(error["code"], str)
        assert isinstance(error["message"], str)
        assert error.get("path", "$").startswith("$")
        return
    stored = fuzz_target.get(
        f"/v1/orders/{answer['order_id']}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert stored.status_code == 200, stored.text
    order, sent = msgspec.json.decode(stored.content, type=Stored).order, decode_order(body)
    assert order.external_id == sent.external_id
    if response.status_code == 202:  # a 200 names an earlier order with this external id
        assert order == sent


def test_daemon_is_still_ready_after_the_fuzz(fuzz_target: httpx.Client) -> None:
    """Whatever the fuzz sent, the daemon still answers `/readyz` with 200."""
    assert fuzz_target.get("/readyz").status_code == 200
