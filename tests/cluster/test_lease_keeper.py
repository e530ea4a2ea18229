"""LeaseKeepers sharing a real PostgreSQL: takeover within the TTL, never two at once, fencing."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import trio
from prometheus_client import CollectorRegistry

from actors.lease_keeper import LeaseKeeper, current_lease
from somsd.cluster import postgres
from somsd.cluster.client import LeaseClient
from somsd.cluster.lease import LeaseRules
from somsd.cluster.postgres import StaleLeaseError

pytestmark = pytest.mark.slow  # real time: the leases expire on the database's clock

RULES = LeaseRules(ttl=1.0, renew_every=0.25)
DUTIES = ("location/wh-1", "channel/shop", "core/routing")
# Takeover after a death: the TTL from the dead member's last renewal, plus the standby's retry
# delay and a few round trips; the slack is for a loaded two-core test machine.
TAKEOVER_BOUND = RULES.ttl + 0.75
ROOT = Path(__file__).resolve().parents[2]
WAIT_LIMIT = 10.0  # seconds: anything the tests wait for happens within a few TTLs


@asynccontextmanager
async def closing(client: LeaseClient) -> AsyncIterator[None]:
    """Close the member's connection when it ends, as the end of its process would."""
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


@dataclass
class Run:
    duty: str
    member: str
    token: int
    started: float
    ended: float | None = None


@dataclass
class World:
    """What every member's duties did, on the one trio clock all in-process members share."""

    dsn: str
    runs: list[Run] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    def note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def running(self, duty: str) -> list[Run]:
        return [r for r in self.runs if r.duty == duty and r.ended is None]

    async def wait_for(self, predicate: object) -> None:
        assert callable(predicate)
        with trio.fail_after(WAIT_LIMIT):
            while not predicate():
                await self.changed.wait()


@dataclass
class Member:
    name: str
    keeper: LeaseKeeper
    registry: CollectorRegistry
    scope: trio.CancelScope  # cancelling it is a death: no release, connections left open
    keeper_scope: trio.CancelScope  # cancelling only this is a stuck keeper, duties still on


