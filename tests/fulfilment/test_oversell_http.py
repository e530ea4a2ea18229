"""No overselling, over real HTTP against a real `somsd run`: the last unit is sold once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from somsd.domain.testing import sample_line
from tests.harness import running_daemon
from tests.orders.shop import accept, order_body, webhook_config

pytestmark = pytest.mark.slow

SKU = "MUG-1"
# 25 units over three locations, as the scenario has it.
STOCK = {"wh-north": 10, "wh-south": 8, "store-mid": 7}
LOCATIONS = """
[[location]]
name = "wh-north"
lat = 53.55
lon = 9.99
ships_to = ["DE"]

[[location]]
name = "wh-south"
lat = 48.14
lon = 11.58
ships_to = ["DE"]

[[location]]
name = "store-mid"
kind = "store"
lat = 50.11
lon = 8.68
ships_to = ["DE"]
capabilities = ["ship", "pickup"]
"""


async def order_detail(admin: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await admin.get(f"/v1/orders/{order_id}")
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def allocated_units(detail: dict[str, Any]) -> int:
    return sum(
        line["quantity"]
        for fulfilment in detail["fulfilment"]["fulfilments"]
        for line in fulfilment["lines"]
    )


async def wait_for(what: str, check: Any) -> None:
    """Routing happens after the 202 (the router follows committed orders) in another process;
    there is no event to wait on from here, so poll, bounded in count and time."""
    with trio.fail_after(30):
        for _ in range(600):
            if await check():
                return
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_200_concurrent_orders_for_25_units_allocate_exactly_25(tmp_path: Path) -> None:
    """25 orders get a unit, 175 wait on backorder; a restock serves the oldest backorders."""
    config = webhook_config(tmp_path, LOCATIONS)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        for location, units in STOCK.items():
            stock = await admin.put(
                f"/v1/locations/{location}/stock", json=[{"sku": SKU, "on_hand": units}]
            )
            assert stock.status_code == 200, stock.text

        order_ids: list[str] = []
        async with httpx.AsyncClient(base_url=daemon.api, timeout=30) as shop:

            async def buy(n: int) -> None:
                body = order_body(f"oversell-{n}", lines=[sample_line(sku=SKU, quantity=1)])
                order_ids.append(await accept(shop, body))

            async with trio.open_nursery() as nursery:
                for n in range(200):
                    nursery.start_soon(buy, n)

        async def all_routed() -> bool:
            inventory = (await admin.get(f"/v1/inventory/{SKU}")).json()
            reserved = sum(p["reserved"] for p in inventory["locations"].values())
            return bool(reserved == 25)

        await wait_for("25 units reserved", all_routed)
        details: list[dict[str, Any]] = []
        for order_id in order_ids:

            async def routed(order_id: str = order_id) -> bool:
                details.append(await order_detail(admin, order_id))
                if details[-1]["fulfilment"]["routing"]:
                    return True
                details.pop()
                return False

            await wait_for(f"order {order_id} routed", routed)
        served = [d for d in details if allocated_units(d) == 1]
        waiting = [d for d in details if d["fulfilment"]["backorder"]]
        assert len(served) == 25
        assert len(waiting) == 175
        assert all(allocated_units(d) == 0 for d in waiting)
        inventory = (await admin.get(f"/v1/inventory/{SKU}")).json()
        assert all(p["atp"] == 0 for p in inventory["locations"].values())

        # A restock of 10 units goes to the 10 orders that have waited longest.
        oldest = sorted(waiting, key=lambda d: d["fulfilment"]["backordered_since"])[:10]
        restock = await admin.put(
            "/v1/locations/wh-north/stock", json=[{"sku": SKU, "on_hand": 20}]
        )
        assert restock.status_code == 200, restock.text

        async def restock_routed() -> bool:
            inventory = (await admin.get(f"/v1/inventory/{SKU}")).json()
            return bool(sum(p["reserved"] for p in inventory["locations"].values()) == 35)

        await wait_for("10 more units reserved", restock_routed)
        now_served = {
            d["order_id"]
            for d in [await order_detail(admin, o["order_id"]) for o in waiting]
            if allocated_units(d) == 1
        }
        assert now_served == {d["order_id"] for d in oldest}
