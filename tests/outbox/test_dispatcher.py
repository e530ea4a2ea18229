"""The outbox dispatcher with in-process deliverers against a real event store.

No upstream here: deliverers are plain async functions that succeed, fail or block on demand,
so each rule (waiting, limits, retries, dead letters, cancellation) is checked on its own. The
store writes in a worker thread, so the real clock runs, with millisecond backoffs.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from actors.outbox import MAX_RETRY_AFTER, OutboxDispatcher, UpstreamMonitor
from adapters.errors import PermanentUpstreamError, TransientUpstreamError
from somsd.store import EventStore, OutboxEntry
from tests.outbox.helpers import (
    add_outbox,
    all_delivered,
    counts_are,
    entries,
    fast_dispatcher,
    outbox_states,
    sample,
    wait_until,
)


class Recorder:
    """A deliverer that records calls and fails or blocks as told."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.calls: list[OutboxEntry] = []
        self.times: list[float] = []
        self.failures = list(failures or [])
        self.gate: trio.Event | None = None
        self.active: set[int] = set()
        self.max_active = 0

    async def __call__(self, entry: OutboxEntry) -> None:
        assert entry.id not in self.active, f"entry {entry.id} delivered twice at once"
        self.calls.append(entry)
        self.times.append(time.monotonic())
        self.active.add(entry.id)
        self.max_active = max(self.max_active, len(self.active))
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await trio.lowlevel.checkpoint()
            if self.failures:
                raise self.failures.pop(0)
        finally:
            self.active.discard(entry.id)


async def start(nursery: trio.Nursery, dispatcher: OutboxDispatcher) -> None:
    await nursery.start(dispatcher.run)


