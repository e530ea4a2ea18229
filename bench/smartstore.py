"""Benchmark: a Smartstore channel against the simulator running in its own process.

    python bench/smartstore.py [--orders 3000] [--stock 3000] [--catalogues 3000,100000]
                               [--max-top 120] [--dir DIR]

- **intake**: the simulator holds `--orders` placed orders; one poll of a fresh channel actor
  (real store with synchronous=FULL, order desk, the Smartstore driver and its mapper) takes
  them all in: orders/s from the first request to the last commit. "read only" is the same
  paging through the client with nothing committed: the simulator's (and HTTP's) share.
- **stock**: a stock report changes `--stock` SKUs; the inventory queues one push per SKU
  through the outbox and the driver PATCHes the shop: updates/s from the report to an empty
  outbox (per-target limit 4, as the daemon runs).
- **reconciliation**: for each catalogue size the simulator is restarted with that many
  products; a dry run (page everything, compare, store the report) and a full run (the same
  plus every fix into the outbox in one transaction; delivering them is the stock figure's
  business). "read only" pages the catalogue through the driver without comparing.

The simulator is a separate process (`python -m adapters.smartstore`), so its CPU does not
compete with somsd's trio thread for the GIL; both share the machine's two cores.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
import trio
from prometheus_client import CollectorRegistry

from actors.channel import ChannelActor, ChannelMetrics, order_effects_for
from actors.inventory import Inventory, ReportStock, channel_stock_policies, stock_push_target
from actors.order_desk import OrderDesk
from actors.outbox import OutboxDispatcher
from actors.smartstore_driver import smartstore_driver
from adapters.smartstore import SmartstoreClient, smartstore_http_client
from somsd.config import ChannelConfig, Duration, SecretFile
from somsd.domain.atp import DebouncePolicy, SafetyStock, StockCount, StockReport
from somsd.domain.policy import OrderPolicy
from somsd.projections import all_projections
from somsd.secrets import Secret
from somsd.store import EventStore

PUBLIC, SECRET = "bench-public", "bench-secret"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@asynccontextmanager
async def simulator(
    workdir: Path, *, products: int, orders: int, max_top: int
) -> AsyncIterator[str]:
    url_file = workdir / f"sim-{products}-{orders}.url"
    url_file.unlink(missing_ok=True)
    args = [
        sys.executable,
        "-m",
        "adapters.smartstore",
        "--products",
        str(products),
        "--max-top",
        str(max_top),
        "--public-key",
        PUBLIC,
        "--secret-key",
        SECRET,
        "--url-file",
        str(url_file),
    ]
    if orders:
        args += ["--rate", "1000000", "--count", str(orders)]
    process = await trio.lowlevel.open_process(args, stdout=subprocess.DEVNULL)
    try:
        with trio.fail_after(120):
            while True:
                if url_file.exists() and url_file.read_text().strip():
                    break
                await trio.sleep(0.05)
        url = url_file.read_text().strip()
        if orders:
            async with smartstore_http_client(url, PUBLIC, SECRET) as http:
                client = SmartstoreClient(http, system="bench")
                with trio.fail_after(120):
                    while True:
                        if await count_orders(client) >= orders:
                            break
                        await trio.sleep(0.1)
        yield url
    finally:
        process.kill()
        await process.wait()


async def count_orders(client: SmartstoreClient) -> int:
    seen, after = 0, None
    while True:
        page = await client.orders_since(EPOCH, after=after)
        seen += len(page.orders)
        if not page.orders or not page.has_more:
            return seen
        last = page.orders[-1]
        after = (last.updated_on_utc, last.id)


class Core:
    def __init__(
        self,
        workdir: Path,
        url: str,
        name: str,
        *,
        sync_stock: bool = True,
        concurrency: int = 4,
    ) -> None:
        secret = workdir / "secret"
        secret.write_text(SECRET)
        self.section = ChannelConfig(
            name="shop",
            kind="smartstore",
            url=url,
            public_key=PUBLIC,
            secret_key_file=SecretFile(secret, Secret(SECRET)),
            poll_interval=Duration("1d"),
            locations=("wh",),
            sync_stock=sync_stock,
            stock_sync_concurrency=concurrency,
        )
        self.registry = registry = CollectorRegistry()
        self.store = EventStore(workdir / f"{name}.db", all_projections(), registry=registry)
        self.desk = OrderDesk(self.store, OrderPolicy(), registry=registry)
        self.desk.effects = order_effects_for(lambda: {"shop": self.section})
        self.inventory = Inventory(
            self.store,
            safety=SafetyStock(),
            channels=channel_stock_policies([self.section]),
            debounce=DebouncePolicy(0.01, 0.05),
            registry=registry,
        )
        self.dispatcher = OutboxDispatcher(self.store, registry=registry, poll_interval=0.05)
        self.actor = ChannelActor(
            self.section,
            store=self.store,
            dispatcher=self.dispatcher,
            desk=self.desk,
            inventory=self.inventory,
            driver=smartstore_driver,
            metrics=ChannelMetrics(registry),
        )

    async def start(self, nursery: trio.Nursery) -> None:
        for run in (self.store.run, self.desk.run, self.inventory.run, self.dispatcher.run):
            await nursery.start(run)
        await nursery.start(self.actor.run)
        # The actor's first scheduled poll runs at start; wait until it is done.
        await self.actor.poll_once(self.driver)

    @property
    def driver(self):  # type: ignore[no-untyped-def]
        assert self.actor.driver is not None
        return self.actor.driver

    def delivered(self) -> float:
        value = self.registry.get_sample_value(
            "somsd_outbox_delivery_attempts_total",
            {"target": stock_push_target("shop"), "outcome": "delivered"},
        )
        return value or 0.0

    async def delivered_at_least(self, count: float) -> None:
        while True:
            if self.delivered() >= count:
                return
            await trio.sleep(0.01)

    async def drained(self) -> None:
        while True:
            if not (await self.store.outbox_counts()).pending:
                return
            await trio.sleep(0.02)


async def bench_intake(workdir: Path, orders: int, max_top: int) -> None:
    async with simulator(workdir, products=500, orders=orders, max_top=max_top) as url:
        async with smartstore_http_client(url, PUBLIC, SECRET) as http:
            client = SmartstoreClient(http, system="bench")
            await count_orders(client)  # warm up
            started = time.perf_counter()
            await count_orders(client)
            read = time.perf_counter() - started
        async with trio.open_nursery() as nursery:
            core = Core(workdir, url, "intake")
            for run in (core.store.run, core.desk.run, core.inventory.run, core.dispatcher.run):
                await nursery.start(run)
            started = time.perf_counter()
            await nursery.start(core.actor.run)  # its first poll takes every order in
            await core.actor.poll_once(core.driver)  # waits for that poll, then one more
            taken = time.perf_counter() - started - read  # minus the extra poll's re-read
            nursery.cancel_scope.cancel()
    print(
        f"intake: {orders} orders (MaxTop {max_top}) in {taken:.2f} s = {orders / taken:,.0f} "
        f"orders/s; read only {read:.2f} s = {orders / read:,.0f} orders/s"
    )


async def bench_stock(workdir: Path, skus: int, max_top: int, concurrency: int) -> None:
    async with simulator(workdir, products=skus, orders=0, max_top=max_top) as url:
        async with trio.open_nursery() as nursery:
            core = Core(workdir, url, f"stock-{concurrency}", concurrency=concurrency)
            await core.start(nursery)
            names = [f"SS-{i:06d}" for i in range(1, skus + 1)]
            first = StockReport("wh", datetime.now(UTC), tuple(StockCount(n, 3) for n in names))
            await core.inventory.ask(lambda r: ReportStock(first, r))
            await core.delivered_at_least(skus)  # the SKU map is loaded and warm now
            before = core.delivered()
            second = StockReport(
                "wh",
                datetime.now(UTC) + timedelta(seconds=1),
                tuple(StockCount(n, 7) for n in names),
            )
            started = time.perf_counter()
            await core.inventory.ask(lambda r: ReportStock(second, r))
            await core.delivered_at_least(before + skus)
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
        # The shop alone: the same PATCHes straight from the client, four at a time.
        async with smartstore_http_client(url, PUBLIC, SECRET) as http:
            client = SmartstoreClient(http, system="bench")
            ids = list(range(1, skus + 1))

            async def patch(chunk: list[int]) -> None:
                for product_id in chunk:
                    await client.patch_product(
                        product_id, {"StockQuantity": 9}, return_representation=False
                    )

            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for worker in range(concurrency):
                    nursery.start_soon(patch, ids[worker::concurrency])
            shop_only = time.perf_counter() - started
    print(
        f"stock ({concurrency} at once): {skus} SKU pushes in {elapsed:.2f} s = "
        f"{skus / elapsed:,.0f} updates/s; "
        f"shop only {shop_only:.2f} s = {skus / shop_only:,.0f} PATCH/s"
    )


async def bench_reconcile(workdir: Path, products: int, max_top: int) -> None:
    async with (
        simulator(workdir, products=products, orders=0, max_top=max_top) as url,
        trio.open_nursery() as nursery,
    ):
        # No stock pushes: the report below would otherwise queue one per SKU meanwhile.
        core = Core(workdir, url, f"reconcile-{products}", sync_stock=False)
        await core.start(nursery)
        report = StockReport(
            "wh",
            datetime.now(UTC),
            tuple(StockCount(f"SS-{i:06d}", i % 9) for i in range(1, products + 1)),
        )
        await core.inventory.ask(lambda r: ReportStock(report, r))
        started = time.perf_counter()
        items = 0
        async for page in core.driver.catalogue():
            items += len(page)
        read = time.perf_counter() - started
        started = time.perf_counter()
        dry = await core.actor.reconcile(core.driver, dry_run=True)
        dry_time = time.perf_counter() - started
        started = time.perf_counter()
        full = await core.actor.reconcile(core.driver, dry_run=False)
        full_time = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    print(
        f"reconcile: {products} products ({items} items): dry run {dry_time:.2f} s, full "
        f"{full_time:.2f} s ({sum(full.counts.values()) - full.counts['checked']} findings); "
        f"read only {read:.2f} s; counts {dry.counts}"
    )


async def main(args: argparse.Namespace) -> None:
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="somsd-bench-ss-"))
    await bench_intake(workdir, args.orders, args.max_top)
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        await bench_stock(workdir, args.stock, args.max_top, concurrency)
    for size in (int(s) for s in args.catalogues.split(",")):
        await bench_reconcile(workdir, size, args.max_top)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--stock", type=int, default=3000)
    parser.add_argument("--catalogues", default="3000,100000")
    parser.add_argument("--concurrency", default="4,16", help="stock_sync_concurrency levels")
    parser.add_argument("--max-top", type=int, default=120)
    parser.add_argument("--dir")
    parsed = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    trio.run(main, parsed)
