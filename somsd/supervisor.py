"""OTP-style supervision for trio tasks.

A `Supervisor` starts its children in order, restarts the ones that crash and stops them in
reverse order. It follows Erlang/OTP's `supervisor` where that fits trio:

- strategies `one_for_one` (restart only the crashed child) and `rest_for_one` (also restart
  every child started after it, because they depend on it: the event store before the actors
  that append to it);
- restart intensity: more than `intensity` restarts within `period` seconds means the fault is
  not transient; the supervisor stops its children and raises `RestartIntensityExceeded`, which
  its parent treats as a crash of the supervisor (escalation). At the root the process exits
  non-zero and systemd restarts it;
- unlike OTP, an exponential backoff with jitter between restarts, so a child hammering a dead
  upstream does not spin. Backoff hides slow crash loops from the intensity window, so it resets
  only after a child has stayed up for `healthy_after` seconds, and every restart is counted in
  `somsd_actor_restarts_total` for alerting.

Only `Exception` counts as a crash; `trio.Cancelled` and `KeyboardInterrupt` propagate. Children
can be added, removed and replaced while the supervisor runs (config reload).
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import trio

from somsd.errors import unwrap_exception_group

__all__ = [
    "Backoff",
    "ChildInfo",
    "ChildSpec",
    "Restart",
    "RestartIntensityExceeded",
    "Strategy",
    "Supervisor",
    "SupervisorMetrics",
]

log = structlog.get_logger("somsd.supervisor")


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.Enum):
    PERMANENT = "permanent"  # always restarted; what almost every actor is
    TRANSIENT = "transient"  # restarted only after a crash, a clean return ends it
    TEMPORARY = "temporary"  # never restarted


class RestartIntensityExceeded(Exception):  # after OTP's "reached_max_restart_intensity"
    def __init__(self, supervisor: str, restarts: int, period: float, last: BaseException) -> None:
        super().__init__(
            f"supervisor {supervisor!r}: more than {restarts - 1} restarts in {period:g}s; "
            f"last crash: {type(last).__name__}: {last}"
        )
        self.supervisor = supervisor
        self.last = last


class _StartFunction(Protocol):
    def __call__(self, *, task_status: trio.TaskStatus[Any]) -> Awaitable[None]: ...


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child: `start(task_status=...)` calls `task_status.started()` when ready."""

    name: str
    start: _StartFunction
    restart: Restart = Restart.PERMANENT
    # How long a stopping child may take to finish (drain, final commit) before it is cancelled
    # hard. Ten seconds matches the unit's TimeoutStopSec budget with room for the rest.
    shutdown_timeout: float = 10.0
    # Awaited before the child's task is cancelled, so a child that can drain (stop accepting,
    # flush its mailbox, stop its own children in order) gets the chance to exit on its own.
    stop: Callable[[], Awaitable[None]] | None = None


@dataclass
class Backoff:
    """Exponential backoff with full-range jitter of +-`jitter` around the nominal delay."""

    initial: float = 0.5  # first retry soon: most crashes are a dropped connection
    factor: float = 2.0
    maximum: float = 30.0  # a dead upstream is retried at least twice a minute
    jitter: float = 0.2  # spreads restarts of many channels hitting the same outage
    healthy_after: float = 60.0  # up this long => the next crash starts from `initial` again
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        nominal = min(self.maximum, self.initial * self.factor**attempt)
        return nominal * self.rng.uniform(1 - self.jitter, 1 + self.jitter)


class SupervisorMetrics(Protocol):
    def child_up(self, name: str, up: bool) -> None: ...
    def child_restarted(self, name: str) -> None: ...
    def child_removed(self, name: str) -> None: ...


class _NoMetrics:
    def child_up(self, name: str, up: bool) -> None:
        pass

    def child_restarted(self, name: str) -> None:
        pass

    def child_removed(self, name: str) -> None:
        pass


@dataclass(frozen=True)
class ChildInfo:
    name: str
    state: str  # starting | running | backoff | stopping | stopped | failed
    restarts: int
    incarnation: int  # increases by one each time the child's task is started
    started_at: float | None  # time.time() of the current incarnation's start


