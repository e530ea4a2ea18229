"""SelectLine figures: the simulator's own ceiling for sales orders, and a stock poll of
100,000 articles over 5 warehouses through the real client and the pure mapping to stock
reports (aim: under 30 s). Prints figures; not a test.

    .venv/bin/python bench/selectline.py [--articles 100000] [--orders 200]

`--pipeline N`: documents per second through a whole `somsd run` instead: N signed webhook
orders into a real daemon process, each posted by its real pipeline (outbox, the ERP actor,
the client, look-before-create) to the simulator as a sales order F with its positions, then
one shipment each, posted as delivery note L and invoice R; timed from the first order until
the simulator holds all 3 N documents complete. The simulator's own ceiling is measured in the
same run first (the same process serves it to the daemon).

    .venv/bin/python bench/selectline.py --pipeline 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import trio

from adapters.selectline.client import SelectLineClient
from adapters.selectline.planning import stock_reports
from adapters.selectline.simulator import SelectLineSimulator
from adapters.selectline.wire import ArticlePositionItem, DocumentCreateModel
from somsd.config import ListenAddress
from somsd.http import HttpListener

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' daemon harness
from tests.adapters.conftest import wait_until
from tests.erp.helpers import erp_section
from tests.harness import running_daemon
from tests.orders.shop import accept, order_body, webhook_config

# Orders (and then shipments) sent at once: a few shops' worth of webhook senders.
SENDERS = 16

WAREHOUSES = ("200", "300", "400", "500", "600")


async def main(articles: int, orders: int) -> None:
    sim = SelectLineSimulator(seed=1)
    started = time.perf_counter()
    sim.seed(articles, warehouses=WAREHOUSES)
    print(
        f"seeded {articles} articles x {len(WAREHOUSES)} warehouses in "
        f"{time.perf_counter() - started:.1f} s"
    )
    async with trio.open_nursery() as nursery:
        listener = HttpListener("sim", sim, ListenAddress("127.0.0.1:0"), graceful_timeout=0.5)
        await nursery.start(listener.run)
        async with httpx.AsyncClient(base_url=listener.urls[0], timeout=120) as http:
            client = SelectLineClient(
                http, system="bench", user="somsd", password="sim-password", page_size=5000
            )
            started = time.perf_counter()
            for index in range(orders):
                created = await client.create_document(DocumentCreateModel(KindFlag="F"))
                await client.add_article(
                    created.DocumentKey,
                    ArticlePositionItem(
                        ArticleNumber=str(100001 + index % articles),
                        CalculatedQuantityValue=Decimal(1),
                        UnitPrice=Decimal("9.99"),
                    ),
                )
            elapsed = time.perf_counter() - started
            print(
                f"simulator ceiling: {orders / elapsed:.0f} sales orders/s "
                f"(create + one position, one client, sequential)"
            )
            started = time.perf_counter()
            warehouses = await client.warehouses()
            catalogue = await client.articles()
            stocks = await client.stocks()
            read = time.perf_counter() - started
            started = time.perf_counter()
            reading = stock_reports(
                stocks,
                catalogue,
                (w.Number for w in warehouses),
                {"wh": WAREHOUSES},
                sku="number",
                as_of=datetime.now(UTC),
            )
            mapped = time.perf_counter() - started
            (report,) = reading.reports
            print(
                f"stock poll: {len(stocks)} rows, {len(catalogue)} articles read in {read:.1f} s, "
                f"mapped to a report of {len(report.counts)} SKUs in {mapped:.2f} s "
                f"(total {read + mapped:.1f} s; aim < 30 s)"
            )
        await listener.stop()
        nursery.cancel_scope.cancel()


async def ceiling(client: SelectLineClient, orders: int) -> float:
    """Sales orders/s the simulator takes from one sequential client (create + one position)."""
    started = time.perf_counter()
    for _ in range(orders):
        created = await client.create_document(DocumentCreateModel(KindFlag="F"))
        await client.add_article(
            created.DocumentKey,
            ArticlePositionItem(
                ArticleNumber="MUG-1", CalculatedQuantityValue=Decimal(1), UnitPrice=Decimal("9.99")
            ),
        )
    return orders / (time.perf_counter() - started)


async def pipeline(orders: int) -> None:
    sim = SelectLineSimulator(seed=1)
    sim.add_warehouse("200")
    sim.add_article("MUG-1", stock={"200": 10 * orders})
    async with trio.open_nursery() as nursery:
        listener = HttpListener("sim", sim, ListenAddress("127.0.0.1:0"), graceful_timeout=0.5)
        await nursery.start(listener.run)
        url = listener.urls[0]
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            client = SelectLineClient(http, system="bench", user="somsd", password=sim.password)
            rate = await ceiling(client, 200)
            await client.logout()
        print(f"simulator ceiling: {rate:.0f} sales orders/s (create + one position, sequential)")
        sim.documents.clear()
        with tempfile.TemporaryDirectory() as directory:
            tmp = Path(directory)
            (tmp / "selectline.password").write_text(sim.password + "\n")
            location = '\n[[location]]\nname = "wh"\nwarehouses = ["200"]\n'
            config = webhook_config(
                tmp, location + erp_section(url, poll_interval="1s", payment_interval="10s")
            )
            async with running_daemon(config) as daemon, daemon.admin(timeout=60) as admin:
                await wait_until(lambda: sim.logins >= 1, budget=30)
                numbers = [f"B{i}" for i in range(orders)]
                ids: list[str] = []
                limiter = trio.Semaphore(SENDERS)

                async def send(number: str) -> None:
                    async with limiter:
                        ids.append(await accept(admin, order_body(number)))

                started = time.perf_counter()
                async with trio.open_nursery() as senders:
                    for number in numbers:
                        senders.start_soon(send, number)
                accepted = time.perf_counter() - started

                def sales_orders_complete() -> bool:
                    found = sim.documents_of("F")
                    return len(found) == orders and all(len(d.positions) == 2 for d in found)

                await wait_until(sales_orders_complete, budget=30 + orders)
                posted = time.perf_counter() - started

                async def ship(order_id: str) -> None:
                    async with limiter:
                        response = await admin.post(
                            f"/v1/orders/{order_id}/shipments",
                            json={"lines": [{"line": 0, "quantity": 2}], "shipment_id": "s1"},
                        )
                        response.raise_for_status()

                shipping = time.perf_counter()
                async with trio.open_nursery() as shippers:
                    for order_id in ids:
                        shippers.start_soon(ship, order_id)
                await wait_until(lambda: len(sim.documents_of("R")) == orders, budget=30 + orders)
                finished = time.perf_counter()
                del daemon
        documents = len(sim.documents)
        print(
            f"pipeline: {orders} orders accepted in {accepted:.1f} s; "
            f"{orders} F complete after {posted:.1f} s ({orders / posted:.1f} F/s incl. intake); "
            f"{2 * orders} L+R in {finished - shipping:.1f} s "
            f"({2 * orders / (finished - shipping):.1f} documents/s); "
            f"{documents} documents in {finished - started:.1f} s: "
            f"{documents / (finished - started):.1f} documents/s through somsd run"
        )
        await listener.stop()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--pipeline", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.pipeline:
        trio.run(pipeline, args.pipeline)
    else:
        trio.run(main, args.articles, args.orders)
