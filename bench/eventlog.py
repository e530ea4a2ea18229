"""Benchmark: append throughput and latency of the event store, against plain sqlite3.

    python bench/eventlog.py [--seconds 3] [--dir DIR] [--profile]

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
from datetime import UTC, datetime
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
    registry = CollectorRegistry()
    store = EventStore(path, registry=registry)
    latencies: list[float] = []
    events = (EVENT,)

    async def produce(n: int, deadline: float) -> None:
        stream = f"order-{n % STREAMS}"
        record = latencies.append
        clock = time.perf_counter
        while clock() < deadline:
            started = clock()
            await store.append(stream, events)
            record(clock() - started)

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        started = time.perf_counter()
        async with trio.open_nursery() as group:
            for n in range(producers):
                group.start_soon(produce, n, started + seconds)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    batches = registry.get_sample_value("somsd_eventlog_batch_size_count") or 1.0
    requests = registry.get_sample_value("somsd_eventlog_batch_size_sum") or 0.0
    return Run(latencies, elapsed, requests / batches)


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


if __name__ == "__main__":
    main()
