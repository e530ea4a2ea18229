"""A somsd core (store, desk, inventory, fulfilments-free outbox) driving a Smartstore channel
against the real simulator over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import msgspec
import trio
from prometheus_client import CollectorRegistry

from actors.channel import ChannelActor, ChannelMetrics, ShopDriver, order_effects_for
from actors.inventory import Inventory, channel_stock_policies
from actors.order_desk import OrderDesk
from actors.outbox import OutboxDispatcher
from actors.smartstore_driver import smartstore_driver
from adapters.smartstore import SmartstoreSimulator, write_credentials
from somsd.config import ChannelConfig, Duration, SecretFile
from somsd.domain.atp import DebouncePolicy, SafetyStock
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import OrderState
from somsd.projections import all_projections
from somsd.projections.orders import decode_state, fetch_state, list_orders
from somsd.secrets import Secret
from somsd.store import EventStore
from somsd.supervisor import Backoff
from tests.adapters.conftest import Serve

# Retries within tens of milliseconds: the tests inject failures on purpose.
FAST_BACKOFF = Backoff(initial=0.02, factor=2.0, maximum=0.2, jitter=0.2)


def channel_section(url: str, secret: Path, **changes: object) -> ChannelConfig:
    section = ChannelConfig(
        name="shop",
        kind="smartstore",
        url=url,
        public_key="sim-public-key",
        secret_key_file=SecretFile(secret, Secret(secret.read_text().strip())),
        poll_interval=Duration("1h"),  # tests poll explicitly
        poll_overlap=Duration("1m"),
        locations=("wh",),
    )
    return msgspec.structs.replace(section, **changes)


class ShopWorld:
    def __init__(self, tmp_path: Path, sim: SmartstoreSimulator) -> None:
        self.tmp_path = tmp_path
        self.sim = sim
        self.registry = CollectorRegistry()
        self.store = EventStore(tmp_path / "somsd.db", all_projections(), registry=self.registry)
        self.desk = OrderDesk(self.store, OrderPolicy(), registry=self.registry)
        self.dispatcher = OutboxDispatcher(
            self.store, registry=self.registry, poll_interval=0.05, backoff=FAST_BACKOFF
        )
        self.metrics = ChannelMetrics(self.registry)
        self.section: ChannelConfig | None = None
        self.inventory: Inventory | None = None
        self.actor: ChannelActor | None = None

    @asynccontextmanager
    async def running(
        self, nursery: trio.Nursery, serve: Serve, **section_changes: object
    ) -> AsyncIterator[ChannelActor]:
        url, _ = await serve(self.sim)
        _, secret = write_credentials(self.tmp_path / "creds", self.sim)
        self.section = channel_section(url, secret, **section_changes)
        channels = {"shop": self.section}
        self.desk.effects = order_effects_for(lambda: channels)
        self.inventory = Inventory(
            self.store,
            safety=SafetyStock(),
            channels=channel_stock_policies(channels.values()),
            debounce=DebouncePolicy(0.01, 0.05),
            registry=self.registry,
        )
        await nursery.start(self.store.run)
        await nursery.start(self.desk.run)
        await nursery.start(self.inventory.run)
        await nursery.start(self.dispatcher.run)
        self.actor = ChannelActor(
            self.section,
            store=self.store,
            dispatcher=self.dispatcher,
            desk=self.desk,
            inventory=self.inventory,
            driver=smartstore_driver,
            metrics=self.metrics,
        )
        await nursery.start(self.actor.run)
        yield self.actor

    @property
    def driver(self) -> ShopDriver:
        assert self.actor is not None
        assert self.actor.driver is not None
        return self.actor.driver

    async def poll(self) -> int:
        assert self.actor is not None
        return await self.actor.poll_once(self.driver)

    async def orders(self) -> list[OrderState]:
        summaries = await self.store.read(partial(list_orders, limit=100_000))
        states = []
        for summary in summaries:
            blob = await self.store.read(partial(fetch_state, order_id=summary.order_id))
            assert blob is not None
            states.append(decode_state(blob))
        return states

    async def drained(self, budget: float = 20.0) -> None:
        """Wait until the outbox has nothing pending (delivered or dead)."""
        with trio.fail_after(budget):
            while True:
                if not (await self.store.outbox_counts()).pending:
                    return
                await trio.sleep(0.02)
