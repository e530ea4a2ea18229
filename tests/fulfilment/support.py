"""The fulfilment tests' world: config, actors, and one-line ways to drive and inspect them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import msgspec
import trio
from prometheus_client import CollectorRegistry

from actors.fulfilment import FulfilmentDesk
from actors.inventory import GetPositions, Inventory
from actors.order_desk import OrderCommand, OrderDesk, Received, ReceiveOrder
from actors.router import Describe, Router, RouterStatus
from somsd.config import ChannelConfig, Config, LocationConfig, StoreAddress
from somsd.domain.atp import StockCount, StockPosition, StockReport
from somsd.domain.order import Address, ShippingMethod
from somsd.domain.state import OrderState
from somsd.domain.testing import sample_line, sample_order
from somsd.projections import all_projections
from somsd.projections.fulfilments import (
    FulfilmentBook,
    FulfilmentState,
    OrderDetail,
    fetch_fulfilment,
    fulfilments_of_order,
    read_order_detail,
)
from somsd.projections.stock import StockLevels
from somsd.store import EventStore, Projection, utc_now

# Every wait in these tests is on an event (a reply); this only bounds a bug that would make
# one hang. The slowest wait, 200 orders routed one after the other, takes ~3 s here.
WAIT = 20.0

ESSEN = Address(
    name="Erika Muster", street="Kettwiger Str. 1", zip="45127", city="Essen", country="DE"
)
MUNICH = Address(
    name="Max Muster", street="Marienplatz 1", zip="80331", city="München", country="DE"
)
DORTMUND = Address(
    name="Dora Muster", street="Westenhellweg 1", zip="44135", city="Dortmund", country="DE"
)


def projections() -> list[Projection]:
    """The daemon's projections plus ours and the stock levels (until the daemon lists them)."""
    listed = all_projections()
    for extra in (FulfilmentBook(), StockLevels()):
        if not any(p.name == extra.name for p in listed):
            listed.append(extra)
    return listed


def location(name: str, lat: float, lon: float, **kwargs: Any) -> LocationConfig:
    kwargs.setdefault("ships_to", ("DE",))
    return LocationConfig(name=name, lat=lat, lon=lon, **kwargs)


def default_config(**overrides: Any) -> Config:
    """Two warehouses and a store (ship + pickup) in Germany, all serving channel "shop"."""
    locations = overrides.pop(
        "location",
        (
            location("wh-dortmund", 51.51, 7.47),
            location("wh-munich", 48.14, 11.58),
            location(
                "store-essen",
                51.455,
                7.011,
                kind="store",
                capabilities=("ship", "pickup"),
                address=StoreAddress(
                    name="Store Essen", street="Limbecker Platz 1", zip="45127", city="Essen"
                ),
            ),
        ),
    )
    channel = ChannelConfig(
        name="shop", kind="webhook", locations=tuple(loc.name for loc in locations)
    )
    return Config(location=locations, channel=(channel,), **overrides)


@dataclass
class World:
    store: EventStore
    inventory: Inventory
    desk: OrderDesk
    fulfilments: FulfilmentDesk
    router: Router
    config: Config
    clock: Callable[[], datetime]
    registry: CollectorRegistry

    async def start_router(self, nursery: trio.Nursery) -> None:
        """Wire the router in (as the composition root does) and start it."""
        self.desk.on_committed = self.router.order_committed
        self.inventory.on_stock_added = self.router.stock_added
        await nursery.start(self.router.run)

    # -- driving ------------------------------------------------------------------------

    async def order(
        self,
        external_id: str,
        lines: Sequence[tuple[str, int]] = (("MUG-1", 1),),
        *,
        to: Address = MUNICH,
        pickup: str | None = None,
    ) -> str:
        method: ShippingMethod = "pickup" if pickup else "standard"
        order = sample_order(
            external_id=external_id,
            lines=[sample_line(sku=sku, quantity=quantity) for sku, quantity in lines],
            shipping_address=to,
            shipping_method=method,
            pickup_location=pickup,
            shipping_price="0.00" if pickup else "4.90",
        )
        with trio.fail_after(WAIT):
            received: Received = await self.desk.ask(
                lambda reply: ReceiveOrder("shop", order, reply)
            )
        return received.order_id

    async def command(self, order_id: str, action: msgspec.Struct) -> OrderState:
        with trio.fail_after(WAIT):
            state: OrderState = await self.desk.ask(
                lambda reply: OrderCommand(order_id, action, "user:test", reply)  # type: ignore[arg-type]
            )
        return state

    async def stock(self, location: str, **counts: int) -> None:
        """An absolute count at `location` (keyword: SKU with '-' written as '_')."""
        rows = tuple(StockCount(sku.replace("_", "-"), n) for sku, n in counts.items())
        with trio.fail_after(WAIT):
            await self.fulfilments.stock_report(StockReport(location, utc_now(), rows))

    async def routed(self) -> RouterStatus:
        """Wait until the router handled everything queued so far."""
        with trio.fail_after(WAIT):
            status: RouterStatus = await self.router.ask(Describe)
        return status

    # -- looking ------------------------------------------------------------------------

    async def detail(self, order_id: str) -> OrderDetail:
        detail = await self.store.read(partial(read_order_detail, order_id=order_id))
        assert detail is not None
        return detail

    async def fulfilments_of(self, order_id: str) -> list[FulfilmentState]:
        return await self.store.read(partial(fulfilments_of_order, order_id=order_id))

    async def fulfilment(self, fulfilment_id: str) -> FulfilmentState:
        state = await self.store.read(partial(fetch_fulfilment, fulfilment_id=fulfilment_id))
        assert state is not None
        return state

    async def position(self, sku: str, location: str) -> StockPosition:
        with trio.fail_after(WAIT):
            positions: tuple[StockPosition, ...] = await self.inventory.ask(
                lambda reply: GetPositions(sku, reply)
            )
        return next(p for p in positions if p.location == location)
