"""Projections: written in the same transaction as events, rebuilt and verified by replay."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from somsd.store import (
    Appended,
    Connection,
    EventStore,
    Projection,
    RequestFailed,
    RowBatch,
    StoredEvent,
    Unbatchable,
)
from tests.store.helpers import StoreBackend, StreamStats, TypeCounts, event

PROJECTIONS: list[Projection] = [StreamStats(), TypeCounts()]


def snapshot(conn: Connection) -> list[tuple[str, int, int]]:
    """Per stream: events in the log and events the projection has counted, one snapshot."""
    return conn.execute(
        "SELECT e.stream, count(*), s.events FROM events AS e "
        "JOIN stream_stats AS s ON s.stream = e.stream GROUP BY e.stream, s.events"
    ).fetchall()


async def test_readers_never_see_events_without_their_projection(
    backend: StoreBackend, nursery: trio.Nursery
) -> None:
    """While producers append, every read snapshot shows projection and log in agreement."""
    store = backend.store(PROJECTIONS)
    await nursery.start(store.run)
    writers_done = trio.Event()
    checked = 0

    async def produce(n: int) -> None:
        for _ in range(30):
            await store.append(f"s{n % 4}", [event("A"), event("B")])

    async def check_until_done() -> None:
        nonlocal checked
        while not writers_done.is_set():
            for stream, logged, projected in await store.read(snapshot):
                assert logged == projected, f"{stream}: {logged} events, projection {projected}"
            checked += 1

    async with trio.open_nursery() as inner:
        inner.start_soon(check_until_done)
        async with trio.open_nursery() as producers:
            for n in range(16):
                producers.start_soon(produce, n)
        writers_done.set()

    assert checked > 0
    assert backend.query("SELECT sum(events) FROM stream_stats") == [(16 * 30 * 2,)]
    assert backend.query("SELECT type, n FROM type_counts ORDER BY type") == [
        ("A", 480),
        ("B", 480),
    ]


async def test_projection_error_rolls_back_only_that_append(
    backend: StoreBackend, nursery: trio.Nursery
) -> None:
    """A projection raising mid-append undoes that append's events and projection rows."""
    store = backend.store(PROJECTIONS)
    before = await store.submit("s", [event("A")])
    poisoned = await store.submit("s", [event("A"), event("Unprojectable")])
    after = await store.submit("s", [event("B")])
    await nursery.start(store.run)

    assert isinstance(await before.wait(), Appended)
    with pytest.raises(RequestFailed, match="cannot project") as caught:
        await poisoned.wait()
    assert isinstance(caught.value.__cause__, ValueError)
    assert (await after.wait()) == Appended(stream="s", first_seq=2, last_seq=2, version=2)
    assert backend.query("SELECT type, n FROM type_counts ORDER BY type") == [("A", 1), ("B", 1)]
    assert backend.verify(PROJECTIONS) == []


async def test_verify_finds_a_tampered_projection_row_and_rebuild_repairs_it(
    backend: StoreBackend, nursery: trio.Nursery
) -> None:
    """Editing a projection row behind the store's back is reported row by row; a rebuild
    replays the log and the tables match again."""
    store = backend.store(PROJECTIONS)
    await nursery.start(store.run)
    for n in range(10):
        await store.append(f"s{n % 3}", [event("A"), event("B")])
    good = backend.query("SELECT * FROM stream_stats ORDER BY stream")
    assert backend.verify(PROJECTIONS) == []

    backend.execute("UPDATE stream_stats SET events = 99 WHERE stream = 's1'")
    backend.execute("DELETE FROM type_counts WHERE type = 'B'")
    problems = backend.verify(PROJECTIONS)
    assert any("'stream_stats'" in p and "unexpected row ('s1', 99," in p for p in problems)
    assert any("'stream_stats'" in p and "missing row ('s1', 6," in p for p in problems)
    assert any("'type_counts'" in p and "missing row ('B', 10)" in p for p in problems)

    assert backend.rebuild(PROJECTIONS) == 20
    assert backend.query("SELECT * FROM stream_stats ORDER BY stream") == good
    assert backend.verify(PROJECTIONS) == []


