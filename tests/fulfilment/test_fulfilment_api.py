"""The fulfilment routes over real HTTP: `build_api_app` served by `HttpListener` on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from actors.fulfilment_api import FulfilmentRoutes
from somsd.api import ApiState, build_api_app
from somsd.config import ListenAddress
from somsd.http import HttpListener
from somsd.secrets import Secret
from tests.fulfilment.conftest import StartWorld
from tests.fulfilment.support import ESSEN, World

TOKEN = "fulfilment-test-token"


@pytest.fixture
async def world(start_world: StartWorld) -> World:
    return await start_world()


@pytest.fixture
async def api(world: World, nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    routes = FulfilmentRoutes(world.fulfilments, world.store).routes()
    state = ApiState(is_ready=lambda: True, admin_tokens=lambda: [Secret(TOKEN)])
    listener = HttpListener(
        "api",
        build_api_app(routes, state, version="test"),
        ListenAddress("127.0.0.1:0"),
        graceful_timeout=1,
    )
    await nursery.start(listener.run)
    # Loopback and an idle daemon: 5 s is far above any answer here, and bounds a hang.
    async with httpx.AsyncClient(
        base_url=listener.urls[0],
        headers={"Authorization": f"Bearer {TOKEN}", "X-Somsd-User": "clerk"},
        timeout=5.0,
    ) as client:
        yield client
    await listener.stop()


async def test_pick_list_is_sorted_by_sku_and_hides_pickup_codes(
    world: World, api: httpx.AsyncClient
) -> None:
    """Essen's list holds its three orders by SKU (no bin data yet), lines sorted too."""
    await world.stock("store-essen", ZED_1=1, ABC_1=1, MUG_1=1, TEE_1=1)
    await world.order("z", [("ZED-1", 1)], to=ESSEN)
    await world.order("m", [("TEE-1", 1), ("MUG-1", 1)], to=ESSEN)
    await world.order("a", [("ABC-1", 1)], to=ESSEN)
    await world.routed()

    page = (await api.get("/v1/fulfillments", params={"location": "store-essen"})).json()
    assert [item["lines"][0]["sku"] for item in page["fulfillments"]] == ["ABC-1", "MUG-1", "ZED-1"]
    assert [line["sku"] for line in page["fulfillments"][1]["lines"]] == ["MUG-1", "TEE-1"]
    assert page["next_cursor"] is None
    assert all(item["pickup_code"] is None for item in page["fulfillments"])
    assert all(item["state"] == "requested" for item in page["fulfillments"])
    shipped = await api.get(
        "/v1/fulfillments", params={"location": "store-essen", "state": "shipped"}
    )
    assert shipped.json()["fulfillments"] == []
    bad = await api.get("/v1/fulfillments", params={"state": "lost"})
    assert bad.status_code == 422
    paged = (await api.get("/v1/fulfillments", params={"limit": "2"})).json()
    assert (len(paged["fulfillments"]), paged["next_cursor"]) == (2, 2)


async def test_click_and_collect_over_http(world: World, api: httpx.AsyncClient) -> None:
    """Every step route with its body: illegal steps and wrong codes are 409 with the reason,
    unknown fulfilments 404, bad bodies 422, and a refused line is routed again."""
    await world.stock("store-essen", MUG_1=3, TEE_1=1)
    await world.stock("wh-dortmund", TEE_1=2)
    order_id = await world.order("cc", [("MUG-1", 2), ("TEE-1", 1)], to=ESSEN, pickup="store-essen")
    await world.routed()
    [pickup] = await world.fulfilments_of(order_id)
    url = f"/v1/fulfillments/{pickup.fulfilment_id}"

    assert (await api.post(f"{url}/accept")).json()["state"] == "accepted"
    again = await api.post(f"{url}/accept", json={})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "illegal_step"
    assert "allowed: pick, pack, ready, reject" in again.json()["error"]["message"]
    ship = await api.post(f"{url}/ship", json={"carrier": "dhl", "tracking_number": "1"})
    assert ship.status_code == 409  # a pickup is not shipped
    missing = await api.post("/v1/fulfillments/nope/pick")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "fulfillment_not_found")
    bad = await api.post(f"{url}/reject", json={"lines": [], "reason": "damaged"})
    assert bad.status_code == 422

    rejected = await api.post(
        f"{url}/reject", json={"lines": [{"sku": "TEE-1", "quantity": 1}], "reason": "out_of_stock"}
    )
    assert rejected.status_code == 200
    assert rejected.json()["rejected"] == [
        {"sku": "TEE-1", "quantity": 1, "reason": "stock_missing"}
    ]
    await world.routed()
    kinds = sorted(f.kind for f in await world.fulfilments_of(order_id))
    assert kinds == ["pickup", "pickup", "transfer"]  # the tee comes from Dortmund

    assert (await api.post(f"{url}/pick")).status_code == 200
    ready = await api.post(f"{url}/ready")
    assert (ready.json()["state"], ready.json()["pickup_code"]) == ("ready_for_pickup", None)
    code = (await world.fulfilment(pickup.fulfilment_id)).pickup_code
    assert code is not None
    wrong = await api.post(f"{url}/picked-up", json={"pickup_code": "12345x"})
    assert wrong.status_code == 422
    other = f"{(int(code) + 1) % 1_000_000:06d}"
    wrong = await api.post(f"{url}/picked-up", json={"pickup_code": other})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (409, "wrong_pickup_code")
    done = await api.post(f"{url}/picked-up", json={"pickup_code": code})
    assert (done.status_code, done.json()["state"]) == (200, "picked_up")
    assert (await world.detail(order_id)).lines[0].shipped == 2


async def test_ship_route_takes_carrier_and_tracking_number(
    world: World, api: httpx.AsyncClient
) -> None:
    """A store ships a delivery order: the body's tracking number reaches the order."""
    await world.stock("store-essen", MUG_1=1)
    order_id = await world.order("ship", to=ESSEN)
    await world.routed()
    [fulfilment] = await world.fulfilments_of(order_id)
    url = f"/v1/fulfillments/{fulfilment.fulfilment_id}"
    assert (await api.post(f"{url}/ship", json={"carrier": "dhl"})).status_code == 422
    shipped = await api.post(f"{url}/ship", json={"carrier": "dhl", "tracking_number": "0034"})
    assert shipped.json()["state"] == "shipped"
    assert (await api.get(url)).json()["tracking_number"] == "0034"
    assert (await world.detail(order_id)).status == "complete"


async def test_routes_need_the_token_and_are_in_the_openapi_document(
    api: httpx.AsyncClient,
) -> None:
    unauthorized = await api.get("/v1/fulfillments", headers={"Authorization": "Bearer wrong"})
    assert unauthorized.status_code == 401
    document = (await api.get("/openapi.json")).json()
    steps = {"accept", "pick", "pack", "ship", "reject", "ready", "picked-up"}
    assert {f"/v1/fulfillments/{{fulfilment_id}}/{step}" for step in steps} <= set(
        document["paths"]
    )
    ship = document["paths"]["/v1/fulfillments/{fulfilment_id}/ship"]["post"]
    assert ship["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ShipBody"
    }
    assert "409" in ship["responses"]
