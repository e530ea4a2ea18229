"""Bad input over real HTTP is a 4xx naming the problem, never a 5xx (issue 15, items 4-9, 13).

Every case runs against one real `somsd run` with a webhook channel, a store, and a `rest`
warehouse taking signed callbacks (its 3PL is unreachable, which only makes its polls fail):
the answer's status, error code and JSON path, and afterwards a daemon that is still ready and
whose event store still verifies. A hypothesis fuzz then throws odd path parameters at every
route with one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from somsd.signing import SIGNATURE_HEADER, sign
from tests.harness import ADMIN_TOKEN, running_daemon
from tests.orders.shop import (
    accept,
    daemon_in_thread,
    intake_path,
    order_body,
    post_order,
    signed,
    webhook_config,
)

pytestmark = pytest.mark.slow

CALLBACK_KEY = "wh-callback-key-31c9"
LOCATIONS = """
[[location]]
name = "store-essen"
kind = "store"
capabilities = ["ship", "pickup"]

[[location]]
name = "wh-1"
adapter = "rest"
url = "http://127.0.0.1:9/api"
token_file = "wh.token"
callback_secret_file = "wh-callback.secret"
poll_interval = "1h"
"""
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def hardening_config(directory: Path) -> Path:
    (directory / "wh.token").write_text("wh-token\n")
    (directory / "wh-callback.secret").write_text(CALLBACK_KEY + "\n")
    return webhook_config(directory, LOCATIONS)


def assert_error(response: httpx.Response, status: int, code: str, path: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"], error
    if path is not None:
        assert error.get("path") == path, error


def verify_database(config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "somsd", "db", "verify", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


async def test_bad_input_is_a_4xx_naming_the_problem(tmp_path: Path) -> None:
    config = hardening_config(tmp_path)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        order_id = await accept(admin, order_body("hard-1"))
        body = order_body("sig-1")
        now = int(time.time())
        digest = sign(b"k", body, now).split(",")[1]

        # Item 4: `t=` of a non-ASCII digit or 5,000 digits, `v1=` not hex: 401, not 500.
        for header in (
            "t=\u00b2,v1=00",
            f"t={'9' * 5000},{digest}",
            f"t={now},v1=not-hex",
            f"t={now}," + ",".join([digest] * 50),
        ):
            for path in (intake_path(), "/v1/locations/wh-1/callbacks"):
                # Latin-1, as servers decode header bytes: b"\xb2" arrives as "²".
                value = header.encode("latin-1")
                response = await admin.post(path, content=body, headers={SIGNATURE_HEADER: value})
                assert_error(response, 401, "bad_signature")
                assert "malformed" in response.json()["error"]["message"]

        # Item 5: correctly signed, nested 100,000 deep: 400 naming the problem.
        # In a field the order does not know: msgspec skips such fields, recursively.
        deep = order_body("deep-1")[:-1] + b', "extension": ' + nested(100_000) + b"}"
        assert_error(await post_order(admin, deep), 400, "malformed_json", "$")
        callback_deep = b'{"extension": ' + nested(100_000) + b"}"
        response = await admin.post(
            "/v1/locations/wh-1/callbacks",
            content=callback_deep,
            headers={SIGNATURE_HEADER: sign(CALLBACK_KEY.encode(), callback_deep, now)},
        )
        assert_error(response, 400, "invalid_callback")
        for method, path in (
            ("POST", f"/v1/orders/{order_id}/cancel"),
            ("PUT", "/v1/locations/store-essen/stock"),
            ("POST", "/v1/fulfillments/f-1/ship"),
        ):
            # These bodies refuse unknown fields, so the first key is already the error.
            response = await admin.request(method, path, content=nested(100_000))
            assert response.status_code in (400, 404, 422), response.text

        # Item 6: huge query numbers and ids.
        huge = "3622110362006071046832128"
        response = await admin.get("/v1/orders", params={"limit": huge, "cursor": huge})
        assert_error(response, 422, "invalid_query", "limit")
        assert "1 to 500" in response.json()["error"]["message"]
        response = await admin.get("/v1/orders", params={"cursor": huge})
        assert_error(response, 422, "invalid_query", "cursor")
        for params in ({"limit": "\u00b2"}, {"cursor": "-1"}, {"limit": "501"}):
            assert_error(await admin.get("/v1/orders", params=params), 422, "invalid_query")
        response = await admin.get("/v1/fulfillments", params={"cursor": huge})
        assert_error(response, 422, "invalid_query", "cursor")
        response = await admin.get("/v1/dead-letters", params={"limit": "\u00b2"})
        assert_error(response, 400, "invalid_limit", "limit")
        for entry in ("99999999999999999999999", "%C2%B2", "9223372036854775807"):
            response = await admin.post(f"/v1/dead-letters/{entry}/retry")
            assert_error(response, 404, "unknown_dead_letter")
        # An id that is a slash, or none at all, is no resource either (found by the fuzzer).
        for path in ("/v1/orders/%2F", "/v1/orders/", "/v1/fulfillments//", "/v1/orders//x"):
            response = await admin.get(path)
            assert response.status_code == 404, (path, response.status_code)

        # Item 7: an on-hand count beyond 10^9 is 422 with its path; the actor stays up.
        response = await admin.put(
            "/v1/locations/store-essen/stock",
            json=[{"sku": "MUG-1", "on_hand": 178504043752582127470369570816}],
        )
        assert_error(response, 422, "invalid_body", "$[0].on_hand")
        assert (await admin.get("/readyz")).status_code == 200
        response = await admin.put(
            "/v1/locations/store-essen/stock", json=[{"sku": "MUG-1", "on_hand": 10**9}]
        )
        assert response.status_code == 200, response.text

        # Item 8: a payment is a decimal string in the currency's precision, bounded.
        payments = f"/v1/orders/{order_id}/payments"
        for amount, code in (
            (4.1195389662491176e16, "invalid_body"),
            (12.5, "invalid_body"),
            ("82390779324982354.5", "invalid_body"),
            ("1e3", "invalid_body"),
            ("12.505", "invalid_amount"),
            ("0", "invalid_body"),
            ("0.00", "invalid_body"),
        ):
            response = await admin.post(payments, json={"amount": amount})
            assert_error(response, 422, code, "$.amount")
        response = await admin.post(payments, json={"amount": "1.00", "payment_id": "p-ok"})
        assert response.status_code == 200, response.text

        # Item 9 (API half): a tax rate of 1e-999999 and a quantity over the maximum.
        def with_line(external_id: str, **line: Any) -> bytes:
            document = json.loads(order_body(external_id))
            document["lines"][0].update(line)
            return json.dumps(document).encode()

        response = await post_order(admin, with_line("tax-1", tax_rate="1e-999999"))
        assert_error(response, 422, "invalid_order", "$.lines[0].tax_rate")
        response = await post_order(admin, with_line("qty-1", quantity=10**30))
        assert_error(response, 422, "invalid_order", "$.lines[0].quantity")

        # Item 13: an unsupported method on a known path is 405 with `Allow`.
        for method, path, allowed in (
            ("TRACE", "/v1/orders", {"GET", "HEAD"}),
            ("DELETE", f"/v1/orders/{order_id}", {"GET", "HEAD"}),
            ("GET", intake_path(), {"POST"}),
            ("PATCH", "/v1/locations/store-essen/stock", {"PUT"}),
            ("PUT", "/healthz", {"GET", "HEAD"}),
        ):
            response = await admin.request(method, path)
            assert_error(response, 405, "method_not_allowed")
            allow = {m.strip() for m in response.headers["allow"].split(",")}
            assert allow == allowed, (method, path, allow)

        assert (await admin.get("/readyz")).status_code == 200
        restarts = [e for e in daemon.log if e.get("event") == "child_crashed"]
        assert restarts == [], restarts
    verify_database(config)


async def test_openapi_documents_constraints_and_every_status(tmp_path: Path) -> None:
    config = hardening_config(tmp_path)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        document = (await admin.get("/openapi.json")).json()
    paths = document["paths"]
    orders = paths["/v1/orders"]["get"]
    params = {p["name"]: p["schema"] for p in orders["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 500}
    assert params["cursor"]["minimum"] == 0
    assert set(orders["responses"]) >= {"200", "401", "403", "422", "503"}
    payment = paths["/v1/orders/{order_id}/payments"]["post"]
    assert set(payment["responses"]) >= {"200", "400", "401", "403", "404", "409", "422", "503"}
    schemas = document["components"]["schemas"]
    amount = schemas["PaymentBody"]["properties"]["amount"]
    assert amount["type"] == "string"
    assert "pattern" in amount
    on_hand = schemas["CountBody"]["properties"]["on_hand"]
    assert on_hand == {"type": "integer", "minimum": 0, "maximum": 10**9}
    intake = paths["/v1/channels/{channel}/orders"]["post"]
    assert set(intake["responses"]) >= {"400", "401", "404", "413", "422", "503"}
    for operations in paths.values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    assert "content" in response, (operation["summary"], status)


# -- fuzz: path parameters --------------------------------------------------------------------

ROUTES_WITH_IDS = [
    ("GET", "/v1/orders/{}"),
    ("GET", "/v1/orders/{}/events"),
    ("POST", "/v1/orders/{}/invoice"),
    ("POST", "/v1/orders/{}/release"),
    ("POST", "/v1/orders/{}/returns/{}/approve"),
    ("POST", "/v1/dead-letters/{}/retry"),
    ("GET", "/v1/inventory/{}"),
    ("PUT", "/v1/locations/{}/stock"),
    ("POST", "/v1/locations/{}/callbacks"),
    ("GET", "/v1/fulfillments/{}"),
    ("POST", "/v1/fulfillments/{}/accept"),
    ("POST", "/v1/channels/{}/orders"),
]
AWKWARD_IDS = [
    "99999999999999999999999",
    "9223372036854775808",
    "-1",
    "\u00b2",
    "\u0663",
    "\x00",
    "%00",
    "%ED%A0%80",  # an encoded lone surrogate
    "%FF",
    "..",
    " ",
    "\u202e",
    "a" * 5000,
]
path_ids = st.one_of(
    st.sampled_from(AWKWARD_IDS).map(lambda text: text if "%" in text else quote(text, safe="")),
    st.text(min_size=1, max_size=40).map(lambda text: quote(text, safe="")),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    config = hardening_config(tmp_path_factory.mktemp("path-fuzz"))
    with daemon_in_thread(config) as daemon, httpx.Client(base_url=daemon.api) as client:
        yield client


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(ROUTES_WITH_IDS),
    first=path_ids,
    second=path_ids,
    body=st.sampled_from([b"", b"{}", b"[]", b"null"]),
)
def test_fuzzed_path_parameters_never_get_a_5xx(
    fuzz_target: httpx.Client, route: tuple[str, str], first: str, second: str, body: bytes
) -> None:
    method, template = route
    path = template.format(first, second) if template.count("{}") == 2 else template.format(first)
    headers = {**ADMIN, **signed(body)}
    response = fuzz_target.request(method, path, content=body, headers=headers)
    assert response.status_code < 500, (method, path, response.status_code, response.text)
    # 414: a path over the server's 8 KiB request-target limit is refused before any route.
    assert response.status_code in (200, 400, 401, 404, 405, 409, 413, 414, 422), response.text
    if response.status_code == 414:
        assert len(response.request.url.raw_path) > 8192


def test_daemon_is_still_ready_after_the_path_fuzz(fuzz_target: httpx.Client) -> None:
    assert fuzz_target.get("/readyz").status_code == 200
