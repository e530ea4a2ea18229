"""SelectLine figures: the simulator's own ceiling for sales orders, and a stock poll of
100,000 articles over 5 warehouses through the real client and the pure mapping to stock
reports (aim: under 30 s). Prints figures; not a test.

    .venv/bin/python bench/selectline.py [--articles 100000] [--orders 200]

Not measured here (yet): documents per second through a whole `somsd run` pipeline.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import trio

from adapters.selectline.client import SelectLineClient
from adapters.selectline.planning import stock_reports
from adapters.selectline.simulator import SelectLineSimulator
from adapters.selectline.wire import ArticlePositionItem, DocumentCreateModel
from somsd.config import ListenAddress
from somsd.http import HttpListener

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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=200)
    args = parser.parse_args()
    trio.run(main, args.articles, args.orders)