async def test_rebuild_reproduces_projections_exactly(
    backend: StoreBackend, nursery: trio.Nursery
) -> None:
    """Dropping and replaying gives the same rows the writer built incrementally."""
    store = backend.store(PROJECTIONS)
    await nursery.start(store.run)
    for n in range(50):
        await store.append(f"s{n % 7}", [event("A" if n % 2 else "B")])
    tables = ("stream_stats", "type_counts")
    before = {t: backend.query(f"SELECT * FROM {t} ORDER BY 1") for t in tables}

    backend.rebuild(PROJECTIONS)

    assert {t: backend.query(f"SELECT * FROM {t} ORDER BY 1") for t in tables} == before


async def test_new_projection_is_filled_from_the_log_at_open(backend: StoreBackend) -> None:
    """A projection added after events exist gets its tables created and replayed at open."""
    async with trio.open_nursery() as nursery:
        store = backend.store()
        await nursery.start(store.run)
        await store.append("s", [event("A"), event("A"), event("B")])
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        store = backend.store(PROJECTIONS)
        await nursery.start(store.run)
        assert await store.read(
            lambda conn: conn.execute("SELECT type, n FROM type_counts ORDER BY type").fetchall()
        ) == [("A", 2), ("B", 1)]
        await store.append("s", [event("B")])
        nursery.cancel_scope.cancel()
    assert backend.verify(PROJECTIONS) == []


@pytest.mark.parametrize(
    ("projections", "message"),
    [
        ([StreamStats(), StreamStats()], "two projections are named 'stream_stats'"),
        ([type("Bad", (StreamStats,), {"tables": ("events",)})()], "belongs to the event store"),
        ([type("Empty", (StreamStats,), {"tables": ()})()], "lists no tables"),
    ],
)
def test_clashing_projections_are_refused(
    db_path: Path, projections: list[StreamStats], message: str
) -> None:
    """Projection set-ups that would corrupt each other or the log fail at construction."""
    with pytest.raises(ValueError, match=message):
        EventStore(db_path, projections)


class StreamStatsV2(StreamStats):
    """StreamStats in a newer format: `last_type` now lower-case."""

    version = 2

    def apply(self, conn: Connection, event: StoredEvent) -> None:
        conn.execute(
            "INSERT INTO stream_stats VALUES (?, 1, ?, ?) ON CONFLICT (stream) DO UPDATE SET "
            "events = stream_stats.events + 1, last_type = excluded.last_type, "
            "last_seq = excluded.last_seq",
            (event.stream, event.type.lower(), event.seq),
        )


async def test_a_projection_in_an_older_format_is_rebuilt_once_at_the_next_start(
    backend: StoreBackend,
) -> None:
    """Upgrading a projection's `version` needs no operator: the next open rebuilds it alone,
    verify says why it differs until then, and a later open does not rebuild it again."""

    async def append_and_close(projections: list[Projection], types: list[str]) -> None:
        store = backend.store(projections)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            for type_ in types:
                await store.append("s", [event(type_)])
            nursery.cancel_scope.cancel()

    await append_and_close([StreamStats(), TypeCounts()], ["A", "B"])
    assert backend.query("SELECT last_type FROM stream_stats") == [("B",)]
    upgraded: list[Projection] = [StreamStatsV2(), TypeCounts()]
    [problem] = backend.verify(upgraded)
    assert "'stream_stats' is in format version 1, this somsd writes 2" in problem
    await append_and_close(upgraded, ["C"])
    assert backend.query("SELECT events, last_type FROM stream_stats") == [(3, "c")]
    assert backend.query("SELECT type, n FROM type_counts ORDER BY type") == [
        ("A", 1),
        ("B", 1),
        ("C", 1),
    ]
    assert backend.verify(upgraded) == []
    # Recorded: reopening does not replay the log again (a replay would undo this edit).
    backend.execute("UPDATE stream_stats SET events = 99")
    await append_and_close(upgraded, [])
    assert backend.query("SELECT events FROM stream_stats") == [(99,)]


