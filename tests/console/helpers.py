"""A real `somsd run` for the console tests: a store with click & collect and a staff token,
a CSV warehouse whose outbound folder is broken (so its deliveries become dead letters), a
hold rule, and a browser-like client (cookies, form posts with the page's CSRF token)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import unescape
from pathlib import Path

import httpx
import msgspec

from somsd.domain.order import Customer
from somsd.domain.testing import sample_line, sample_order
from tests.harness import ADMIN_TOKEN, DaemonProcess
from tests.orders.shop import accept, order_body, webhook_config

STAFF_TOKEN = "essen-staff-token-31c9"
OTHER_STAFF_TOKEN = "bochum-staff-token-77aa"
HOSTILE_NAME = '<script>alert("x")</script><img src=x onerror=alert(1)>'
HOSTILE_STREET = '"><svg onload=alert(2)>'


def store_location(name: str, staff: str) -> str:
    return f"""
[[location]]
name = "{name}"
kind = "store"
adapter = "manual"
country = "DE"
lat = 51.46
lon = 7.01
ships_to = ["DE"]
capabilities = ["ship", "pickup"]
staff_token_file = "{name}.staff"
"""


VAN_STAFF_TOKEN = "van-staff-token-5e02"
HOSTILE_SKU = "<svg/onload=alert(3)>"
# The seller of test_document_actor's config, without a VAT ID: EN 16931 BR-S-02 fails, so
# every invoice is recorded as failing validation (and still has its PDF to look at).
INVALID_DOCUMENTS = """
[documents]
enabled = true
seller_name = "Muster Handel GmbH"
street = "Industriestr. 5"
zip = "20095"
city = "Hamburg"
vat_id = ""
email = "rechnung@muster.example"
contact_name = "Max Muster"
phone = "+49 40 1234567"
iban = "DE02120300000000202051"
"""


def van_location(printer: str | None) -> str:
    """A warehouse shipping with an own-fleet carrier: packing draws a ZPL label (printed on
    `printer` when given)."""
    printed = f'label_printer = "{printer}"' if printer else ""
    return f"""
[[location]]
name = "wh-van"
kind = "warehouse"
adapter = "manual"
country = "DE"
lat = 51.51
lon = 7.47
ships_to = ["DE"]
carriers = ["city-van"]
sender = {{ name = "Versand", street = "Hafenstr. 1", zip = "44147", city = "Dortmund" }}
label_format = "zpl"
{printed}
staff_token_file = "wh-van.staff"

[[carrier]]
name = "city-van"
kind = "own-fleet"
"""


def console_config(
    directory: Path, *, van: bool = False, printer: str | None = None, documents: str = ""
) -> Path:
    """The console's daemon; with `van` also the own-fleet warehouse `wh-van` (its labels
    printed on `printer` when given), with `documents` a `[documents]` section."""
    (directory / "wh-van.staff").write_text(VAN_STAFF_TOKEN + "\n")
    (directory / "store-essen.staff").write_text(STAFF_TOKEN + "\n")
    (directory / "store-bochum.staff").write_text(OTHER_STAFF_TOKEN + "\n")
    (directory / "blocker").write_text("a file where the warehouse expects a folder\n")
    (directory / "wh-in").mkdir()
    extra = (
        store_location("store-essen", STAFF_TOKEN)
        + store_location("store-bochum", OTHER_STAFF_TOKEN)
        + f"""
[[location]]
name = "wh-csv"
kind = "warehouse"
adapter = "csv"
country = "DE"
ships_to = ["DE"]
outbound_dir = "{directory / "blocker" / "out"}"
inbound_dir = "{directory / "wh-in"}"
poll_interval = "200ms"

[holds]
blocked_emails = ["blocked@example.com"]
"""
        + (van_location(printer) if van else "")
        + documents
    )
    return webhook_config(directory, extra)


async def put_stock(admin: httpx.AsyncClient, location: str, sku: str, on_hand: int) -> None:
    response = await admin.put(
        f"/v1/locations/{location}/stock",
        json={"as_of": datetime.now(UTC).isoformat(), "counts": [{"sku": sku, "on_hand": on_hand}]},
    )
    assert response.status_code == 200, response.text


async def hostile_held_order(client: httpx.AsyncClient, external_id: str) -> str:
    order = sample_order(
        external_id=external_id,
        customer=Customer(id="666", email="blocked@example.com", name=HOSTILE_NAME),
    )
    address = msgspec.structs.replace(order.shipping_address, street=HOSTILE_STREET)
    order = msgspec.structs.replace(order, shipping_address=address, billing_address=address)
    return await accept(client, msgspec.json.encode(order))


async def pickup_order(client: httpx.AsyncClient, external_id: str, store: str) -> str:
    body = order_body(
        external_id,
        lines=[sample_line(sku="PICK-1", quantity=1)],
        shipping_method="pickup",
        shipping_price="0.00",
        pickup_location=store,
    )
    return await accept(client, body)


_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return unescape(found.group(1))


class Browser:
    """What a browser does with the console: keeps cookies, follows nothing by itself, posts
    forms with the CSRF token of the page they were on."""

    def __init__(self, daemon: DaemonProcess, language: str = "en") -> None:
        self.client = httpx.AsyncClient(
            base_url=daemon.api, headers={"Accept-Language": language}, timeout=10
        )

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.client.get(path, params=params or None)

    async def post(
        self, path: str, form: dict[str, str], *, page: str | None = None
    ) -> httpx.Response:
        if page is not None:
            form = {"csrf": csrf_of((await self.get(page)).text), **form}
        return await self.client.post(path, data=form)

    async def login(self, token: str = ADMIN_TOKEN, user: str = "Erika") -> httpx.Response:
        form = await self.get("/console/login")
        assert form.status_code == 200, form.text
        response = await self.client.post(
            "/console/login", data={"csrf": csrf_of(form.text), "token": token, "user": user}
        )
        return response
