"""The stock routes over real HTTP: somsd.http on a loopback port 0, the actor on a real store.

Sockets and the store's thread are in flight, so the real clock is used; nothing waits on time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from actors.inventory import Inventory
from actors.inventory_api import InventoryRoutes
from somsd.api import ApiState, build_api_app
from somsd.config import ListenAddress
from somsd.domain.atp import SafetyStock
from somsd.http import HttpListener
from somsd.secrets import Secret
from tests.inventory.conftest import StartInventory
from tests.inventory.support import T0, later, reserve, shop

TOKEN = "inventory-test-token"
LOCATIONS = {"wh", "store"}
CHANNELS = [shop("wh", "store")]


@pytest.fixture
async def inventory(start_inventory: StartInventory) -> Inventory:
    started, _ = await start_inventory(
        safety=SafetyStock(location_defaults={"store": 1}), channels=CHANNELS
    )
    return started


@pytest.fixture
async def client(nursery: trio.Nursery, inventory: Inventory) -> AsyncIterator[httpx.AsyncClient]:
    routes = InventoryRoutes(
        inventory, locations=lambda: set(LOCATIONS), channels=lambda: CHANNELS, now=lambda: T0
    ).routes()
    state = ApiState(is_ready=lambda: True, admin_tokens=lambda: [Secret(TOKEN)])
    listener = HttpListener(
        "api",
        build_api_app(routes, state, version="test"),
        ListenAddress("127.0.0.1:0"),
        graceful_timeout=1,
    )
    await nursery.start(listener.run)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=listener.urls[0], headers=headers) as client:
        yield client
    await listener.stop()


async def test_bare_array_report_is_counted_now_and_shown_per_location_and_channel(
    client: httpx.AsyncClient, inventory: Inventory
) -> None:
    """The contract's body: counts as of now; GET shows them with safety, ATP and channels."""
    response = await client.put("/v1/locations/wh/stock", json=[{"sku": "MUG", "on_hand": 5}])
    assert response.status_code == 200
    assert response.json() == {
        "location": "wh",
        "as_of": "2026-11-21T09:00:00Z",
        "counted": 1,
        "stale": [],
        "oversold": [],
    }
    await client.put("/v1/locations/store/stock", json=[{"sku": "MUG", "on_hand": 3}])
    await reserve(inventory, "r", "wh", MUG=2)

    shown = await client.get("/v1/inventory/MUG")
    assert shown.status_code == 200
    assert shown.json() == {
        "sku": "MUG",
        "locations": {
            "store": {
                "on_hand": 3,
                "reserved": 0,
                "safety": 1,
                "atp": 2,
                "as_of": "2026-11-21T09:00:00Z",
            },
            "wh": {
                "on_hand": 5,
                "reserved": 2,
                "safety": 0,
                "atp": 3,
                "as_of": "2026-11-21T09:00:00Z",
            },
        },
        "channels": {"shop": {"available": 5}},
    }


async def test_dated_report_answers_stale_rows_and_oversold_reservations(
    client: httpx.AsyncClient, inventory: Inventory
) -> None:
    """The object body carries as_of and `complete`; the answer lists what was not applied
    and which reservations the counts no longer cover."""
    await client.put("/v1/locations/wh/stock", json=[{"sku": "MUG", "on_hand": 5}])
    await reserve(inventory, "r", "wh", MUG=4)
    body = {
        "as_of": later(-10).isoformat(),
        "counts": [{"sku": "MUG", "on_hand": 9}, {"sku": "CUP", "on_hand": 1}],
    }
    stale = (await client.put("/v1/locations/wh/stock", json=body)).json()
    assert stale["counted"] == 1
    assert [row["sku"] for row in stale["stale"]] == ["MUG"]

    complete = {"as_of": later(1).isoformat(), "counts": [{"sku": "MUG", "on_hand": 2}]}
    answer = await client.put("/v1/locations/wh/stock", json={**complete, "complete": True})
    assert answer.json()["counted"] == 2  # MUG, and CUP counted as 0
    assert answer.json()["oversold"] == [
        {"sku": "MUG", "location": "wh", "reserved": 4, "on_hand": 2}
    ]
    shown = (await client.get("/v1/inventory/CUP")).json()
    assert shown["locations"]["wh"]["on_hand"] == 0
    assert shown["locations"]["store"] == {
        "on_hand": 0,
        "reserved": 0,
        "safety": 1,
        "atp": -1,
        "as_of": None,
    }


def row(sku: str, on_hand: int, **extra: object) -> dict[str, object]:
    return {"sku": sku, "on_hand": on_hand, **extra}


NAIVE, TOMORROW, NOW = "2026-11-21T09:00:00", "2026-11-22T09:00:00Z", "2026-11-21T09:00:00Z"


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ([row("MUG", 1), row("CUP", -1)], "invalid_body", "$[1].on_hand"),
        ([row("MUG", 1), row("MUG", 2)], "duplicate_sku", "$[1].sku"),
        ({"as_of": NOW, "counts": [row("A", 1), row("A", 1)]}, "duplicate_sku", "$.counts[1].sku"),
        ({"as_of": NAIVE, "counts": []}, "invalid_body", "$.as_of"),
        ({"as_of": TOMORROW, "counts": []}, "as_of_in_future", "$.as_of"),
        ([row("", 1)], "invalid_body", "$[0].sku"),
        ([row("MUG", 1, bin="A1")], "invalid_body", "$[0]"),
    ],
)
async def test_bad_reports_are_refused_with_the_json_path_and_store_nothing(
    client: httpx.AsyncClient, body: object, code: str, path: str
) -> None:
    """Each invalid body is answered 422 with its error code and the offending value's path."""
    response = await client.put("/v1/locations/wh/stock", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error.get("path")) == (code, path)
    assert (await client.get("/v1/inventory/MUG")).status_code == 404


async def test_unknown_location_malformed_json_and_missing_token(
    client: httpx.AsyncClient,
) -> None:
    """404 for a location not in the config, 400 for broken JSON, 401 without the token."""
    unknown = await client.put("/v1/locations/mars/stock", json=[])
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_location")
    broken = await client.put("/v1/locations/wh/stock", content=b"[{")
    assert (broken.status_code, broken.json()["error"]["code"]) == (400, "malformed_json")
    anonymous = await client.get("/v1/inventory/MUG", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    nothing = await client.get("/v1/inventory/NEVER-SEEN")
    assert (nothing.status_code, nothing.json()["error"]["code"]) == (404, "unknown_sku")


async def test_routes_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    """Both routes are documented, with the report body's schema."""
    document = (await client.get("/openapi.json")).json()
    assert "put" in document["paths"]["/v1/locations/{location}/stock"]
    assert "get" in document["paths"]["/v1/inventory/{sku}"]
    assert {"InventoryView", "StockReportAnswer", "ReportBody"} <= document["components"][
        "schemas"
    ].keys()
