"""Routing and availability benchmark: 50 locations, 100,000 SKUs. Prints figures; not a test.

    .venv/bin/python bench/routing.py [--orders 20000] [--skus 100000] [--dense] [--seed 7]

Measures, on one core of whatever machine runs it:
1. routing decisions per second and p50/p99 per decision, split into `route_order` alone and
   "lookup + route" (reading each line's {location: ATP} out of the `StockBook` first, as the
   router actor will);
2. a full stock report for one warehouse (100,000 rows): deciding it and applying it;
3. recomputing channel availability for all SKUs afterwards, and diffing it against the
   previous snapshot (what the inventory actor does before pushing stock to shops).

The network: 8 warehouses (DE, AT, CH) that stock every SKU, and 42 stores in DACH cities that
stock a random 20 % of the range each - roughly 1.6 million (SKU, location) levels. `--dense`
stocks every SKU everywhere (5 million levels), the worst case for memory and recompute.
Targets from the issue: >= 5,000 decisions/s, recompute < 2 s.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import msgspec

# Run from a checkout without installing: the repository root holds the `somsd` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from somsd.domain.atp import (
    ChannelStockPolicy,
    SafetyStock,
    StockBook,
    StockCount,
    StockLine,
    StockReport,
    StockReserved,
    apply_stock_event,
    availability_changes,
    channel_availability,
    receive_stock_report,
    reserve_stock,
)
from somsd.domain.geo import SHIPPED_CENTROIDS
from somsd.domain.routing import (
    Destination,
    FulfilmentLocation,
    OrderLine,
    RoutingNetwork,
    RoutingPolicy,
    RoutingRequest,
    ShippingRate,
    route_order,
)

T = TypeVar("T")
T0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)

WAREHOUSES = [
    ("wh-dortmund", "DE", 51.51, 7.47),
    ("wh-hamburg", "DE", 53.55, 10.00),
    ("wh-leipzig", "DE", 51.34, 12.37),
    ("wh-frankfurt", "DE", 50.11, 8.68),
    ("wh-nuernberg", "DE", 49.45, 11.08),
    ("wh-stuttgart", "DE", 48.78, 9.18),
    ("wh-wien", "AT", 48.21, 16.37),
    ("wh-zuerich", "CH", 47.38, 8.54),
]
STORE_COUNT = 42
STORE_RANGE_SHARE = 0.2  # a store carries ~20 % of the range (fashion/home retail rule of thumb)
PICKUP_SHARE = 0.05  # click & collect share of orders in the demo data
DACH = ("DE", "AT", "CH")


def build_locations(rng: random.Random) -> list[FulfilmentLocation]:
    """8 warehouses and 42 stores placed on postcode-region centroids across DACH."""
    dach_rates = (
        ShippingRate("dhl", 4.9, 1, frozenset({"DE"})),
        ShippingRate("dhl-intl", 9.9, 2, frozenset({"AT", "CH", "NL"})),
        ShippingRate("express", 14.9, 1),
    )
    locations = [
        FulfilmentLocation(
            name=name,
            kind="warehouse",
            country=country,
            lat=lat,
            lon=lon,
            ships_to=frozenset({*DACH, "NL"}),
            capabilities=frozenset({"ship"}),
            priority=1 if country == "DE" else 2,
            daily_capacity=5_000,
            rates=dach_rates,
        )
        for name, country, lat, lon in WAREHOUSES
    ]
    regions = [
        (country, prefix)
        for country in DACH
        for prefix in (f"{n:02d}" for n in range(1, 100))
        if (centroid := SHIPPED_CENTROIDS.locate(country, prefix + "00")) is not None
        and centroid.precision == "postcode_region"
    ]
    for number, (country, prefix) in enumerate(rng.sample(regions, STORE_COUNT)):
        centroid = SHIPPED_CENTROIDS.locate(country, prefix + "00")
        assert centroid is not None
        locations.append(
            FulfilmentLocation(
                name=f"store-{number:02d}",
                kind="store",
                country=country,
                lat=centroid.point.lat,
                lon=centroid.point.lon,
                ships_to=frozenset({country}),
                capabilities=frozenset({"ship", "pickup"}),
                priority=3,
                daily_capacity=200,
                rates=(ShippingRate("dhl", 5.9, 2, frozenset({country})),),
            )
        )
    return locations


def stock_book(
    locations: list[FulfilmentLocation], skus: list[str], dense: bool, rng: random.Random
) -> tuple[StockBook, int]:
    """A book with one full report per location and a few open reservations."""
    book = StockBook(SafetyStock(location_defaults={"wh-dortmund": 2}))
    levels = 0
    for location in locations:
        carried = (
            skus
            if dense or location.kind == "warehouse"
            else rng.sample(skus, int(len(skus) * STORE_RANGE_SHARE))
        )
        # Many SKUs sold out somewhere, a long tail of small counts: that is what forces splits.
        counts = tuple(StockCount(sku, max(0, int(rng.gauss(4, 6)))) for sku in carried)
        decision = receive_stock_report(book, StockReport(location.name, T0, counts))
        assert decision.counted is not None
        apply_stock_event(book, decision.counted)
        levels += len(counts)
    for n in range(2_000):
        where = rng.choice(locations).name
        event = reserve_stock(book, f"seed-{n}", where, [StockLine(rng.choice(skus), 1)])
        if isinstance(event, StockReserved):
            apply_stock_event(book, event)
    return book, levels


def random_postcode(rng: random.Random) -> Destination:
    country = rng.choices(DACH, weights=(80, 12, 8))[0]
    digits = 5 if country == "DE" else 4
    return Destination(country, f"{rng.randrange(10 ** (digits - 1), 10**digits):0{digits}d}")


def build_orders(
    skus: list[str], stores: list[str], count: int, rng: random.Random
) -> list[RoutingRequest]:
    # Popularity follows a long tail: a few SKUs are in most orders (index drawn from a Pareto).
    def popular_sku() -> str:
        return skus[min(len(skus) - 1, int(rng.paretovariate(1.2)) - 1)]

    orders = []
    for n in range(count):
        lines = tuple(
            OrderLine(popular_sku() if rng.random() < 0.3 else rng.choice(skus), rng.randint(1, 3))
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4)))
        )
        if rng.random() < PICKUP_SHARE:
            orders.append(RoutingRequest(f"o{n}", "shop", lines, pickup_store=rng.choice(stores)))
        else:
            orders.append(RoutingRequest(f"o{n}", "shop", lines, random_postcode(rng)))
    return orders


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def percentile(sorted_ns: list[int], share: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * share))] / 1_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--dense", action="store_true", help="every SKU at every location")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--freeze-gc",
        action="store_true",
        help="gc.freeze() after loading, as a daemon may do once its state is built",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)

    locations = build_locations(rng)
    stores = [location.name for location in locations if location.kind == "store"]
    warehouses = [location.name for location in locations if location.kind == "warehouse"]
    skus = [f"SKU-{n:06d}" for n in range(args.skus)]
    channels = [
        ChannelStockPolicy("shop", frozenset(loc.name for loc in locations), low_stock_threshold=5),
        ChannelStockPolicy("b2b", frozenset(warehouses), hide_sold_out=False),
        ChannelStockPolicy("marketplace", frozenset(warehouses[:4] + stores[:10])),
    ]
    network, network_s = timed(
        lambda: RoutingNetwork(locations, {channel.name: channel.locations for channel in channels})
    )
    (book, levels), load_s = timed(lambda: stock_book(locations, skus, args.dense, rng))
    orders = build_orders(skus, stores, args.orders, rng)
    policy = RoutingPolicy()
    if args.freeze_gc:
        # Millions of long-lived levels make every full collection walk them all; frozen objects
        # are skipped. Shown separately because it is a deployment choice, not a domain one.
        gc.freeze()
    orders_today = {name: rng.randrange(0, 150) for name in network.location_names}
    print(f"python {sys.version.split()[0]}, {len(locations)} locations, {len(skus):,} SKUs, ")
    print(f"{levels:,} stock levels ({'dense' if args.dense else 'stores carry 20 %'})", end="")
    print(", gc frozen after setup" if args.freeze_gc else "")
    print(f"setup: network {network_s * 1000:.1f} ms, book {load_s:.1f} s, ", end="")
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")

    # Warm up (first calls pay for attribute caches), then measure.
    for request in orders[:500]:
        route_order(request, network, {}, orders_today, policy)
    route_ns: list[int] = []
    total_ns: list[int] = []
    searches: dict[str, int] = {}
    fills: dict[str, int] = {}
    clock = time.perf_counter_ns
    for request in orders:
        begin = clock()
        availability = {line.sku: book.available_by_location(line.sku) for line in request.lines}
        looked_up = clock()
        decision = route_order(request, network, availability, orders_today, policy)
        done = clock()
        route_ns.append(done - looked_up)
        total_ns.append(done - begin)
        searches[decision.search] = searches.get(decision.search, 0) + 1
        fills[decision.fill] = fills.get(decision.fill, 0) + 1
    print(f"\nrouting {len(orders):,} orders (1-4 lines, {PICKUP_SHARE:.0%} pickup):")
    for label, samples in (("route_order", route_ns), ("lookup + route", total_ns)):
        ordered = sorted(samples)
        rate = len(samples) / (sum(samples) / 1e9)
        print(
            f"  {label:15s} {rate:8,.0f} decisions/s   p50 {percentile(ordered, 0.5):6.1f} us"
            f"   p99 {percentile(ordered, 0.99):7.1f} us   max {ordered[-1] / 1000:7.1f} us"
        )
    print(f"  search: {searches}   fill: {fills}")
    print(f"  mean per decision {statistics.fmean(total_ns) / 1000:.1f} us")
    # Each decision is stored as an event, so its encoded size and encode time matter too.
    encoder = msgspec.json.Encoder()
    sample = [
        route_order(
            request,
            network,
            {line.sku: book.available_by_location(line.sku) for line in request.lines},
            orders_today,
            policy,
        )
        for request in orders[:2_000]
    ]
    encoded, encode_s = timed(lambda: [encoder.encode(decision) for decision in sample])
    sizes = sorted(len(blob) for blob in encoded)
    print(
        f"  stored decision: median {sizes[len(sizes) // 2]:,} B, max {sizes[-1]:,} B (JSON), "
        f"encode {encode_s / len(sample) * 1e6:.1f} us"
    )

    # A full stock report from the biggest warehouse: every SKU gets a new count.
    report = StockReport(
        "wh-dortmund",
        T0 + timedelta(hours=1),
        tuple(StockCount(sku, rng.randrange(0, 12)) for sku in skus),
    )
    before, before_s = timed(lambda: channel_availability(book, channels))
    report_decision, decide_s = timed(lambda: receive_stock_report(book, report))
    assert report_decision.counted is not None
    counted = report_decision.counted
    _, apply_s = timed(lambda: apply_stock_event(book, counted))
    one_channel, one_s = timed(lambda: channel_availability(book, channels[:1]))
    after, all_s = timed(lambda: channel_availability(book, channels))
    changes, diff_s = timed(lambda: availability_changes(before, after, channels))
    print(f"\nfull stock report for wh-dortmund ({len(report.counts):,} rows):")
    print(f"  decide {decide_s * 1000:6.0f} ms   apply {apply_s * 1000:6.0f} ms")
    print("recompute channel availability for all SKUs:")
    print(f"  1 channel (50 locations)          {one_s * 1000:6.0f} ms")
    print(f"  3 channels                        {all_s * 1000:6.0f} ms  (before report: ", end="")
    print(f"{before_s * 1000:.0f} ms)")
    print(f"  diff -> {len(changes):,} changes        {diff_s * 1000:6.0f} ms")
    total = decide_s + apply_s + all_s + diff_s
    print(f"  report to change list, 3 channels {total * 1000:6.0f} ms")
    assert len(one_channel["shop"]) == len(skus)
    print(f"gc: {gc.get_count()} (collections {[s['collections'] for s in gc.get_stats()]})")


if __name__ == "__main__":
    main()