async def test_entry_without_deliverer_waits_and_is_logged_once(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """No deliverer: entries stay pending with no attempt counted, one warning; registering
    one delivers them."""
    dispatcher = fast_dispatcher(store, registry, poll_interval=0.01)
    await add_outbox(store, "location/later", [(b"{}", "k1"), (b"{}", "k2")])
    with capture_logs() as logged:
        await start(nursery, dispatcher)
        await trio.sleep(0.2)  # some twenty scans
        waiting = await entries(store)
        assert [(e.attempts, e.last_error) for e in waiting] == [(0, None), (0, None)]
        assert dispatcher.status().waiting == ("location/later",)

        deliver = Recorder()
        dispatcher.register("location/later", deliver)
        await wait_until(lambda: all_delivered(store))

    assert sorted(e.idempotency_key for e in deliver.calls) == ["k1", "k2"]
    warnings = [e for e in logged if e["event"] == "outbox_target_has_no_deliverer"]
    assert len(warnings) == 1
    assert warnings[0]["target"] == "location/later"


async def test_slow_target_is_limited_and_does_not_starve_others(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """A blocked target holds at most `per_target` deliveries; another target's entries,
    queued behind it, are delivered meanwhile, and every entry is delivered exactly once."""
    dispatcher = fast_dispatcher(store, registry, per_target=4)
    slow, fast = Recorder(), Recorder()
    slow.gate = trio.Event()
    dispatcher.register("location/slow", slow)
    dispatcher.register("channel/fast", fast)
    await add_outbox(store, "location/slow", [(b"{}", f"slow-{i}") for i in range(10)])
    await add_outbox(store, "channel/fast", [(b"{}", f"fast-{i}") for i in range(5)])
    await start(nursery, dispatcher)

    await wait_until(lambda: len(fast.calls) == 5 and len(slow.active) == 4)
    await trio.sleep(0.1)  # several more scans while the slow target is full
    assert len(slow.calls) == 4
    assert dispatcher.status().in_flight == {"location/slow": 4}
    assert await outbox_states(store, "channel/fast") == {"pending": 0, "dead": 0}

    slow.gate.set()
    await wait_until(lambda: all_delivered(store))
    assert slow.max_active == 4
    assert Counter(e.idempotency_key for e in slow.calls) == {f"slow-{i}": 1 for i in range(10)}


async def test_a_backlog_bigger_than_a_page_does_not_hide_other_targets(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """Scans read each target's share: a stuck target with far more due entries than a page
    holds, all older, does not keep a later target's entries from being delivered."""
    dispatcher = fast_dispatcher(store, registry, per_target=2, page_size=16, poll_interval=60.0)
    stuck, other = Recorder(), Recorder()
    stuck.gate = trio.Event()
    dispatcher.register("channel/shop/stock", stuck)
    dispatcher.register("channel/shop", other)
    await add_outbox(store, "channel/shop/stock", [(b"{}", f"push-{i}") for i in range(100)])
    await add_outbox(store, "channel/shop", [(b"{}", f"ship-{i}") for i in range(3)])
    await start(nursery, dispatcher)
    await wait_until(lambda: len(other.calls) == 3 and len(stuck.active) == 2)
    assert await outbox_states(store, "channel/shop") == {"pending": 0, "dead": 0}
    stuck.gate.set()
    await wait_until(lambda: all_delivered(store))
    assert Counter(e.idempotency_key for e in stuck.calls) == {f"push-{i}": 1 for i in range(100)}


async def test_deliveries_continue_from_the_scan_without_a_read_per_delivery(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """A finished delivery starts the next entry the scan read; a new scan comes only when
    the target's share is used up: 300 entries, pages of 32 -> about 10 scans, not 300."""
    deliver = Recorder()
    dispatcher = fast_dispatcher(store, registry, per_target=4, page_size=32, poll_interval=60.0)
    dispatcher.register("channel/shop/stock", deliver)
    await add_outbox(store, "channel/shop/stock", [(b"{}", f"push-{i}") for i in range(300)])
    await start(nursery, dispatcher)
    await wait_until(lambda: all_delivered(store))
    assert Counter(e.idempotency_key for e in deliver.calls) == {f"push-{i}": 1 for i in range(300)}
    assert dispatcher._scans <= 300 // 32 + 5


async def test_transient_failure_is_retried_no_sooner_than_retry_after(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """A transient error schedules a retry, honouring the upstream's Retry-After over the
    (shorter) backoff; the retry and the delivery show in the metrics."""
    busy = TransientUpstreamError("wh-1", "wh-1: 503; will retry", retry_after=0.3)
    deliver = Recorder(failures=[busy])
    dispatcher = fast_dispatcher(store, registry)
    dispatcher.register("location/wh-1", deliver)
    await add_outbox(store, "location/wh-1", [(b"{}", "k1")])
    await start(nursery, dispatcher)

    await wait_until(lambda: all_delivered(store))
    assert len(deliver.calls) == 2
    # 0.3 s asked for; the dispatcher's 50 ms poll may add a little, never take away.
    assert deliver.times[1] - deliver.times[0] >= 0.3
    assert deliver.calls[1].attempts == 1
    assert deliver.calls[1].last_error == "wh-1: 503; will retry"
    labels = {"system": "location/wh-1"}
    assert sample(registry, "somsd_upstream_requests_total", **labels, outcome="retry") == 1
    assert sample(registry, "somsd_upstream_requests_total", **labels, outcome="delivered") == 1
    assert sample(registry, "somsd_upstream_request_seconds_count", **labels) == 2
    attempts = "somsd_outbox_delivery_attempts_total"
    assert sample(registry, attempts, target="location/wh-1", outcome="transient") == 1


def test_retry_delay_grows_and_respects_retry_after_cap(tmp_path: Path) -> None:
    """With the default schedule the delay doubles from 1 s to the 5-minute cap (+-20 %);
    Retry-After raises it, to an hour at most."""
    dispatcher = OutboxDispatcher(EventStore(tmp_path / "unused.db"))  # never started
    plain = TransientUpstreamError("s", "x")
    delays = [dispatcher.retry_delay(n, plain) for n in range(12)]
    nominal = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    for delay, expected in zip(delays, nominal, strict=True):
        assert expected * 0.8 <= delay <= expected * 1.2
    slow_down = TransientUpstreamError("s", "x", retry_after=90)
    assert dispatcher.retry_delay(0, slow_down) == 90
    forever = TransientUpstreamError("s", "x", retry_after=10**9)
    assert dispatcher.retry_delay(0, forever) == MAX_RETRY_AFTER


async def test_permanent_failure_parks_the_entry_at_once(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """A permanent error is not retried: the entry is dead after one attempt, with the error."""
    refused = PermanentUpstreamError("wh-1", "wh-1: 422 on POST /fulfillments: unknown_sku")
    deliver = Recorder(failures=[refused])
    dispatcher = fast_dispatcher(store, registry)
    dispatcher.register("location/wh-1", deliver)
    await add_outbox(store, "location/wh-1", [(b"{}", "k1")])
    await start(nursery, dispatcher)

    await wait_until(lambda: counts_are(store, pending=0, dead=1))
    await trio.sleep(0.1)
    [dead] = await store.dead_letters()
    assert (dead.attempts, dead.last_error) == (1, str(refused))
    assert len(deliver.calls) == 1
    labels = {"system": "location/wh-1", "outcome": "dead"}
    assert sample(registry, "somsd_upstream_requests_total", **labels) == 1


async def test_attempt_budget_exhausted_parks_the_entry(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """An entry failing transiently `max_attempts` times is parked, saying why."""
    deliver = Recorder(failures=[TransientUpstreamError("s", f"down {i}") for i in range(10)])
    dispatcher = fast_dispatcher(store, registry, max_attempts=3)
    dispatcher.register("location/wh-1", deliver)
    await add_outbox(store, "location/wh-1", [(b"{}", "k1")])
    await start(nursery, dispatcher)

    await wait_until(lambda: counts_are(store, pending=0, dead=1))
    [dead] = await store.dead_letters()
    assert dead.attempts == 3
    assert dead.last_error == "gave up after 3 attempts; last error: down 2"
    attempts = "somsd_outbox_delivery_attempts_total"
    assert sample(registry, attempts, target="location/wh-1", outcome="exhausted") == 1


async def test_unexpected_exception_is_logged_and_retried(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """A deliverer's bug (any Exception) does not lose the entry: logged, then retried."""
    deliver = Recorder(failures=[KeyError("sku")])
    dispatcher = fast_dispatcher(store, registry)
    dispatcher.register("location/wh-1", deliver)
    await add_outbox(store, "location/wh-1", [(b"{}", "k1")])
    with capture_logs() as logged:
        await start(nursery, dispatcher)
        await wait_until(lambda: all_delivered(store))

    assert len(deliver.calls) == 2
    assert deliver.calls[1].last_error == "KeyError: 'sku'"
    [failed] = [e for e in logged if e["event"] == "outbox_deliverer_failed"]
    assert isinstance(failed["exc_info"], KeyError)


async def test_wake_delivers_without_waiting_for_the_poll(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """With a long poll interval, `wake()` after an append still starts delivery at once."""
    deliver = Recorder()
    dispatcher = fast_dispatcher(store, registry, poll_interval=60.0)
    dispatcher.register("location/wh-1", deliver)
    await start(nursery, dispatcher)
    await trio.sleep(0.05)  # the first scan found nothing and went to sleep for a minute

    await add_outbox(store, "location/wh-1", [(b"{}", "k1")])
    dispatcher.wake()
    await wait_until(lambda: all_delivered(store), budget=2.0)


class HeldReads:
    """The store, but a scan's result can be held back after it was read (a slow reader)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self.hold = False
        self.held = trio.Event()
        self.release = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def due_outbox_per_target(self, **kwargs: Any) -> dict[str, list[OutboxEntry]]:
        due = await self._store.due_outbox_per_target(**kwargs)
        if self.hold:
            self.hold = False
            self.held.set()
            await self.release.wait()
        return due


async def test_stale_scan_does_not_start_an_entry_delivered_meanwhile(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """A scan that read the entry as pending before its delivery was recorded does not start
    it again when its result arrives after the outcome was written (a race seen under load)."""
    reads = HeldReads(store)
    deliver = Recorder()
    deliver.gate = trio.Event()
    dispatcher = fast_dispatcher(cast(EventStore, reads), registry, poll_interval=60.0)
    dispatcher.register("location/wh-1", deliver)
    await add_outbox(store, "location/wh-1", [(b"{}", "k1")])
    await start(nursery, dispatcher)
    await wait_until(lambda: len(deliver.active) == 1)

    reads.hold = True
    dispatcher.wake()
    await reads.held.wait()  # this scan saw the entry pending and in flight
    deliver.gate.set()
    await wait_until(lambda: all_delivered(store))  # recorded, no longer in flight
    reads.release.set()  # the stale result arrives now
    await trio.sleep(0.1)
    assert len(deliver.calls) == 1


async def test_unregister_cancels_running_delivery_and_entry_waits(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """Unregistering (a location actor stopping) cancels its running delivery without
    recording an attempt; the entry waits for the next deliverer."""
    stuck = Recorder()
    stuck.gate = trio.Event()  # never set
    dispatcher = fast_dispatcher(store, registry)
    dispatcher.register("location/wh-1", stuck)
    await add_outbox(store, "location/wh-1", [(b"{}", "k1")])
    await start(nursery, dispatcher)
    await wait_until(lambda: len(stuck.active) == 1)

    dispatcher.unregister("location/wh-1", stuck)
    await wait_until(lambda: not stuck.active)
    [waiting] = await entries(store)
    assert (waiting.attempts, waiting.last_error) == (0, None)

    fresh = Recorder()
    dispatcher.register("location/wh-1", fresh)
    await wait_until(lambda: all_delivered(store))
    assert [e.idempotency_key for e in fresh.calls] == ["k1"]


async def test_stale_unregister_keeps_the_successor(
    nursery: trio.Nursery, store: EventStore, registry: CollectorRegistry
) -> None:
    """An old actor unregistering its own deliverer after a new one registered changes
    nothing: the new deliverer stays."""
    old, new = Recorder(), Recorder()
    dispatcher = fast_dispatcher(store, registry)
    dispatcher.register("location/wh-1", old)
    dispatcher.register("location/wh-1", new)
    dispatcher.unregister("location/wh-1", old)
    assert dispatcher.status().targets == ("location/wh-1",)

    await add_outbox(store, "location/wh-1", [(b"{}", "k1")])
    await start(nursery, dispatcher)
    await wait_until(lambda: all_delivered(store))
    assert (len(old.calls), len(new.calls)) == (0, 1)


def test_monitor_logs_one_outage_once_and_ignores_blips() -> None:
    """One failure among successes is a blip; three in a row are an outage, logged once when
    it starts and once when it ends, however many more failures happen in between."""
    registry = CollectorRegistry()
    monitor = UpstreamMonitor(registry)
    with capture_logs() as logged:
        monitor.unavailable("location/wh-1", "503")
        monitor.available("location/wh-1")  # a blip: nothing logged
        for _ in range(10):
            monitor.unavailable("location/wh-1", "connection refused")
        assert not monitor.is_available("location/wh-1")
        assert sample(registry, "somsd_upstream_up", system="location/wh-1") == 0
        monitor.available("location/wh-1")
        monitor.available("location/wh-1")

    assert [e["event"] for e in logged] == ["upstream_unavailable", "upstream_available_again"]
    assert logged[0]["error"] == "connection refused"
    assert sample(registry, "somsd_upstream_up", system="location/wh-1") == 1


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"per_target": 0}, {"poll_interval": 0}])
def test_nonsense_settings_are_refused(bad: dict[str, float]) -> None:
    """Settings that would stop delivery altogether fail at construction, naming the key."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        OutboxDispatcher(EventStore(Path("unused.db")), **bad)  # type: ignore[arg-type]
