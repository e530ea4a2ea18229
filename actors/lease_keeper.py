"""`LeaseKeeper`: holds this daemon's leases and runs each leased duty only while it holds one.

With `[cluster]` configured, several daemons share one PostgreSQL database and each singleton
duty (a channel poller with its reconciliation schedule, a location, a carrier, an ERP, the
mailer, the document renderer, the router) runs on exactly one of them. The
daemon wraps each such duty's start function with `run_while_leased(duty, start)`; the wrapper
reports ready at once (a standby duty is healthy), tells the keeper it wants the lease, and
runs the duty only while the keeper holds it:

- **Acquire.** The keeper asks for every wanted lease it does not hold. A lease held by another
  member is asked for again every `renew_every` (a clean stop releases it early) and at the
  moment it expires (the table says when), so a member that died is replaced within the TTL of
  its last renewal plus one round trip.
- **Renew.** Every `renew_every` one statement renews all held leases and writes the member's
  heartbeat (`somsd.cluster.postgres`).
- **Lose.** The duty runs in a cancel scope whose *deadline* is the end of the keeper's belief in
  the lease (`HeldLease.valid_until`: `ttl` less a drift allowance, counted from when the
  request was sent). Every renewal moves the deadline on; when renewals stop succeeding (the
  database is gone, this process was paused, someone else holds the lease) the duty is
  cancelled by trio's own clock, with no help from the keeper's task, before any other member
  can be granted the lease. The wrapper then waits for the next grant.
- **Release.** A clean stop (`stop()`, a removed or replaced section) gives the leases up at
  once, so another member takes over without waiting for the TTL. A crash or SIGKILL releases
  nothing: the leases lapse after the TTL.

Fencing: inside a leased duty, `current_lease()` names the duty and its token, and
`write_fenced(fn)` runs `fn` in a transaction that commits only under that token
(`somsd.cluster.postgres.fenced`).

Metrics: `somsd_cluster_leases_held{member}`, `somsd_cluster_lease_takeovers_total{duty}`,
`somsd_cluster_leases_lost_total{duty}`, `somsd_cluster_fenced_writes_refused_total{duty}`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any, ParamSpec, Protocol, TypeVar

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.requests import Request
from starlette.responses import Response

from somsd.api import ApiError, ApiRoute, json_response
from somsd.cluster import postgres
from somsd.cluster.client import ClusterUnavailable, LeaseClient
from somsd.cluster.lease import AcquireOutcome, HeldLease, LeaseRecord, LeaseRules
from somsd.cluster.postgres import Connection, StaleLeaseError
from somsd.config import ClusterConfig
from somsd.supervisor import ChildSpec

__all__ = [
    "CORE_CATCH_UP_EVERY",
    "ROUTING_DUTY",
    "ClusterReport",
    "LeaseGrant",
    "LeaseKeeper",
    "LeaseReport",
    "MemberReport",
    "cluster_routes",
    "current_lease",
    "gate",
    "lease_keeper_for",
    "lease_keeper_specs",
    "leased",
    "leased_children",
    "runs_here",
]

log = structlog.get_logger("actors.lease_keeper")

T = TypeVar("T")
P = ParamSpec("P")

# A refused member asks again this long after the holder's lease expires on the table clock:
# the round trip that told it the expiry took some time too, and asking early only costs a
# second round trip.
RETRY_AFTER_EXPIRY = 0.05
# A clean stop gives every lease up within this; an unreachable database must not hold the stop.
RELEASE_DEADLINE = 5.0


@dataclass(frozen=True)
class LeaseGrant:
    """The lease a duty runs under: its name and fencing token."""

    duty: str
    token: int


_current: contextvars.ContextVar[LeaseGrant | None] = contextvars.ContextVar(
    "somsd_lease", default=None
)


def current_lease() -> LeaseGrant | None:
    """The lease the calling task runs under (None outside a leased duty)."""
    return _current.get()


class _StartFunction(Protocol):
    def __call__(self, *, task_status: trio.TaskStatus[Any]) -> Awaitable[None]: ...


@dataclass(eq=False)
class _Duty:
    name: str
    users: int = 0  # wrappers wanting this lease (a replaced child overlaps its successor)
    held: HeldLease | None = None
    retry_at: float = -math.inf  # keeper clock: when to ask for it again after a refusal
    changed: trio.Event = field(default_factory=trio.Event)
    scopes: set[trio.CancelScope] = field(default_factory=set)

    def signal(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class MemberReport(msgspec.Struct, frozen=True):
    name: str
    started_at: datetime
    last_heartbeat: datetime
    alive: bool  # heard from within the lease TTL
    duties: tuple[str, ...]  # what it is configured to run
    owns: tuple[str, ...]  # the leases it holds now
    api_url: str | None = None  # where its API answers


class LeaseReport(msgspec.Struct, frozen=True):
    duty: str
    owner: str | None  # member name; None: free (nobody runs it)
    token: int
    expires_at: datetime | None


class ClusterReport(msgspec.Struct, frozen=True):
    member: str  # the daemon that answered
    at: datetime  # the database's clock
    lease_ttl: float
    members: tuple[MemberReport, ...]
    leases: tuple[LeaseReport, ...]


@dataclass
class _Cycle:
    released: list[str] = field(default_factory=list)
    renewed: set[str] = field(default_factory=set)
    acquired: dict[str, tuple[AcquireOutcome, LeaseRecord | None, float]] = field(
        default_factory=dict
    )


class LeaseMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.held = Gauge(
            "somsd_cluster_leases_held",
            "Leases this member holds now (each is a duty it runs).",
            ["member"],
            registry=registry,
        )
        self.takeovers = Counter(
            "somsd_cluster_lease_takeovers",
            "Leases this member took over from another member whose lease had expired.",
            ["duty"],
            registry=registry,
        )
        self.lost = Counter(
            "somsd_cluster_leases_lost",
            "Leases this member lost without giving them up (renewal failed or refused).",
            ["duty"],
            registry=registry,
        )
        self.fenced_refused = Counter(
            "somsd_cluster_fenced_writes_refused",
            "Writes refused because they were made under a stale lease token.",
            ["duty"],
            registry=registry,
        )


class LeaseKeeper:
    """Keeps this member's leases; see the module docstring."""

    def __init__(
        self,
        member: str,
        client: LeaseClient,
        rules: LeaseRules,
        *,
        registry: CollectorRegistry | None = None,
        metrics: LeaseMetrics | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.name = "cluster"
        self.member = member
        # The incarnation: a restarted daemon under the same name is another holder, so it
        # waits for its predecessor's leases to lapse instead of running beside a zombie.
        self.holder = f"{member}/{uuid.uuid4().hex[:12]}"
        self.client = client
        self.rules = rules
        self.metrics = metrics or LeaseMetrics(registry)
        self._clock = clock
        self._duties: dict[str, _Duty] = {}
        self._releases: list[tuple[str, int]] = []
        self._wake = trio.Event()
        self._unavailable = False
        self._acquired_hooks: list[Callable[[str], None]] = []
        # Where this member's API answers, written with each heartbeat (set by the daemon once
        # its listener is bound; `actors.owned_elsewhere.advertised_api_url`).
        self.api_url: Callable[[], str | None] = lambda: None
        self.metrics.held.labels(member).set(0)

    # -- what the daemon wires ------------------------------------------------------------------

    def run_while_leased(self, duty: str, start: _StartFunction) -> _StartFunction:
        """A start function for a supervisor child: runs `start` only while this member holds
        `duty`'s lease, and cancels it the moment the lease is lost."""

        async def leased(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            slot = self._want(duty)
            task_status.started()
            try:
                while True:
                    held = await self._granted(slot)
                    if not await self._run_leased(slot, held, start):
                        return
            finally:
                self._unwant(slot)

        return leased

    def when_leased(self, duty: str, hook: Callable[P, None]) -> Callable[P, None]:
        """`hook`, called only while this member holds `duty` (a nudge for a leased duty)."""

        def gated(*args: P.args, **kwargs: P.kwargs) -> None:
            if self.holds(duty):
                hook(*args, **kwargs)

        return gated

    def holds(self, duty: str) -> bool:
        slot = self._duties.get(duty)
        return slot is not None and slot.held is not None and slot.held.may_act(self._clock())

    def wants(self, duty: str) -> bool:
        """Whether `duty` is configured on this member (it runs it when it holds the lease)."""
        slot = self._duties.get(duty)
        return slot is not None and slot.users > 0

    async def owner(self, duty: str) -> postgres.Owner | None:
        """Who holds `duty`'s lease now, from the table (None: nobody)."""
        return await self.client.call(partial(postgres.owner_of, duty=duty))

    def owned(self) -> tuple[str, ...]:
        return tuple(sorted(d for d in self._duties if self.holds(d)))

    def grant(self, duty: str) -> tuple[LeaseGrant, float] | None:
        """`duty`'s lease and the seconds this member may still act under it, while held."""
        slot = self._duties.get(duty)
        if slot is None or slot.held is None:
            return None
        left = slot.held.valid_until - self._clock()
        return (LeaseGrant(duty, slot.held.token), left) if left > 0 else None

    @contextlib.contextmanager
    def bound(self, duty: str, scope: trio.CancelScope) -> Iterator[None]:
        """Tie `scope` to `duty`'s lease while inside: its deadline is the end of this member's
        belief in the lease (moved on by every renewal), and losing the lease cancels it. A
        scope bound while the lease is not held is cancelled at once."""
        slot = self._duties.get(duty)
        if slot is None or slot.held is None or not slot.held.may_act(self._clock()):
            scope.cancel()
            yield
            return
        scope.deadline = min(scope.deadline, slot.held.valid_until)
        slot.scopes.add(scope)
        try:
            yield
        finally:
            slot.scopes.discard(scope)

    def on_acquired(self, hook: Callable[[str], None]) -> None:
        """Call `hook(duty)` each time this member is granted a lease (a wake-up: work owned
        by that duty may be waiting)."""
        self._acquired_hooks.append(hook)

    async def write_fenced(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in a transaction that commits only under the calling duty's lease token."""
        grant = current_lease()
        if grant is None:
            raise RuntimeError("write_fenced outside a leased duty")
        return await self.client.call(partial(self._fenced, grant, fn))

    def _fenced(self, grant: LeaseGrant, fn: Callable[[Connection], T], conn: Connection) -> T:
        with postgres.fenced(conn, grant.duty, grant.token, on_refused=self.fence_refused):
            return fn(conn)

    def fence_refused(self, error: StaleLeaseError) -> None:
        """Count a write refused for a stale token (the `on_refused` hook of fenced writes)."""
        self.metrics.fenced_refused.labels(error.duty).inc()
        log.warning("fenced_write_refused", duty=error.duty, token=error.token, error=str(error))

    async def report(self) -> ClusterReport:
        """Members, heartbeats and who owns what, from the table (any member gives the same)."""
        view = await self.client.call(partial(postgres.snapshot, rules=self.rules))
        owns: dict[str, list[str]] = {}
        for lease in view.leases:
            if lease.member is not None:
                owns.setdefault(lease.member, []).append(lease.duty)
        return ClusterReport(
            self.member,
            view.at,
            self.rules.ttl,
            tuple(
                MemberReport(
                    m.member,
                    m.started_at,
                    m.heartbeat_at,
                    m.alive,
                    m.duties,
                    tuple(owns.get(m.member, ())),
                    m.api_url,
                )
                for m in view.members
            ),
            tuple(LeaseReport(x.duty, x.member, x.token, x.expires_at) for x in view.leases),
        )

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._wake = trio.Event()
            await self._cycle()
            with trio.move_on_at(self._next_cycle_at()):
                await self._wake.wait()

    async def stop(self) -> None:
        """Give every lease up now (a clean stop), so other members need not wait for the TTL."""
        for slot in self._duties.values():
            if slot.held is not None:
                self._releases.append((slot.name, slot.held.token))
                self._lose(slot, lost=False)
        releases, self._releases = self._releases, []
        with trio.move_on_after(RELEASE_DEADLINE):
            try:
                await self.client.call(partial(self._release_sync, releases))
            except ClusterUnavailable as exc:
                log.warning("leases_not_released", error=str(exc), duties=[d for d, _ in releases])
                return
            log.info("leases_released", duties=sorted(d for d, _ in releases))

    def _next_cycle_at(self) -> float:
        now = self._clock()
        due = [now + self.rules.renew_every]
        for slot in self._duties.values():
            if slot.held is not None:
                due.append(slot.held.renew_at)
            elif slot.users:
                due.append(slot.retry_at)
        return min(due)

    async def _cycle(self) -> None:
        sent_at = self._clock()
        for slot in self._duties.values():  # what our own clock says is over, is over
            if slot.held is not None and not slot.held.may_act(sent_at):
                self._lose(slot)
        releases, self._releases = self._releases, []
        tokens = {d: s.held.token for d, s in self._duties.items() if s.held is not None}
        wanted = [
            d
            for d, s in self._duties.items()
            if s.users and s.held is None and s.retry_at <= sent_at
        ]
        try:
            cycle = await self.client.call(
                partial(
                    self._cycle_sync,
                    releases,
                    tokens,
                    wanted,
                    sorted(self._duties),
                    api_url=self.api_url(),
                )
            )
        except ClusterUnavailable as exc:
            self._releases[:0] = releases  # try again; they lapse after the TTL anyway
            if not self._unavailable:
                self._unavailable = True
                log.warning("lease_database_unavailable", error=str(exc))
            return
        if self._unavailable:
            self._unavailable = False
            log.info("lease_database_available_again")
        for duty, token in tokens.items():
            renewing = self._duties.get(duty)
            if renewing is None or renewing.held is None or renewing.held.token != token:
                continue
            if duty in cycle.renewed:
                self._hold(renewing, HeldLease.granted(duty, token, sent_at, self.rules))
            else:
                self._lose(renewing)
        for duty, (outcome, record, table_now) in cycle.acquired.items():
            asking = self._duties.get(duty)
            if asking is None:
                continue
            if outcome is AcquireOutcome.REFUSED or record is None:
                # Again when it expires (its holder may be dead), and at the latest after
                # `renew_every` (its holder may give it up before: a clean stop releases).
                wait = 0.0 if record is None else max(0.0, record.expires_at - table_now)
                asking.retry_at = sent_at + min(wait + RETRY_AFTER_EXPIRY, self.rules.renew_every)
                continue
            if not asking.users:  # unwanted while the request ran: give it back next cycle
                self._releases.append((duty, record.token))
                self._wake.set()
                continue
            if outcome is AcquireOutcome.TAKEN_OVER:
                self.metrics.takeovers.labels(duty).inc()
            log.info("lease_acquired", duty=duty, token=record.token, outcome=outcome.value)
            self._hold(asking, HeldLease.granted(duty, record.token, sent_at, self.rules))
            for hook in self._acquired_hooks:
                hook(duty)
        self._publish()

    def _cycle_sync(
        self,
        releases: list[tuple[str, int]],
        tokens: dict[str, int],
        wanted: list[str],
        duties: list[str],
        conn: Connection,
        *,
        api_url: str | None,
    ) -> _Cycle:
        cycle = _Cycle(released=self._release_sync(releases, conn))
        cycle.renewed = postgres.renew_all(conn, tokens, holder=self.holder, rules=self.rules)
        for duty in wanted:
            cycle.acquired[duty] = postgres.acquire(
                conn, duty, holder=self.holder, member=self.member, rules=self.rules
            )
        postgres.heartbeat(
            conn, member=self.member, holder=self.holder, duties=duties, api_url=api_url
        )
        return cycle

    def _release_sync(self, releases: list[tuple[str, int]], conn: Connection) -> list[str]:
        return [
            duty
            for duty, token in releases
            if postgres.release(conn, duty, holder=self.holder, token=token)
        ]

    # -- duties ---------------------------------------------------------------------------------

    def _want(self, duty: str) -> _Duty:
        slot = self._duties.setdefault(duty, _Duty(duty))
        slot.users += 1
        self._wake.set()
        return slot

    def _unwant(self, slot: _Duty) -> None:
        slot.users -= 1
        if slot.users:
            return
        if slot.held is not None:
            self._releases.append((slot.name, slot.held.token))
            self._lose(slot, lost=False)
        if self._duties.get(slot.name) is slot:
            del self._duties[slot.name]
        self._wake.set()
        self._publish()

    async def _granted(self, slot: _Duty) -> HeldLease:
        while slot.held is None or not slot.held.may_act(self._clock()):
            await slot.changed.wait()
        return slot.held

    async def _run_leased(self, slot: _Duty, held: HeldLease, start: _StartFunction) -> bool:
        """Run the duty until it ends (False) or its lease is lost (True: wait for the next)."""
        with trio.CancelScope(deadline=held.valid_until) as scope:
            slot.scopes.add(scope)
            grant = _current.set(LeaseGrant(slot.name, held.token))
            try:
                log.info("leased_duty_started", duty=slot.name, token=held.token)
                async with trio.open_nursery() as nursery:
                    await nursery.start(start)
            finally:
                _current.reset(grant)
                slot.scopes.discard(scope)
        if not scope.cancelled_caught:
            return False
        log.warning("leased_duty_stopped", duty=slot.name, token=held.token, reason="lease lost")
        return True

    def _hold(self, slot: _Duty, held: HeldLease) -> None:
        slot.held = held
        for scope in slot.scopes:
            scope.deadline = held.valid_until
        slot.signal()

    def _lose(self, slot: _Duty, *, lost: bool = True) -> None:
        if slot.held is None:
            return
        if lost:
            self.metrics.lost.labels(slot.name).inc()
            log.warning("lease_lost", duty=slot.name, token=slot.held.token)
        slot.held = None
        for scope in slot.scopes:
            scope.cancel()
        slot.signal()

    def _publish(self) -> None:
        self.metrics.held.labels(self.member).set(sum(1 for s in self._duties.values() if s.held))


# -- how the daemon wires it (each a no-op without [cluster]) -------------------------------------

ROUTING_DUTY = "core/routing"
"""The router - every routing decision, reservation it takes and the backorder queue - runs
only on the holder of this lease. Any member takes orders in and commits them; the holder
routes its own at once (its desk's nudges are `gate`d on this duty) and catches up on what the
others committed every `CORE_CATCH_UP_EVERY`. A new holder starts the router afresh, which
picks up every accepted order never routed, every decision left unapplied and the backorders."""

CORE_CATCH_UP_EVERY = 0.5
"""Seconds between the routing holder's looks at work committed on other members: the longest
an order taken in elsewhere waits to be routed. Each look is a few indexed queries."""


def lease_keeper_for(
    cluster: ClusterConfig | None, registry: CollectorRegistry | None
) -> LeaseKeeper | None:
    """The keeper for `[cluster]`, or None for a daemon that runs everything itself."""
    if cluster is None:
        return None
    rules = LeaseRules(ttl=cluster.lease_ttl.seconds, renew_every=cluster.renew_every.seconds)
    client = LeaseClient(cluster.dsn_file.secret.reveal())
    return LeaseKeeper(cluster.member, client, rules, registry=registry)


def leased(keeper: LeaseKeeper | None, duty: str, start: _StartFunction) -> _StartFunction:
    """`start` run only while this daemon holds `duty`'s lease; `start` itself without a keeper."""
    return start if keeper is None else keeper.run_while_leased(duty, start)


def gate(keeper: LeaseKeeper | None, duty: str, hook: Callable[P, None]) -> Callable[P, None]:
    """`hook` called only while this daemon holds `duty`; `hook` itself without a keeper."""
    return hook if keeper is None else keeper.when_leased(duty, hook)


def runs_here(keeper: LeaseKeeper | None, duty: str) -> bool:
    """Whether this daemon runs `duty` now (always, without a keeper)."""
    return keeper is None or keeper.holds(duty)


def lease_keeper_specs(keeper: LeaseKeeper | None) -> list[ChildSpec]:
    """The keeper, first in `core`, so it stops last and releases what is left."""
    if keeper is None:
        return []
    return [ChildSpec(keeper.name, keeper.run, stop=keeper.stop)]


SINGLETON_CORE_DUTIES = frozenset({"mailer", "documents", "supplier_invoices"})
"""Core actors that run on one member only: each delivers its own outbox target(s)."""

LEASED_CORE_ACTORS = {"router": ROUTING_DUTY}
"""Core actors that run on one member only under a duty named apart from the actor."""


def leased_children(keeper: LeaseKeeper | None, children: list[ChildSpec]) -> list[ChildSpec]:
    """The core supervisor's children: the keeper's first, singleton core duties leased."""
    return lease_keeper_specs(keeper) + [
        replace(spec, start=leased(keeper, duty, spec.start))
        if (duty := _core_duty(spec.name)) is not None
        else spec
        for spec in children
    ]


def _core_duty(child: str) -> str | None:
    if child in SINGLETON_CORE_DUTIES:
        return child
    return LEASED_CORE_ACTORS.get(child)


def cluster_routes(keeper: LeaseKeeper | None) -> list[ApiRoute]:
    """`GET /v1/admin/cluster`: the members, their last heartbeat and who owns what."""

    async def cluster(request: Request) -> Response:
        if keeper is None:
            raise ApiError(404, "no_cluster", "this daemon runs alone: [cluster] is not configured")
        try:
            return json_response(await keeper.report())
        except ClusterUnavailable as exc:
            raise ApiError(503, "cluster_unavailable", str(exc)) from None

    return [
        ApiRoute(
            "/v1/admin/cluster",
            "GET",
            cluster,
            "The cluster's members with their last heartbeat, and which member owns each duty",
            admin=True,
            responses={200: ClusterReport, 404: None, 503: None},
            tags=("admin",),
        )
    ]
