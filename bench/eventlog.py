"""Benchmark: append throughput and latency of the event store, against plain sqlite3.

    python bench/eventlog.py [--seconds 3] [--dir DIR] [--profile] [--backend postgres]

For 1, 16 and 256 concurrent producers it appends single-event appends (a ~100-byte msgspec
JSON payload, encoded once up front as a producer would) through `EventStore` with group
commit and synchronous=FULL for a fixed time, and reports appends/s and the submit-to-ack
latency p50/p99 each producer saw. Then it inserts the same rows with plain sqlite3 in
transactions of 500 (`executemany`, no trio, no threads) into an identical schema: the ceiling
the store's overhead is measured against. `--profile` runs the 256-producer case under
cProfile and prints the top functions of the trio thread (cProfile does not follow the
writer's worker thread; time `BatchWriter.write` separately to see that side).

The database lives in a fresh temporary directory (use --dir to pick the disk under test;
tmpfs would make fsync free and the numbers meaningless).

`--backend postgres` runs the same levels against PostgreSQL as well, beside SQLite: a
throwaway cluster of Debian's server (tests/pgcluster.py, fsync on, data dir under --dir) or
`--dsn` for a server of your own, a fresh database per level, one writer (one daemon) and then
three writers (three daemons' stores on separate connections sharing the producers).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import platform
import pstats
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry

from somsd.store import EventStore, NewEvent

LEVELS = (1, 16, 256)
# The same batch size the store uses by default, so the ceiling is like for like.
RAW_BATCH = 500
# Streams the appends spread over: many orders in flight at once, some contention per stream.
STREAMS = 64


class OrderLineAdded(msgspec.Struct, frozen=True):
    order: str
    sku: str
    qty: int
    price: str
    channel: str


PAYLOAD = msgspec.json.encode(OrderLineAdded("A-100042", "SKU-12345-XL", 3, "19.99", "smartstore"))
EVENT = NewEvent("OrderLineAdded", PAYLOAD)


class Run(msgspec.Struct, frozen=True):
    latencies: list[float]  # seconds from calling append to its return, one per append
    elapsed: float  # seconds the producers ran (opening and closing the store excluded)
    mean_batch: float  # requests per transaction


async def measure_store(path: Path, producers: int, seconds: float) -> Run:
    """`producers` tasks appending through one EventStore for `seconds`."""
    return await measure_stores(
        lambda registry: EventStore(path, registry=registry), producers, seconds
    )


async def measure_stores(
    make: Callable[[CollectorRegistry], EventStore],
    producers: int,
    seconds: float,
    *,
    writers: int = 1,
) -> Run:
    """`producers` tasks appending for `seconds` through `writers` stores on one database
    (producer n uses store n % writers, as a load balancer spreads requests over daemons)."""
    registries = [CollectorRegistry() for _ in range(writers)]
    stores = [make(registry) for registry in registries]
    latencies: list[float] = []
    events = (EVENT,)

    async def produce(n: int, deadline: float) -> None:
        store = stores[n % writers]
        stream = f"order-{n % STREAMS}"
        record = latencies.append
        clock = time.perf_counter
        while clock() < deadline:
            started = clock()
            await store.append(stream, events)
            record(clock() - started)

    async with trio.open_nursery() as nursery:
        for store in stores:
            await nursery.start(store.run)
        started = time.perf_counter()
        async with trio.open_nursery() as group:
            for n in range(producers):
                group.start_soon(produce, n, started + seconds)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    batches = sum(r.get_sample_value("somsd_eventlog_batch_size_count") or 0.0 for r in registries)
    requests = sum(r.get_sample_value("somsd_eventlog_batch_size_sum") or 0.0 for r in registries)
    return Run(latencies, elapsed, requests / (batches or 1.0))


def measure_raw(path: Path, rows: int) -> float:
    """Rows/s for plain sqlite3 inserting `rows` events in transactions of RAW_BATCH."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    versions = dict.fromkeys((f"order-{n}" for n in range(STREAMS)), 0)
    recorded_at = datetime.now(UTC).isoformat(timespec="microseconds")
    started = time.perf_counter()
    written = 0
    while written < rows:
        batch = []
        for n in range(written, min(written + RAW_BATCH, rows)):
            stream = f"order-{n % STREAMS}"
            versions[stream] += 1
            batch.append((stream, versions[stream], EVENT.type, PAYLOAD, b"{}", recorded_at))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events (stream, version, type, payload, metadata, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            batch,
        )
        conn.execute("COMMIT")
        written += len(batch)
    elapsed = time.perf_counter() - started
    conn.close()
    return rows / elapsed


