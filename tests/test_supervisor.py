"""Supervisor semantics under trio's autojump clock: restarts, backoff, strategies, escalation."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from somsd.errors import unwrap_exception_group
from somsd.supervisor import (
    Backoff,
    ChildSpec,
    Restart,
    RestartIntensityExceeded,
    Strategy,
    Supervisor,
)


class Child:
    """A scripted child: records each start, becomes ready, then crashes on demand."""

    def __init__(self, name: str, *, crash_on_start: int = 0) -> None:
        self.name = name
        self.starts: list[float] = []
        self.stops = 0
        self.crash_now = trio.Event()
        self.crash_on_start = crash_on_start  # fail the next N starts before becoming ready
        self.crashes: list[float] = []
        self.ready = 0
        self._became_ready = trio.Event()

    async def wait_ready(self, times: int) -> None:
        """Wait until the child has become ready `times` times in all."""
        while self.ready < times:
            await self._became_ready.wait()

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        self.starts.append(trio.current_time())
        if self.crash_on_start:
            self.crash_on_start -= 1
            raise RuntimeError(f"{self.name} could not start")
        task_status.started()
        self.ready += 1
        self._became_ready.set()
        self._became_ready = trio.Event()
        try:
            await self.crash_now.wait()
        except trio.Cancelled:
            self.stops += 1
            raise
        self.crash_now = trio.Event()
        self.crashes.append(trio.current_time())
        raise RuntimeError(f"{self.name} crashed")

    def spec(self, **kwargs: Any) -> ChildSpec:
        return ChildSpec(self.name, self.run, **kwargs)


def no_jitter(**kwargs: Any) -> Backoff:
    return Backoff(jitter=0.0, rng=random.Random(0), **kwargs)


class RecordingMetrics:
    def __init__(self) -> None:
        self.up: dict[str, bool] = {}
        self.restarts: dict[str, int] = {}

    def child_up(self, name: str, up: bool) -> None:
        self.up[name] = up

    def child_restarted(self, name: str) -> None:
        self.restarts[name] = self.restarts.get(name, 0) + 1

    def child_removed(self, name: str) -> None:
        self.up.pop(name, None)


async def test_crashing_child_restarts_with_backoff_while_sibling_keeps_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """one_for_one: only the crashed child restarts (after 0.5 s, then 1 s); its sibling stays."""
    flaky, steady = Child("flaky"), Child("steady")
    metrics = RecordingMetrics()
    sup = Supervisor(
        "core", [flaky.spec(), steady.spec()], backoff=no_jitter(), period=1.0, metrics=metrics
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        t0 = flaky.starts[0]
        flaky.crash_now.set()
        await flaky.wait_ready(2)
        flaky.crash_now.set()
        await flaky.wait_ready(3)
        assert [round(t - t0, 2) for t in flaky.starts] == [0.0, 0.5, 1.5]
        assert len(steady.starts) == 1
        assert steady.stops == 0
        assert sup.child("flaky").restarts == 2
        assert sup.child("flaky").incarnation == 3
        assert sup.child("steady").incarnation == 1
        assert metrics.restarts == {"flaky": 2}
        assert metrics.up == {"flaky": True, "steady": True}
        await sup.stop()
    assert metrics.up == {"flaky": False, "steady": False}


async def test_rest_for_one_restarts_later_siblings_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """rest_for_one: a crash restarts the crashed child and those started after it, in order."""
    first, middle, last = Child("store"), Child("desk"), Child("http")
    sup = Supervisor(
        "root",
        [first.spec(), middle.spec(), last.spec()],
        strategy=Strategy.REST_FOR_ONE,
        backoff=no_jitter(),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        middle.crash_now.set()
        await last.wait_ready(2)
        assert len(first.starts) == 1
        assert first.stops == 0
        assert len(middle.starts) == 2
        assert last.stops == 1
        assert middle.starts[1] <= last.starts[1]
        assert sup.all_running
        await sup.stop()


async def test_exceeding_restart_intensity_escalates_to_the_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """More than `intensity` restarts within `period` fails the supervisor and its children."""
    looping, sibling = Child("looping"), Child("sibling")
    sup = Supervisor(
        "core",
        [looping.spec(), sibling.spec()],
        intensity=2,
        period=10.0,
        backoff=no_jitter(initial=0.1),
    )

    async def crash_forever() -> None:
        for incarnation in range(1, 100):
            await looping.wait_ready(incarnation)
            looping.crash_now.set()

    with pytest.RaisesGroup(RestartIntensityExceeded, flatten_subgroups=True) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            nursery.start_soon(crash_forever)
    error = unwrap_exception_group(caught.value)
    assert "more than 2 restarts in 10s" in str(error)
    assert len(looping.starts) == 3
    assert sibling.stops == 1


async def test_backoff_resets_after_a_healthy_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child that stayed up for `healthy_after` seconds restarts after the initial delay again."""
    child = Child("erp")
    sup = Supervisor("int", [child.spec()], backoff=no_jitter(healthy_after=60.0), period=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for incarnation in (2, 3, 4):
            child.crash_now.set()
            await child.wait_ready(incarnation)
        await trio.sleep(61)
        child.crash_now.set()
        await child.wait_ready(5)
        restarts = zip(child.crashes, child.starts[1:], strict=True)
        delays = [start - crash for crash, start in restarts]
        assert [round(d, 2) for d in delays] == [0.5, 1.0, 2.0, 0.5]
        await sup.stop()


async def test_jitter_keeps_delays_within_bounds() -> None:
    """Jittered delays stay within +-jitter of the nominal exponential delay and cap at maximum."""
    backoff = Backoff(initial=0.5, factor=2, maximum=30, jitter=0.2, rng=random.Random(7))
    for attempt in range(12):
        nominal = min(30.0, 0.5 * 2**attempt)
        assert 0.8 * nominal <= backoff.delay(attempt) <= 1.2 * nominal


async def test_child_failing_at_first_start_fails_the_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A child that cannot start when the supervisor starts fails the start (no READY)."""
    broken = Child("store", crash_on_start=1)
    sup = Supervisor("root", [broken.spec()])
    with pytest.RaisesGroup(
        pytest.RaisesExc(RuntimeError, match="could not start"), flatten_subgroups=True
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
    assert sup.child("store").state == "failed"


async def test_crash_during_restart_start_up_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After the first start, a child that fails while starting is retried with backoff."""
    child = Child("erp")
    sup = Supervisor("int", [child.spec()], backoff=no_jitter(), period=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        child.crash_on_start = 1
        child.crash_now.set()
        await child.wait_ready(2)
        assert len(child.starts) == 3
        assert sup.child("erp").restarts == 2
        await sup.stop()


async def test_children_can_be_added_replaced_and_removed_at_run_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Run-time changes touch only the named child; the others keep their incarnation."""
    a, b, b2, c = Child("a"), Child("b"), Child("b"), Child("c")
    sup = Supervisor("int", [a.spec(), b.spec()])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.add_child(c.spec())
        await sup.replace_child(b2.spec())
        await sup.remove_child("a")
        assert [ch.name for ch in sup.children()] == ["b", "c"]
        assert b.stops == 1
        assert a.stops == 1
        assert len(b2.starts) == 1
        assert sup.child("b").incarnation == 2
        assert sup.child("c").incarnation == 1
        with pytest.raises(ValueError, match="already has a child 'c'"):
            await sup.add_child(Child("c").spec())
        await sup.stop()


async def test_stop_is_ordered_in_reverse(autojump_clock: trio.testing.MockClock) -> None:
    """Children stop last-started first, so the store outlives everything that writes to it."""
    order: list[str] = []

    def child(name: str) -> ChildSpec:
        async def run(*, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                order.append(name)

        return ChildSpec(name, run)

    sup = Supervisor("root", [child("store"), child("core"), child("http")])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.stop()
    assert order == ["http", "core", "store"]


async def test_draining_child_gets_its_shutdown_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`stop` asks a child to drain; it is cancelled only after `shutdown_timeout`."""
    drained = trio.Event()
    finished_at: list[float] = []

    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await drained.wait()
        await trio.sleep(2)  # flushing its mailbox
        finished_at.append(trio.current_time())

    async def drain() -> None:
        drained.set()

    sup = Supervisor("root", [ChildSpec("desk", run, stop=drain, shutdown_timeout=5)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        start = trio.current_time()
        await sup.stop()
    assert [round(t - start, 2) for t in finished_at] == [2.0]


async def test_transient_child_that_returns_is_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A transient child that finishes its work normally stays stopped."""

    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    sup = Supervisor("int", [ChildSpec("once", run, restart=Restart.TRANSIENT)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(5)
        assert sup.child("once").state == "stopped"
        assert sup.child("once").incarnation == 1
        await sup.stop()


async def test_cancellation_is_not_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    """Cancelling the supervisor's scope stops children without counting restarts."""
    child = Child("a")
    sup = Supervisor("root", [child.spec()])
    with trio.move_on_after(1):
        await sup.run()
    assert child.stops == 1
    assert sup.child("a").restarts == 0
