"""Benchmark: how soon a cluster member hears of outbox work another member committed.

    python bench/cluster_latency.py [--count 300] [--gap-ms 20] [--dsn DSN]

Member A is a `PostgresEventStore`, the daemon's writer (group commit, one transaction per
batch), appending one event with one outbox entry at a time, `--gap-ms` apart so each append is
a batch and a commit of its own. Member B is another process holding the listening connection a
cluster member's outbox holds (`somsd.cluster.postgres.connect`, `LISTEN somsd_outbox`, the
trigger installed by `ensure_outbox_notify`, psycopg's `notifies()` as `LeasedOutbox` waits on
it on a worker thread); on each notification it reads the named entry's row, as a claim would.
Each entry has a target of its own, so the notification says which one it was.

Both processes read CLOCK_MONOTONIC (one clock for the whole machine on Linux). Reported, p50,
p90, p99 and max over `--count` appends:

- A: submit -> the append's commit acknowledged to the producer (the writer's round trips);
- B notified: A's submit -> B's `notifies()` returned the notification (commit + NOTIFY);
- B sees the row: A's submit -> B has read the entry's row (one more round trip);
- B after A's ack: B's row read minus A's ack (negative: B knew before A's producer did).

Not included: the dispatcher's claim statement (a fenced `FOR UPDATE SKIP LOCKED`, about one
round trip like the row read) and the delivery itself. Without `--dsn` a throwaway server of
Debian's PostgreSQL runs with fsync on (tests/pgcluster.py, `durable=True`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import structlog
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from somsd.cluster import postgres  # noqa: E402  # after the path is set for tests/
from somsd.cluster.outbox import OUTBOX_CHANNEL, ensure_outbox_notify  # noqa: E402
from somsd.store import NewEvent, OutboxItem  # noqa: E402
from somsd.store.postgres import PostgresEventStore  # noqa: E402

# B gives up waiting for a notification after this long: a lost one is reported, not waited on.
LISTEN_TIMEOUT = 10.0


def listen(dsn: str, out: Path, count: int) -> None:
    """Member B: one line per notification, `target notified_at row_seen_at` (monotonic)."""
    with postgres.connect(dsn) as conn, out.open("w") as lines:
        conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
        ensure_outbox_notify(conn)
        lines.write("ready\n")
        lines.flush()
        with postgres.connect(dsn) as reader:
            for seen, note in enumerate(conn.notifies(timeout=LISTEN_TIMEOUT), 1):
                notified = time.monotonic()
                row = reader.execute(
                    "SELECT id FROM outbox WHERE target = %s", (note.payload,)
                ).fetchone()
                read = time.monotonic()
                lines.write(f"{note.payload} {notified:.6f} {read:.6f} {row is not None}\n")
                lines.flush()
                if seen == count:
                    break


async def append(
    dsn: str, count: int, gap: float, prefix: str = "bench"
) -> dict[str, tuple[float, float]]:
    """Member A: target -> (submitted_at, acked_at), one append per `gap` seconds."""
    store = PostgresEventStore(dsn)
    sent: dict[str, tuple[float, float]] = {}
    payload = msgspec.json.encode({"bench": True})
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for n in range(count):
            target = f"{prefix}/{n}"
            submitted = time.monotonic()
            await store.append(
                f"{prefix}-{n}",
                [NewEvent("BenchTick", payload)],
                outbox=[OutboxItem(target, b"{}", f"{prefix}:{n}")],
            )
            sent[target] = (submitted, time.monotonic())
            await trio.sleep(gap)
        nursery.cancel_scope.cancel()
    return sent


def percentiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return f"{q[49]:7.2f} {q[89]:7.2f} {q[98]:7.2f} {ms[-1]:7.2f}"


def run(dsn: str, count: int, gap: float, work: Path) -> None:
    # The store's tables first (migrate at open), so B's trigger install finds the outbox.
    trio.run(append, dsn, 1, 0.0, "warm-up")
    out = work / "listener.txt"
    listener = subprocess.Popen(
        [sys.executable, __file__, "--listener", dsn, "--out", str(out), "--count", str(count)]
    )
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_text().startswith("ready")):
            if time.monotonic() > deadline or listener.poll() is not None:
                raise SystemExit("the listener did not start")
            time.sleep(0.05)
        sent = trio.run(append, dsn, count, gap)
        listener.wait(timeout=LISTEN_TIMEOUT + 5)
    finally:
        if listener.poll() is None:
            listener.kill()
    heard: dict[str, tuple[float, float, bool]] = {}
    for line in out.read_text().splitlines()[1:]:
        target, notified, read, found = line.split()
        heard[target] = (float(notified), float(read), found == "True")
    matched = [(sent[t], heard[t]) for t in sent if t in heard]
    missing = len(sent) - len(matched)
    print(f"{len(sent)} appends {gap * 1000:.0f} ms apart; {missing} notifications missing")
    print(f"rows visible to B when notified: {sum(h[2] for _, h in matched)}/{len(matched)}")
    rows = {
        "A: submit -> commit ack": [a - s for (s, a), _ in matched],
        "B notified (from submit)": [n - s for (s, _), (n, _, _) in matched],
        "B sees the row": [r - s for (s, _), (_, r, _) in matched],
        "B row minus A ack": [r - a for (_, a), (_, r, _) in matched],
    }
    print(f"{'ms':28} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
    for name, values in rows.items():
        print(f"{name:28} {percentiles(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--dsn", help="a PostgreSQL server of your own (a fresh database)")
    parser.add_argument("--listener", help=argparse.SUPPRESS)  # member B's process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(40)  # errors only
    )
    if args.listener:
        listen(args.listener, Path(args.out), args.count)
        return
    if not 1 <= args.count <= 100_000:
        raise SystemExit("--count: between 1 and 100000")
    with tempfile.TemporaryDirectory(prefix="somsd-latency-") as work:
        if args.dsn:
            import psycopg

            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute('DROP DATABASE IF EXISTS "bench_latency"')
                conn.execute('CREATE DATABASE "bench_latency"')
            dsn = args.dsn.rsplit("/", 1)[0] + "/bench_latency"
            run(dsn, args.count, args.gap_ms / 1000, Path(work))
            return
        from tests.pgcluster import PgCluster

        cluster = PgCluster.start(durable=True)
        print(f"load average before: {os.getloadavg()[0]:.2f} (2 shared cores)")
        try:
            run(cluster.fresh_database(), args.count, args.gap_ms / 1000, Path(work))
            print(f"load average after: {os.getloadavg()[0]:.2f} (2 shared cores)")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