class FirstEvents:
    """A `BatchedProjection`: one row per stream, inserted by the stream's first append and
    queued in the writer's batch. A `CHECK` refuses the type "Refused", so that row fails only
    when the batch's rows are inserted together, after its request's savepoint is gone."""

    name = "first_events"
    ddl = (
        "CREATE TABLE first_events (stream TEXT PRIMARY KEY, type TEXT NOT NULL "
        "CHECK (type <> 'Refused'), seq INTEGER NOT NULL)",
    )
    tables = ("first_events",)
    insert = "INSERT INTO first_events VALUES (?, ?, ?)"

    def apply(self, conn: Connection, event: StoredEvent) -> None:
        self.apply_rows(conn, [event], None)

    def apply_append(self, conn: Connection, events: Sequence[StoredEvent]) -> None:
        self.apply_rows(conn, events, None)

    def apply_rows(
        self, conn: Connection, events: Sequence[StoredEvent], rows: RowBatch | None
    ) -> None:
        first = events[0]
        if first.version != 1:
            if rows is not None and rows.is_queued(self.insert, first.stream):
                raise Unbatchable(f"{first.stream} is still queued")
            conn.execute(
                "UPDATE first_events SET seq = seq WHERE stream = ?", (first.stream,)
            )  # reads the row a queued insert would not have written yet
            return
        params = (first.stream, first.type, first.seq)
        if rows is None:
            conn.execute(self.insert, params)
        else:
            rows.queue(self.insert, first.stream, params)


async def test_a_batched_row_that_fails_fails_only_its_own_append(
    backend: StoreBackend, nursery: trio.Nursery
) -> None:
    """Rows queued per batch go in together before COMMIT; when one of them is refused the
    batch is written again row by row, and only the append with the bad row fails."""
    store = backend.store([FirstEvents(), StreamStats()])
    submitted = [
        await store.submit(f"s{n}", [event("Refused" if n == 2 else "A"), event("B")])
        for n in range(5)
    ]
    await nursery.start(store.run)  # all five in the first batch

    outcomes = []
    for reply in submitted:
        try:
            outcomes.append(await reply.wait())
        except RequestFailed as failed:
            outcomes.append(failed)
    assert isinstance(outcomes[2], RequestFailed)
    assert [type(o) for n, o in enumerate(outcomes) if n != 2] == [Appended] * 4
    assert backend.query("SELECT stream, type FROM first_events ORDER BY stream") == [
        (f"s{n}", "A") for n in (0, 1, 3, 4)
    ]
    assert backend.query("SELECT DISTINCT stream FROM events ORDER BY stream") == [
        (f"s{n}",) for n in (0, 1, 3, 4)
    ]
    # Gapless seqs: the failed append's events were rolled back with its row.
    assert backend.query("SELECT min(seq), max(seq), count(*) FROM events") == [(1, 8, 8)]
    assert backend.verify([FirstEvents(), StreamStats()]) == []


async def test_an_append_needing_a_row_still_queued_gets_it(
    backend: StoreBackend, nursery: trio.Nursery
) -> None:
    """A second append to a stream whose first row is still queued in the same batch makes
    the batch unbatchable: written again row by row, both appends succeed."""
    store = backend.store([FirstEvents()])
    first = await store.submit("s", [event("A")])
    second = await store.submit("s", [event("B")])
    other = await store.submit("t", [event("A")])
    await nursery.start(store.run)
    assert [await r.wait() for r in (first, second, other)] == [
        Appended(stream="s", first_seq=1, last_seq=1, version=1),
        Appended(stream="s", first_seq=2, last_seq=2, version=2),
        Appended(stream="t", first_seq=3, last_seq=3, version=1),
    ]
    assert backend.query("SELECT * FROM first_events ORDER BY stream") == [
        ("s", "A", 1),
        ("t", "A", 3),
    ]
    assert backend.verify([FirstEvents()]) == []
