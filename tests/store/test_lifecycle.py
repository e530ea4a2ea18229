"""Starting, stopping and restarting the writer: nothing queued is lost or left unanswered."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from somsd.store import Appended, EventStore, StoreError
from tests.store.helpers import StoreBackend, event, query, write_lock_held


async def test_cancellation_commits_and_answers_everything_queued(db_path: Path) -> None:
    """Cancelled with a batch in flight and 100 requests queued, the store commits and answers
    all of them before `run` returns."""
    store = EventStore(db_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        with write_lock_held(db_path):
            in_flight = await store.submit("first", [event()])
            await trio.testing.wait_all_tasks_blocked()  # the writer waits for the lock
            assert store.mailbox.depth == 0
            queued = [await store.submit(f"s{n % 5}", [event()]) for n in range(100)]
            assert store.mailbox.depth == 100
            nursery.cancel_scope.cancel()
        # Leaving the block releases the lock; the nursery waits for run() to finish.

    assert in_flight.done
    assert all(reply.done for reply in queued)
    for reply in [in_flight, *queued]:
        assert isinstance(await reply.wait(), Appended)
    assert store.mailbox.depth == 0
    assert query(db_path, "SELECT count(*) FROM events") == [(101,)]


async def test_requests_queued_while_stopped_are_written_by_the_next_run(
    backend: StoreBackend,
) -> None:
    """The mailbox outlives a run: a supervisor restart picks up what producers queued."""
    store = backend.store()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.append("s", [event()])
        nursery.cancel_scope.cancel()

    waiting = await store.submit("s", [event()])
    assert not waiting.done

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert await waiting.wait() == Appended(stream="s", first_seq=2, last_seq=2, version=2)
        nursery.cancel_scope.cancel()


async def test_run_can_be_restarted_after_a_failed_open(db_path: Path) -> None:
    """An open that fails raises a StoreError naming the file; a later run works normally."""
    await trio.Path(db_path).mkdir(parents=True)  # a directory where the database file belongs
    store = EventStore(db_path)
    waiting = await store.submit("s", [event()])
    with pytest.raises(StoreError, match=r"events\.db: cannot open the event store"):
        await store.run()

    await trio.Path(db_path).rmdir()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert isinstance(await waiting.wait(), Appended)
        nursery.cancel_scope.cancel()


async def test_store_runs_once_at_a_time(backend: StoreBackend, nursery: trio.Nursery) -> None:
    """Two writers on one mailbox would break the single-writer design; the second refuses."""
    store = backend.store()
    await nursery.start(store.run)
    with pytest.raises(RuntimeError, match="already running"):
        await store.run()
    assert isinstance(await store.append("s", [event()]), Appended)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # SQLite's write lock
async def test_reads_proceed_while_the_write_lock_is_held(store: EventStore, db_path: Path) -> None:
    """Under WAL a reader sees the last commit even while someone holds the write lock."""
    await store.append("s", [event(), event()])
    with write_lock_held(db_path):
        with trio.fail_after(1):
            assert await store.stream_version("s") == 2
            assert len(await store.read_all()) == 2
