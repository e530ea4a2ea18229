"""`OutboxDispatcher`: delivers the event store's outbox to the systems it names.

Every effect on an external system (a fulfilment to a warehouse, tracking to a shop) is written
to the outbox in the same transaction as the events that caused it (architecture.md, "Event
log"). This actor turns those rows into requests:

- **Deliverers per target.** An actor that can reach a system registers a deliverer for its
  target (`location/wh-1`, `channel/shop`): an async callable taking the `OutboxEntry` that
  raises `adapters.errors.TransientUpstreamError` / `PermanentUpstreamError` on failure. The
  dispatcher knows no adapter; the two error kinds are its whole retry policy. An entry whose
  target has no deliverer (its actor is restarting, or not configured yet) waits, pending and
  with its attempt budget untouched, and is logged once per target.
- **Outcome.** Success -> `mark_delivered`. A transient error, or any other `Exception` (logged
  with its traceback: a bug in a deliverer must not lose the entry) -> `schedule_retry` with
  exponential backoff and jitter, at least the upstream's `Retry-After`. A permanent error, or
  the last allowed attempt failing -> `mark_dead`, visible at `GET /v1/dead-letters`.
- **No double delivery.** An entry is in flight at most once: the dispatcher keeps the ids it
  is delivering and only forgets one after its outcome is committed, so a rescan while the
  request runs skips it; a scan whose read began before an outcome was committed skips that
  entry too, since its snapshot may still show it pending. (Across a crash, or when an outcome
  cannot be written, an entry is sent again; every deliverer passes the entry's idempotency
  key upstream, which is what makes that harmless.)
- **Fairness.** At most `per_target` deliveries run at once per target, so a slow warehouse
  holds four connections, not the whole dispatcher, and other targets keep flowing.
- **Wake-ups.** Actors call `wake()` after committing outbox items, which starts a scan at once;
  a bounded `poll_interval` (1 s) rescans anyway, which is how retries become due and how an
  append whose writer forgot to wake us is still delivered. A scan reads up to `page_size` due
  entries of each target; when a delivery ends, the next entry of its target starts from what
  that scan read, and only a target whose share ran out asks for a new scan. So a catalogue's
  3,000 stock pushes cost ~50 scans, not 3,000, and never hide another target's entries.

- **Several daemons.** With `[cluster]` on PostgreSQL the daemon gives the dispatcher
  `claims` (`OutboxClaims`, actors/outbox_claims.py): each target is then delivered only by the
  member holding the lease of the duty that owns it, its due rows are claimed `FOR UPDATE SKIP
  LOCKED` under the lease's fencing token rather than read, every outcome is written under that
  token (a member that lost the lease records nothing; the new owner sends the entry again, with
  the same idempotency key), each request runs inside the lease (losing it cancels the request
  before anyone else can be granted it), and other members' new entries wake it through
  PostgreSQL's LISTEN/NOTIFY. Without, nothing of this runs and nothing changes.

Metrics: `somsd_upstream_requests_total{system,outcome}` (outcome delivered|retry|dead for
deliveries; the location actors add ok|retry|failed for their reads),
`somsd_upstream_request_seconds{system}`, `somsd_upstream_up{system}` and
`somsd_outbox_delivery_attempts_total{target,outcome}` (delivered|transient|unexpected|
permanent|exhausted). `system` is the target name, so a location's deliveries and polls share
one series and one availability state.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.errors import PermanentUpstreamError, UpstreamError
from somsd.store import Clock, EventStore, OutboxEntry, StoreError, utc_now
from somsd.supervisor import Backoff

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_PER_TARGET",
    "DEFAULT_POLL_INTERVAL",
    "MAX_RETRY_AFTER",
    "UNAVAILABLE_AFTER",
    "Deliver",
    "DispatcherStatus",
    "OutboxClaims",
    "OutboxDispatcher",
    "OutcomeNotRecorded",
    "UpstreamMonitor",
]

log = structlog.get_logger("actors.outbox")

Deliver = Callable[[OutboxEntry], Awaitable[None]]
"""Delivers one entry or raises; `TransientUpstreamError` retries, `PermanentUpstreamError`
parks it. Must send `entry.idempotency_key` upstream where the protocol accepts one."""

# Retry schedule: 1 s, 2 s, 4 s ... doubling to a 5-minute cap, +-20 % jitter. 1 s first
# because most failures are a dropped connection or one 5xx that the next try gets through;
# the 5-minute cap bounds how long a delivery waits after its upstream is back, while keeping a
# dead upstream at <= 12 requests an hour per entry (the per-target limit bounds the rest).
# The jitter spreads the retries of entries that failed together in one outage.
DEFAULT_BACKOFF: Final = Backoff(initial=1.0, factor=2.0, maximum=300.0, jitter=0.2)
# 20 attempts: 19 waits of 1+2+...+256 s (511 s) and ten of 300 s add up to ~58 minutes, so an
# entry is parked after about an hour of failures. An hour rides out a WMS restart, a deploy or
# a short maintenance window without an operator; anything longer is an incident someone must
# look at anyway (the dead-letter gauge alerts), and parked entries are one POST from retrying.
DEFAULT_MAX_ATTEMPTS: Final = 20
# Four requests in flight per upstream: enough to hide a 200 ms round trip at a few deliveries a
# second, few enough that a slow or dying WMS is not hit by a stampede, and well inside the
# connection limits the location actors give their httpx clients.
DEFAULT_PER_TARGET: Final = 4
# The safety-net rescan. One indexed query of the pending rows (sub-millisecond plus a ~100 us
# thread hop) per second is noise, and a second is the longest an entry can wait past its due
# time or after an append nobody woke us for.
DEFAULT_POLL_INTERVAL: Final = 1.0
# Due entries read per target and scan. The dispatcher works through them as slots free up and
# reads again when a target's share runs out, so this is how often a busy target costs a scan
# (every ~60 deliveries), not a bound on anything.
DEFAULT_PAGE_SIZE: Final = 64
# An upstream asking for more than an hour's pause (Retry-After) is misconfigured; we still
# back off that long at most, so the attempt budget is not burned in a few minutes either.
MAX_RETRY_AFTER: Final = 3600.0
# Writing an outcome after the request finished: shielded from shutdown (a delivered entry must
# be marked, or it is sent again), but bounded so a wedged store cannot hold the stop forever.
# Five seconds is the store's own drain budget.
OUTCOME_WRITE_DEADLINE: Final = 5.0
# Transient failures in a row before an upstream counts as unavailable (see UpstreamMonitor).
UNAVAILABLE_AFTER: Final = 3
# last_error is shown to operators; adapter messages are a line, but an unexpected exception's
# text is not under our control.
ERROR_TEXT_LIMIT: Final = 1000


class UpstreamMonitor:
    """Request metrics per upstream system and Home Assistant's `log-when-unavailable` rule.

    Shared by the dispatcher (deliveries) and the location actors (polls), keyed by the target
    name, so one outage of `location/wh-1` is one warning when it starts and one info line when
    it ends, however many tasks notice it.

    A system counts as unavailable after `unavailable_after` transient failures in a row with
    no success between them: one 5xx or one dropped keep-alive connection among successes is a
    blip the retry absorbs, and logging each would turn a flaky-but-working upstream into a
    stream of down/up pairs. Three in a row (several requests, or a request and its retries)
    is an outage.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        unavailable_after: int = UNAVAILABLE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if unavailable_after < 1:
            raise ValueError(f"unavailable_after is {unavailable_after}; it must be at least 1")
        self.requests = Counter(
            "somsd_upstream_requests",
            "Requests to external systems by outcome (delivered, retry, dead for outbox "
            "deliveries; ok, retry, failed for reads such as polls and stock fetches).",
            ["system", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "somsd_upstream_request_seconds",
            "Duration of requests to external systems, failures included.",
            ["system"],
            registry=registry,
            # From a loopback answer (ms) to the 30 s read timeout the location clients use.
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.up = Gauge(
            "somsd_upstream_up",
            "0 while the system is unavailable (transient failures in a row), else 1.",
            ["system"],
            registry=registry,
        )
        self.unavailable_after = unavailable_after
        self._clock = clock
        self._failures: dict[str, int] = {}  # consecutive transient failures per system
        self._down_since: dict[str, float] = {}

    def observe(self, system: str, outcome: str, seconds: float) -> None:
        self.requests.labels(system, outcome).inc()
        self.seconds.labels(system).observe(seconds)

    def is_available(self, system: str) -> bool:
        return system not in self._down_since

    def unavailable(self, system: str, error: str) -> None:
        """A request failed in a way that says "not reachable now" (timeout, refused, 5xx)."""
        failures = self._failures.get(system, 0) + 1
        self._failures[system] = failures
        if failures < self.unavailable_after or system in self._down_since:
            return
        self._down_since[system] = self._clock()
        self.up.labels(system).set(0)
        log.warning("upstream_unavailable", system=system, failures=failures, error=error)

    def available(self, system: str) -> None:
        """The system answered; logs once if it had been unavailable."""
        self._failures.pop(system, None)
        self.up.labels(system).set(1)
        since = self._down_since.pop(system, None)
        if since is not None:
            log.info(
                "upstream_available_again",
                system=system,
                down_seconds=round(self._clock() - since, 3),
            )


class OutcomeNotRecorded(Exception):
    """An outcome could not be written (store or cluster unreachable, lease lost): the entry
    stays pending and is sent again, with the same idempotency key."""


class OutboxClaims(Protocol):
    """How a member of a cluster takes its share of the outbox (`actors/outbox_claims.py`).

    With claims, the dispatcher delivers only the targets whose lease this member holds,
    claims their due rows under the lease's fencing token instead of reading them, writes
    every outcome under that token, and runs each delivery inside the lease (losing it cancels
    the request). Without (one daemon, SQLite), it reads and marks through the store."""

    def owns(self, target: str) -> bool:
        """Whether this member delivers `target` now (holds the lease of its duty)."""
        ...

    async def claim(
        self, wanted: Mapping[str, int], *, now: datetime
    ) -> dict[str, list[OutboxEntry]]:
        """Claim up to `wanted[target]` due entries of each target; entries per target."""
        ...

    def bound(self, target: str, scope: trio.CancelScope) -> AbstractContextManager[None]:
        """Tie a delivery's cancel scope to the lease of `target`'s duty."""
        ...

    async def delivered(self, entry: OutboxEntry) -> None: ...

    async def retry(self, entry: OutboxEntry, *, error: str, next_attempt_at: datetime) -> None: ...

    async def dead(self, entry: OutboxEntry, *, error: str) -> None: ...

    async def run(
        self,
        wake: Callable[[Collection[str] | None], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Its own tasks, as a child of the dispatcher's run; calls `wake(targets)` when other
        members add entries (None: any target may have some)."""
        ...


class DispatcherStatus(msgspec.Struct, frozen=True):
    """What the dispatcher is doing right now (for `somsd status` and tests)."""

    targets: tuple[str, ...]  # targets with a registered deliverer
    in_flight: dict[str, int]  # deliveries running, per target
    waiting: tuple[str, ...]  # targets with due entries but no deliverer


@dataclass
class _Registration:
    deliver: Deliver
    limit: int | None = None  # deliveries at once for this target; None: `per_target`
    # Cancel scopes of this target's running deliveries: unregistering cancels them, so a
    # stopping location actor's requests end now instead of on its closed HTTP client.
    scopes: set[trio.CancelScope] = field(default_factory=set)


class OutboxDispatcher:
    """Delivers due outbox entries through per-target deliverers; see the module docstring.

    Not an `Actor` subclass: its input is the outbox table, not messages, and the one thing
    others tell it (`wake()`) is a flag, not a request, so it needs no mailbox.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        registry: CollectorRegistry | None = None,
        upstream: UpstreamMonitor | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        per_target: int = DEFAULT_PER_TARGET,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        page_size: int = DEFAULT_PAGE_SIZE,
        now: Clock = utc_now,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts is {max_attempts}; it must be at least 1")
        if per_target < 1:
            raise ValueError(f"per_target is {per_target}; it must be at least 1")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval is {poll_interval}; it must be above 0 seconds")
        self.name = "dispatcher"
        self.store = store
        self.upstream = upstream or UpstreamMonitor(registry)
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.per_target = per_target
        self.poll_interval = poll_interval
        self.page_size = page_size
        self._now = now
        self.attempts = Counter(
            "somsd_outbox_delivery_attempts",
            "Outbox delivery attempts by target and outcome (delivered, transient, unexpected, "
            "permanent, exhausted).",
            ["target", "outcome"],
            registry=registry,
        )
        self._registrations: dict[str, _Registration] = {}
        self._in_flight: set[int] = set()
        # Entry id -> number of the scan that was running when its outcome was written. A scan
        # whose read began before that write may still see the entry as pending: it must not
        # start it again (see `_start_deliveries`).
        self._settled: dict[int, int] = {}
        self._scans = 0
        # What the last scan read and has not started yet, per target; `_backlog_scan` is
        # that scan's number, `_backlog_full` the targets whose share filled the page (more
        # may be due behind it).
        self._backlog: dict[str, deque[OutboxEntry]] = {}
        self._backlog_scan = 0
        self._backlog_full: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._active: dict[str, int] = {}
        self._waiting: set[str] = set()  # targets logged as lacking a deliverer
        self._woken = trio.Event()
        # Set by the daemon with [cluster] on PostgreSQL (see `OutboxClaims`); None: this
        # daemon delivers every target it has a deliverer for, reading through the store.
        self.claims: OutboxClaims | None = None

    # -- what other actors call ---------------------------------------------------------

    def register(self, target: str, deliver: Deliver, *, limit: int | None = None) -> None:
        """Deliver `target`'s entries through `deliver` from now on (replaces an older one).

        `limit` overrides `per_target` for this target (a shop whose stock sync may run more
        PATCHes at once, by its config)."""
        old = self._registrations.get(target)
        if old is not None:
            self._cancel(old)
        self._registrations[target] = _Registration(deliver, limit)
        if target in self._waiting:
            self._waiting.discard(target)
            log.info("outbox_target_deliverer_registered", target=target)
        self.wake()

    def unregister(self, target: str, deliver: Deliver | None = None) -> None:
        """Stop delivering `target`; its entries wait. Running deliveries are cancelled (the
        entries stay pending and are sent again, with the same idempotency key, later).

        With `deliver`, only that registration is removed: a replaced actor stopping after
        its successor registered must not unregister the successor.
        """
        registration = self._registrations.get(target)
        if registration is None or (deliver is not None and registration.deliver != deliver):
            return
        del self._registrations[target]
        self._cancel(registration)

    def wake(self) -> None:
        """Scan for due entries now; call after committing outbox items. Never blocks."""
        self._woken.set()

    def wake_for(self, targets: Collection[str] | None) -> None:
        """Another member added entries of `targets` (None: unknown): scan if one is ours."""
        if targets is None or any(t in self._registrations for t in targets):
            self.wake()

    def status(self) -> DispatcherStatus:
        return DispatcherStatus(
            targets=tuple(sorted(self._registrations)),
            in_flight={t: n for t, n in sorted(self._active.items()) if n},
            waiting=tuple(sorted(self._waiting)),
        )

    # -- the loop -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Scan and deliver until cancelled; deliveries run as child tasks of this one."""
        # A crashed run's deliveries died with its nursery: nothing is in flight any more.
        # (The supervisor binds `actor=` into the log context of this task.)
        self._in_flight.clear()
        self._active.clear()
        self._settled.clear()
        self._backlog.clear()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.claims is not None:
                await nursery.start(self.claims.run, self.wake_for)
            task_status.started()
            while True:
                # A fresh event before reading: a wake() while the read runs is not lost.
                self._woken = trio.Event()
                self._scans += 1
                scan = self._scans
                # Outcomes written before this scan began are in its snapshot: forget them.
                self._settled = {i: s for i, s in self._settled.items() if s >= scan}
                if self.claims is None:
                    due = await self.store.due_outbox_per_target(
                        per_target=self.page_size, now=self._now()
                    )
                    self._backlog = {target: deque(entries) for target, entries in due.items()}
                    self._backlog_full = {t for t, e in due.items() if len(e) >= self.page_size}
                else:
                    await self._claim(self.claims)
                self._backlog_scan = scan
                for target in list(self._backlog):
                    self._start_deliveries(target)
                with trio.move_on_after(self.poll_interval):
                    await self._woken.wait()

    async def _claim(self, claims: OutboxClaims) -> None:
        """A cluster member's scan: claim due entries of the targets it owns, up to a page of
        each with what it claimed before and has not started yet.

        Claimed entries are this member's until its lease ends, so the backlog is kept across
        scans (the next claim does not return them again); a target whose lease is gone drops
        its backlog, whose claims lapse with the lease for the next owner."""
        wanted: dict[str, int] = {}
        for target in list(self._backlog):
            if not claims.owns(target):
                del self._backlog[target]
        for target in self._registrations:
            if claims.owns(target):
                room = self.page_size - len(self._backlog.get(target, ()))
                if room > 0:
                    wanted[target] = room
        due = await claims.claim(wanted, now=self._now()) if wanted else {}
        for target, entries in due.items():
            backlog = self._backlog.setdefault(target, deque())
            known = {e.id for e in backlog} | self._in_flight
            backlog.extend(e for e in entries if e.id not in known)
        self._backlog_full = {t for t, e in due.items() if len(e) >= wanted.get(t, 0)}

    def _start_deliveries(self, target: str) -> None:
        """Start what the last scan read of `target`, as far as its limit allows; decided
        without awaiting, so no state can change between the checks and the starts.

        Dropped: entries in flight, and entries whose outcome was written while that scan's
        read ran: the read's snapshot may predate the write and show a delivered entry as
        still pending (seen under load as a second POST of a delivered fulfilment).
        """
        backlog = self._backlog.get(target)
        if not backlog:
            return
        registration = self._registrations.get(target)
        if registration is None:
            if target not in self._waiting:
                self._waiting.add(target)
                log.warning(
                    "outbox_target_has_no_deliverer",  # entries wait; nothing is lost
                    target=target,
                    entry_id=backlog[0].id,
                )
            return
        if self.claims is not None and not self.claims.owns(target):
            del self._backlog[target]  # the lease is gone; its claims lapse with it
            return
        assert self._nursery is not None
        limit = registration.limit or self.per_target
        while backlog and self._active.get(target, 0) < limit:
            entry = backlog.popleft()
            if entry.id in self._in_flight or self._settled.get(entry.id, 0) >= self._backlog_scan:
                continue
            self._in_flight.add(entry.id)
            self._active[target] = self._active.get(target, 0) + 1
            self._nursery.start_soon(self._deliver, entry, registration)

    def _slot_freed(self, target: str) -> None:
        """A delivery of `target` ended: start its next entry, or scan when none is left."""
        self._start_deliveries(target)
        if not self._backlog.get(target) and target in self._backlog_full:
            self._backlog_full.discard(target)
            self.wake()  # that scan's share is used up; more of this target may be due

    async def _deliver(self, entry: OutboxEntry, registration: _Registration) -> None:
        try:
            started = time.perf_counter()
            error: BaseException | None = None
            with trio.CancelScope() as scope:
                registration.scopes.add(scope)
                # In a cluster the request runs inside the lease: losing it cancels the request
                # before any other member can be granted the lease and claim the entry.
                lease = (
                    nullcontext() if self.claims is None else self.claims.bound(entry.target, scope)
                )
                try:
                    with lease:
                        await registration.deliver(entry)
                except Exception as exc:
                    error = exc
                finally:
                    registration.scopes.discard(scope)
            if scope.cancelled_caught:
                log.info("outbox_delivery_cancelled", target=entry.target, entry_id=entry.id)
                return
            elapsed = time.perf_counter() - started
            with trio.move_on_after(OUTCOME_WRITE_DEADLINE, shield=True):
                await self._record(entry, error, elapsed)
        finally:
            self._settled[entry.id] = self._scans
            self._in_flight.discard(entry.id)
            self._active[entry.target] -= 1
            self._slot_freed(entry.target)

    async def _record(
        self, entry: OutboxEntry, error: BaseException | None, elapsed: float
    ) -> None:
        target = entry.target
        attempt = entry.attempts + 1
        try:
            if error is None:
                await self._mark_delivered(entry)
                self._count(target, "delivered", "delivered", elapsed)
                self.upstream.available(target)
                return
            text = _error_text(error)
            if isinstance(error, PermanentUpstreamError):
                await self._mark_dead(entry, error=text)
                self._count(target, "dead", "permanent", elapsed)
                # It answered, if only to refuse: the upstream is reachable.
                self.upstream.available(target)
                log.error(
                    "outbox_entry_dead",
                    target=target,
                    entry_id=entry.id,
                    attempts=attempt,
                    error=text,
                )
                return
            if isinstance(error, UpstreamError):
                kind = "transient"
                self.upstream.unavailable(target, text)
            else:
                kind = "unexpected"
                log.error(
                    "outbox_deliverer_failed",  # a bug in the deliverer; the entry is retried
                    target=target,
                    entry_id=entry.id,
                    exc_info=error,
                )
            if attempt >= self.max_attempts:
                await self._mark_dead(
                    entry, error=f"gave up after {attempt} attempts; last error: {text}"
                )
                self._count(target, "dead", "exhausted", elapsed)
                log.error(
                    "outbox_entry_dead",
                    target=target,
                    entry_id=entry.id,
                    attempts=attempt,
                    error=text,
                )
                return
            delay = self.retry_delay(entry.attempts, error)
            await self._schedule_retry(
                entry, error=text, next_attempt_at=self._now() + timedelta(seconds=delay)
            )
            self._count(target, "retry", kind, elapsed)
            log.info(
                "outbox_delivery_retry",
                target=target,
                entry_id=entry.id,
                attempts=attempt,
                retry_in=round(delay, 3),
                error=text,
            )
        except (StoreError, OutcomeNotRecorded) as exc:
            # The outcome is not recorded, so the entry stays pending and is sent again: the
            # idempotency key makes the repeat harmless.
            log.warning(
                "outbox_outcome_not_recorded", target=target, entry_id=entry.id, error=str(exc)
            )

    async def _mark_delivered(self, entry: OutboxEntry) -> None:
        if self.claims is None:
            await self.store.mark_delivered(entry.id)
        else:
            await self.claims.delivered(entry)

    async def _mark_dead(self, entry: OutboxEntry, *, error: str) -> None:
        if self.claims is None:
            await self.store.mark_dead(entry.id, error=error)
        else:
            await self.claims.dead(entry, error=error)

    async def _schedule_retry(
        self, entry: OutboxEntry, *, error: str, next_attempt_at: datetime
    ) -> None:
        if self.claims is None:
            await self.store.schedule_retry(entry.id, error=error, next_attempt_at=next_attempt_at)
        else:
            await self.claims.retry(entry, error=error, next_attempt_at=next_attempt_at)

    def retry_delay(self, failed_before: int, error: BaseException) -> float:
        """Seconds until the next attempt of an entry that had failed `failed_before` times."""
        delay = self.backoff.delay(failed_before)
        retry_after = error.retry_after if isinstance(error, UpstreamError) else None
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    def _count(self, target: str, outcome: str, kind: str, elapsed: float) -> None:
        self.upstream.observe(target, outcome, elapsed)
        self.attempts.labels(target, kind).inc()

    @staticmethod
    def _cancel(registration: _Registration) -> None:
        for scope in list(registration.scopes):
            scope.cancel()


def _error_text(error: BaseException) -> str:
    # Adapter errors are written for operators; anything else needs its type to make sense.
    text = str(error) if isinstance(error, UpstreamError) else f"{type(error).__name__}: {error}"
    return text[:ERROR_TEXT_LIMIT]