class _Cell:
    """The supervisor's bookkeeping for one child across its incarnations."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state = "stopped"
        self.restarts = 0
        self.incarnation = 0
        self.attempt = 0  # consecutive restarts without a healthy period, for the backoff
        self.started_at: float | None = None
        self.started_clock = 0.0
        self.scope: trio.CancelScope | None = None
        self.finished = trio.Event()
        self.finished.set()
        self.stopping = False
        self.pending_restart: trio.CancelScope | None = None

    def info(self) -> ChildInfo:
        return ChildInfo(
            self.spec.name, self.state, self.restarts, self.incarnation, self.started_at
        )


class _ChildExited:
    __slots__ = ("cell", "error", "incarnation")

    def __init__(self, cell: _Cell, incarnation: int, error: Exception | None) -> None:
        self.cell = cell
        self.incarnation = incarnation
        self.error = error


class _ReadySignal:
    """Stands in for trio's TaskStatus so the supervisor learns when a child is ready."""

    def __init__(self, outer: trio.TaskStatus[Any], on_ready: Callable[[], None]) -> None:
        self._outer = outer
        self._on_ready = on_ready
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        self._on_ready()
        self._outer.started(value)


class Supervisor:
    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 3,
        period: float = 5.0,
        backoff: Backoff | None = None,
        metrics: SupervisorMetrics | None = None,
    ) -> None:
        names = [c.name for c in children]
        if len(set(names)) != len(names):
            raise ValueError(f"supervisor {name!r}: duplicate child names in {names}")
        self.name = name
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.backoff = backoff or Backoff()
        self.metrics: SupervisorMetrics = metrics or _NoMetrics()
        self._cells: list[_Cell] = [_Cell(spec) for spec in children]
        self._restart_times: deque[float] = deque()
        self._nursery: trio.Nursery | None = None
        self._exits_send, self._exits_recv = trio.open_memory_channel[_ChildExited](math.inf)
        # Changes to the child list (reload, restarts) are serialised so a rest_for_one restart
        # never interleaves with a replace of the same children.
        self._lock = trio.Lock()
        self._stopped = False

    # -- queries ---------------------------------------------------------------------------

    def children(self) -> list[ChildInfo]:
        return [cell.info() for cell in self._cells]

    def child(self, name: str) -> ChildInfo:
        return self._cell(name).info()

    @property
    def all_running(self) -> bool:
        return all(c.state == "running" for c in self._cells if c.spec.restart is Restart.PERMANENT)

    # -- life cycle ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every child in order, then supervise until stopped, cancelled or failed."""
        self._stopped = False
        self._restart_times.clear()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                async with self._lock:
                    for cell in list(self._cells):
                        await self._start(cell, initial=True)
                task_status.started()
                async for exited in self._exits_recv:
                    await self._handle_exit(exited)
        finally:
            self._nursery = None
            for cell in self._cells:
                if cell.state != "failed":
                    cell.state = "stopped"
                self.metrics.child_up(cell.spec.name, False)

    async def stop(self) -> None:
        """Stop all children in reverse start order, each within its shutdown timeout."""
        async with self._lock:
            self._stopped = True
            for cell in reversed(self._cells):
                await self._stop(cell)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def add_child(self, spec: ChildSpec) -> None:
        async with self._lock:
            if any(c.spec.name == spec.name for c in self._cells):
                raise ValueError(f"supervisor {self.name!r} already has a child {spec.name!r}")
            cell = _Cell(spec)
            self._cells.append(cell)
            await self._start(cell)

    async def remove_child(self, name: str) -> None:
        async with self._lock:
            cell = self._cell(name)
            await self._stop(cell)
            self._cells.remove(cell)
            self.metrics.child_removed(name)

    async def replace_child(self, spec: ChildSpec) -> None:
        """Stop the child of the same name and start `spec` in its place (same position)."""
        async with self._lock:
            old = self._cell(spec.name)
            await self._stop(old)
            cell = _Cell(spec)
            cell.restarts = old.restarts
            cell.incarnation = old.incarnation
            self._cells[self._cells.index(old)] = cell
            await self._start(cell)

    # -- internals -------------------------------------------------------------------------

    def _cell(self, name: str) -> _Cell:
        for cell in self._cells:
            if cell.spec.name == name:
                return cell
        raise KeyError(f"supervisor {self.name!r} has no child {name!r}")

    async def _start(self, cell: _Cell, *, initial: bool = False) -> None:
        """Start one incarnation and wait until it is ready.

        A child that cannot start when the supervisor itself starts fails the supervisor, as in
        OTP: a daemon whose event store cannot open must not report READY. Later, a crash during
        start-up is handled like any other crash (backoff, intensity).
        """
        assert self._nursery is not None
        cell.incarnation += 1
        cell.state = "starting"
        cell.stopping = False
        cell.finished = trio.Event()
        try:
            await self._nursery.start(self._run_child, cell, cell.incarnation)
        except Exception as exc:
            cell.finished.set()
            if initial:
                cell.state = "failed"
                raise
            self._exits_send.send_nowait(_ChildExited(cell, cell.incarnation, exc))

    async def _run_child(
        self, cell: _Cell, incarnation: int, *, task_status: trio.TaskStatus[None]
    ) -> None:
        status = _ReadySignal(task_status, lambda: self._mark_running(cell))
        bound = structlog.contextvars.bound_contextvars(actor=cell.spec.name)
        try:
            with bound, trio.CancelScope() as scope:
                cell.scope = scope
                cell.started_at = time.time()
                cell.started_clock = trio.current_time()
                try:
                    await cell.spec.start(task_status=status)
                except Exception as exc:
                    if not status.done:
                        raise  # nursery.start re-raises it in _start
                    self._exits_send.send_nowait(_ChildExited(cell, incarnation, exc))
                    return
                if not status.done:
                    raise RuntimeError(f"child {cell.spec.name!r} returned before it was ready")
                self._exits_send.send_nowait(_ChildExited(cell, incarnation, None))
        finally:
            cell.finished.set()

    def _mark_running(self, cell: _Cell) -> None:
        cell.state = "running"
        self.metrics.child_up(cell.spec.name, True)

    async def _stop(self, cell: _Cell) -> None:
        if cell.pending_restart is not None:
            cell.pending_restart.cancel()
            cell.pending_restart = None
        if cell.finished.is_set():
            cell.state = "stopped"
            self.metrics.child_up(cell.spec.name, False)
            return
        cell.stopping = True
        cell.state = "stopping"
        if cell.spec.stop is not None:
            with trio.move_on_after(cell.spec.shutdown_timeout):
                await cell.spec.stop()
                await cell.finished.wait()
        if cell.scope is not None:
            cell.scope.cancel()
        await cell.finished.wait()
        cell.state = "stopped"
        self.metrics.child_up(cell.spec.name, False)

    async def _handle_exit(self, exited: _ChildExited) -> None:
        cell = exited.cell
        if cell not in self._cells or exited.incarnation != cell.incarnation or cell.stopping:
            return  # an incarnation we stopped on purpose, or one already replaced
        self.metrics.child_up(cell.spec.name, False)
        error = exited.error
        if error is None:
            if cell.spec.restart is not Restart.PERMANENT:
                cell.state = "stopped"
                log.info("child_exited", child=cell.spec.name, supervisor=self.name)
                return
            error = RuntimeError(f"permanent child {cell.spec.name!r} returned")
        elif cell.spec.restart is Restart.TEMPORARY:
            cell.state = "failed"
            log.error(
                "child_crashed",
                child=cell.spec.name,
                supervisor=self.name,
                exc_info=unwrap_exception_group(error),
            )
            return
        self._record_restart(cell, error)
        now = trio.current_time()
        if now - cell.started_clock >= self.backoff.healthy_after:
            cell.attempt = 0
        delay = self.backoff.delay(cell.attempt)
        cell.attempt += 1
        cell.restarts += 1
        cell.state = "backoff"
        self.metrics.child_restarted(cell.spec.name)
        log.error(
            "child_crashed",
            child=cell.spec.name,
            supervisor=self.name,
            restart_in=round(delay, 3),
            restarts=cell.restarts,
            exc_info=unwrap_exception_group(error),
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._restart_after, cell, delay)

    def _record_restart(self, cell: _Cell, error: BaseException) -> None:
        now = trio.current_time()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.period:
            self._restart_times.popleft()
        if len(self._restart_times) > self.intensity:
            cell.state = "failed"
            raise RestartIntensityExceeded(
                self.name, len(self._restart_times), self.period, unwrap_exception_group(error)
            )

    async def _restart_after(self, cell: _Cell, delay: float) -> None:
        with trio.CancelScope() as scope:
            cell.pending_restart = scope
            await trio.sleep(delay)
            async with self._lock:
                cell.pending_restart = None
                if self._stopped or cell not in self._cells:
                    return
                dependents: list[_Cell] = []
                if self.strategy is Strategy.REST_FOR_ONE:
                    dependents = self._cells[self._cells.index(cell) + 1 :]
                    for later in reversed(dependents):
                        await self._stop(later)
                await self._start(cell)
                for later in dependents:
                    await self._start(later)