def duty_function(world: World, member: str, keeper: LeaseKeeper, duty: str):  # type: ignore[no-untyped-def]
    async def work(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        grant = current_lease()
        assert grant is not None
        assert grant.duty == duty
        run = Run(duty, member, grant.token, trio.current_time())
        world.runs.append(run)
        world.note()
        task_status.started()
        try:
            while True:  # the duty's effects, each a fenced write
                await keeper.write_fenced(
                    lambda conn: conn.execute(
                        "INSERT INTO effects (duty, member, token) VALUES (%s, %s, %s)",
                        (duty, member, grant.token),
                    )
                )
                await trio.sleep(0.05)
        finally:
            run.ended = trio.current_time()
            world.note()

    return work


@asynccontextmanager
async def members(world: World, names: tuple[str, ...]) -> AsyncIterator[dict[str, Member]]:
    started: dict[str, Member] = {}

    async def member(name: str, *, task_status: trio.TaskStatus[Member]) -> None:
        registry = CollectorRegistry()
        client = LeaseClient(world.dsn)
        keeper = LeaseKeeper(name, client, RULES, registry=registry)
        keeper_scope = trio.CancelScope()

        async def keep() -> None:
            with keeper_scope:
                await keeper.run()

        async with closing(client):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as inner:
                    inner.start_soon(keep)
                    for duty in DUTIES:
                        work = duty_function(world, name, keeper, duty)
                        await inner.start(keeper.run_while_leased(duty, work))
                    task_status.started(Member(name, keeper, registry, scope, keeper_scope))

    async with trio.open_nursery() as nursery:
        for name in names:
            started[name] = await nursery.start(member, name)
        yield started
        nursery.cancel_scope.cancel()


def effects_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE effects (duty TEXT, member TEXT, token BIGINT)")


def assert_never_two_at_once(world: World) -> None:
    for duty in DUTIES:
        runs = sorted((r for r in world.runs if r.duty == duty), key=lambda r: r.started)
        for earlier, later in itertools.pairwise(runs):
            assert earlier.ended is not None, (duty, runs)
            assert earlier.ended <= later.started, (duty, runs)
            assert later.token >= earlier.token


def owner(world: World, duty: str) -> Run:
    (run,) = world.running(duty)
    return run


def metric(of: Member, name: str, **labels: str) -> float:
    return of.registry.get_sample_value(name, labels) or 0.0


async def test_three_members_share_the_duties_and_take_over_a_dead_ones(pg_dsn: str) -> None:
    effects_table(pg_dsn)
    world = World(pg_dsn)
    async with members(world, ("a", "b", "c")) as cluster:
        await world.wait_for(lambda: all(len(world.running(d)) == 1 for d in DUTIES))
        victim = owner(world, "location/wh-1")
        held = {d for d in DUTIES if owner(world, d).member == victim.member}
        killed_at = trio.current_time()
        cluster[victim.member].scope.cancel()  # dies holding its leases: nothing released
        await world.wait_for(
            lambda: all(
                len(world.running(d)) == 1 and owner(world, d).member != victim.member for d in held
            )
        )
        for duty in held:
            taken = owner(world, duty)
            assert taken.started - killed_at < TAKEOVER_BOUND
            assert taken.token > victim.token or duty != victim.duty
        new_owner = cluster[owner(world, "location/wh-1").member]
        assert metric(new_owner, "somsd_cluster_lease_takeovers_total", duty="location/wh-1") == 1
        report = await new_owner.keeper.report()
        owners = {lease.duty: lease.owner for lease in report.leases}
        assert victim.member not in owners.values()
        assert {m.name for m in report.members} == {"a", "b", "c"}

    assert_never_two_at_once(world)
    # The dead member's token is refused from now on, wherever a write comes from.
    with postgres.connect(pg_dsn) as conn:
        with pytest.raises(StaleLeaseError), postgres.fenced(conn, victim.duty, victim.token):
            pass
        rows = conn.execute("SELECT duty, member, token FROM effects").fetchall()
    # Every effect was written by the member whose run it was, under that run's token.
    runs = {(r.duty, r.member, r.token) for r in world.runs}
    assert rows
    assert {tuple(row) for row in rows} <= runs


async def test_a_member_whose_keeper_is_stuck_stops_its_duties_before_anyone_takes_over(
    pg_dsn: str,
) -> None:
    """The keeper cannot renew (stuck, paused, cut off), but the process lives on: its duties
    stop by their own deadline, before another member is granted the lease."""
    effects_table(pg_dsn)
    world = World(pg_dsn)
    async with members(world, ("a", "b")) as cluster:
        await world.wait_for(lambda: all(len(world.running(d)) == 1 for d in DUTIES))
        stuck = owner(world, "channel/shop").member
        cluster[stuck].keeper_scope.cancel()
        await world.wait_for(
            lambda: all(
                len(world.running(d)) == 1 and owner(world, d).member != stuck for d in DUTIES
            )
        )
        # Its duties ended by their deadline, the keeper's task being gone.
        assert all(r.ended is not None for r in world.runs if r.member == stuck)
    assert_never_two_at_once(world)


async def test_a_clean_stop_hands_the_leases_over_at_once(pg_dsn: str) -> None:
    effects_table(pg_dsn)
    world = World(pg_dsn)
    async with members(world, ("a", "b")) as cluster:
        await world.wait_for(lambda: all(len(world.running(d)) == 1 for d in DUTIES))
        leaving = owner(world, "location/wh-1").member
        stopped_at = trio.current_time()
        await cluster[leaving].keeper.stop()
        cluster[leaving].scope.cancel()
        await world.wait_for(
            lambda: all(
                len(world.running(d)) == 1 and owner(world, d).member != leaving for d in DUTIES
            )
        )
        # No waiting for the TTL: the other member asks again at its next renewal.
        taken = owner(world, "location/wh-1")
        assert taken.started - stopped_at < RULES.ttl
        remaining = cluster[taken.member]
        assert metric(remaining, "somsd_cluster_leases_held", member=taken.member) == len(DUTIES)
    assert_never_two_at_once(world)


def spawn_holder(dsn: str, duty: str) -> subprocess.Popen[str]:
    """Member "z" in a process of its own (tests/cluster/holder.py)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.holder", dsn, "z", duty, str(RULES.ttl), "0.25"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_a_sigkilled_process_holding_a_lease_is_taken_over_within_the_ttl(
    pg_dsn: str,
) -> None:
    duty = "location/wh-1"
    child = spawn_holder(pg_dsn, duty)
    try:
        assert child.stdout is not None
        stdout = child.stdout

        def running_line() -> str:
            for _ in range(100):  # its log lines come first, on the same stream
                line = stdout.readline()
                if not line or line.startswith("running "):
                    return line
            return ""

        with trio.fail_after(30):
            line = await trio.to_thread.run_sync(running_line)
        assert line.startswith("running "), line
        stale_token = int(line.split()[1])
        started = trio.Event()
        tokens: list[int] = []
        client = LeaseClient(pg_dsn)
        keeper = LeaseKeeper("b", client, RULES, registry=CollectorRegistry())

        async def work(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            grant = current_lease()
            assert grant is not None
            tokens.append(grant.token)
            started.set()
            task_status.started()
            await trio.sleep_forever()

        async with closing(client), trio.open_nursery() as nursery:
            nursery.start_soon(keeper.run)
            await nursery.start(keeper.run_while_leased(duty, work))
            await trio.sleep(RULES.ttl)  # the live holder keeps it: b must not get it
            assert not started.is_set()
            child.send_signal(signal.SIGKILL)
            killed_at = trio.current_time()
            with trio.fail_after(TAKEOVER_BOUND + 2):
                await started.wait()
            assert trio.current_time() - killed_at < TAKEOVER_BOUND
            assert tokens[0] > stale_token
            nursery.cancel_scope.cancel()
        with (
            postgres.connect(pg_dsn) as conn,
            pytest.raises(StaleLeaseError),
            postgres.fenced(conn, duty, stale_token),
        ):
            pass
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
