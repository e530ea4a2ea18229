"""The stock projection equals the book for the same events: pure, on an in-memory SQLite."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from somsd.domain.atp import (
    RejectionReason,
    StockBook,
    StockCount,
    StockEvent,
    StockLine,
    StockRefused,
    StockReport,
    apply_stock_event,
    receive_stock_report,
    reject_stock,
    release_stock,
    reserve_stock,
    ship_stock,
)
from somsd.projections.stock import (
    INVENTORY_STREAM,
    StockLevels,
    encode_stock_event,
    fetch_levels,
    fetch_reserved_lines,
)
from somsd.store import StoredEvent

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
SKUS = ("MUG", "CUP", "PLATE")
LOCATIONS = ("wh", "store")
REASONS: tuple[RejectionReason, ...] = ("stock_missing", "damaged", "declined")


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    for statement in StockLevels.ddl:
        connection.execute(statement)
    yield connection
    connection.close()


class Twin:
    """A book and the projection fed the same events, as the actor and the writer are."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.book = StockBook()
        self.conn = conn
        self.projection = StockLevels()
        self.seq = 0

    def apply(self, decided: StockEvent | StockRefused | None) -> None:
        if decided is None or isinstance(decided, StockRefused):
            return  # a refusal or an all-stale report writes nothing
        apply_stock_event(self.book, decided)
        self.seq += 1
        payload = encode_stock_event(decided)
        stored = StoredEvent(self.seq, INVENTORY_STREAM, self.seq, "x", payload, {}, T0)
        self.projection.apply(self.conn, stored)

    def assert_equal(self) -> None:
        conn, snapshot = self.conn, self.book.snapshot()
        book = [
            (sku, location, level.on_hand, level.reserved, level.as_of)
            for sku, ledger in sorted(snapshot.levels.items())
            for location, level in sorted(ledger.items())
        ]
        rows = [
            (r.sku, r.location, r.on_hand, r.reserved, r.as_of) for r in fetch_levels(self.conn)
        ]
        assert rows == book
        reservations = {
            rid: {line.sku: line.quantity for line in held.lines}
            for rid, held in snapshot.reservations.items()
        }
        assert fetch_reserved_lines(conn) == reservations


def test_random_operations_leave_projection_and_book_equal(conn: sqlite3.Connection) -> None:
    """2,000 seeded random reports (some stale), reservations, releases, shipments and
    rejections: the table matches the book after every step."""
    rng = random.Random(7)
    twin = Twin(conn)
    open_ids: list[str] = []
    for step in range(2000):
        at = T0 + timedelta(minutes=rng.randint(0, step + 10))
        kind = rng.random()
        if kind < 0.25:
            counts = tuple(StockCount(sku, rng.randint(-2, 30)) for sku in rng.sample(SKUS, 2))
            report = StockReport(rng.choice(LOCATIONS), at, counts, complete=rng.random() < 0.1)
            twin.apply(receive_stock_report(twin.book, report).counted)
        elif kind < 0.55 or not open_ids:
            rid = f"r{step}"
            lines = [StockLine(sku, rng.randint(1, 3)) for sku in rng.sample(SKUS, 2)]
            decided = reserve_stock(twin.book, rid, rng.choice(LOCATIONS), lines)
            if not isinstance(decided, StockRefused):
                open_ids.append(rid)
            twin.apply(decided)
        else:
            rid = rng.choice(open_ids)
            held = twin.book.reservation(rid)
            assert held is not None
            some: tuple[StockLine, ...] | None = None if rng.random() < 0.5 else held.lines[:1]
            choice = rng.random()
            if choice < 0.3:
                twin.apply(release_stock(twin.book, rid, some))
            elif choice < 0.7:
                twin.apply(ship_stock(twin.book, rid, at, some))
            else:
                reason = rng.choice(REASONS)
                twin.apply(reject_stock(twin.book, rid, reason, at, some))
            if twin.book.reservation(rid) is None:
                open_ids.remove(rid)
        twin.assert_equal()


def test_many_unconfirmed_shipments_merge_like_the_book(conn: sqlite3.Connection) -> None:
    """300 shipments with no count in between exceed the book's cap on remembered moves; a
    count dated among the oldest then gives the same on hand in both."""
    twin = Twin(conn)
    first = StockReport("wh", T0, (StockCount("MUG", 1000),))
    twin.apply(receive_stock_report(twin.book, first).counted)
    for n in range(300):
        twin.apply(reserve_stock(twin.book, f"r{n}", "wh", [StockLine("MUG", 1)]))
        twin.apply(ship_stock(twin.book, f"r{n}", T0 + timedelta(minutes=n + 1)))
    recount = StockReport("wh", T0 + timedelta(minutes=20, seconds=30), (StockCount("MUG", 980),))
    twin.apply(receive_stock_report(twin.book, recount).counted)
    twin.assert_equal()
    stored_moves = conn.execute("SELECT moves FROM stock_levels").fetchone()[0]
    assert len(msgspec.json.decode(stored_moves)) < 300