async def create_schema(path: Path) -> None:
    """Let the store create its schema (tables, indexes, triggers), then stop it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(EventStore(path).run)
        nursery.cancel_scope.cancel()


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0 < q < 1) of values, to a tenth of a percent."""
    return statistics.quantiles(values, n=1000)[round(q * 1000) - 1]


def describe_machine(directory: Path) -> str:
    cpu = "unknown CPU"
    with Path("/proc/cpuinfo").open() as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    fs = subprocess.run(
        ["df", "--output=fstype", str(directory)], capture_output=True, text=True, check=False
    ).stdout.split()[-1]
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"CPython {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"trio {trio.__version__}, msgspec {msgspec.__version__}, database on {fs}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="run time per level")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases")
    parser.add_argument("--profile", action="store_true", help="cProfile the 256 case")
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="postgres: PostgreSQL too, beside SQLite",
    )
    parser.add_argument("--dsn", help="PostgreSQL server to use (default: a throwaway cluster)")
    args = parser.parse_args()
    # The store logs open/close at info; keep the figures readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="somsd-bench-") as tmp:
        directory = Path(tmp)
        print(describe_machine(directory))
        print(f"payload {len(PAYLOAD)} B, single-event appends over {STREAMS} streams")
        print(
            f"{'producers':>9} {'appends':>9} {'appends/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'batch':>6}"
        )
        rates: dict[int, float] = {}
        for producers in LEVELS:
            path = directory / f"store-{producers}.db"
            if args.profile and producers == LEVELS[-1]:
                profiler = cProfile.Profile()
                profiler.enable()
            run = trio.run(measure_store, path, producers, args.seconds)
            if args.profile and producers == LEVELS[-1]:
                profiler.disable()
            rates[producers] = len(run.latencies) / run.elapsed
            print(
                f"{producers:>9} {len(run.latencies):>9} {rates[producers]:>10,.0f} "
                f"{percentile(run.latencies, 0.5) * 1e3:>8.2f} "
                f"{percentile(run.latencies, 0.99) * 1e3:>8.2f} {run.mean_batch:>6.1f}"
            )
        raw_path = directory / "raw.db"
        trio.run(create_schema, raw_path)
        raw = measure_raw(raw_path, 200_000)
        print(f"plain sqlite3, batches of {RAW_BATCH}: {raw:,.0f} rows/s")
        top = LEVELS[-1]
        print(f"store at {top} producers / plain sqlite3: {rates[top] / raw:.2f}")
        if args.profile:
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        if args.backend == "postgres":
            bench_postgres(directory, args.seconds, args.dsn)


def bench_postgres(directory: Path, seconds: float, dsn: str | None) -> None:
    """The same levels on PostgreSQL: one writer, then three on one database."""
    import psycopg

    from somsd.store.postgres import PostgresEventStore

    cluster = None
    if dsn is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.pgcluster import PgCluster

        cluster = PgCluster.start(durable=True)
        dsn = cluster.dsn()
    try:
        with psycopg.connect(dsn) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            fsync = conn.execute("SHOW fsync").fetchone()
        print(
            f"PostgreSQL {version[0] if version else '?'} on loopback, fsync "
            f"{fsync[0] if fsync else '?'}, synchronous_commit on, psycopg {psycopg.__version__}"
        )
        print(
            f"{'writers':>7} {'producers':>9} {'appends':>9} {'appends/s':>10} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'batch':>6}"
        )
        for writers in (1, 3):
            for producers in LEVELS:
                if producers < writers:
                    continue
                target = _fresh_database(dsn, f"bench_{writers}_{producers}")
                run = trio.run(
                    partial(
                        measure_stores,
                        lambda registry, target=target: PostgresEventStore(
                            target, registry=registry
                        ),
                        producers,
                        seconds,
                        writers=writers,
                    )
                )
                print(
                    f"{writers:>7} {producers:>9} {len(run.latencies):>9} "
                    f"{len(run.latencies) / run.elapsed:>10,.0f} "
                    f"{percentile(run.latencies, 0.5) * 1e3:>8.2f} "
                    f"{percentile(run.latencies, 0.99) * 1e3:>8.2f} {run.mean_batch:>6.1f}"
                )
    finally:
        if cluster is not None:
            cluster.stop()


def _fresh_database(dsn: str, name: str) -> str:
    import psycopg
    import psycopg.conninfo

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    parts["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


if __name__ == "__main__":
    main()
