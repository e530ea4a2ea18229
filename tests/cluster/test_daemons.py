"""Real `somsd run` processes sharing one PostgreSQL lease table: one owner per duty, SIGKILL
of an owner, takeover within the TTL, and the admin view of it.

The members share the event store in the same database (`[cluster]` refuses any other); what
is under test is who runs what.
"""

from __future__ import annotations

import contextlib
import io
import signal
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from somsd.cli import print_cluster
from tests.cluster.members import TTL, acquired, member_config, until
from tests.harness import running_daemon, write_daemon_config

pytestmark = pytest.mark.slow

DUTIES = {"location/wh-1", "mailer", "core/routing"}
# A dead owner's lease lapses TTL after its last renewal; a standby asks at that moment. The
# slack is for three daemons and PostgreSQL on a loaded two-core machine.
TAKEOVER_BOUND = TTL + 1.5


def wh_member(tmp_path: Path, dsn: str, member: str) -> Path:
    return member_config(tmp_path / member, dsn, member, body='[[location]]\nname = "wh-1"\n')


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


async def test_three_daemons_one_owner_each_duty_and_a_sigkilled_owner_is_replaced(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        daemons = {
            name: await stack.enter_async_context(running_daemon(wh_member(tmp_path, pg_dsn, name)))
            for name in ("a", "b", "c")
        }
        every = list(daemons.values())

        def owners() -> dict[str, list[str]]:
            found: dict[str, list[str]] = {}
            for name, daemon in daemons.items():
                for duty in acquired(daemon):
                    found.setdefault(duty, []).append(name)
            return found

        await until(every, lambda: set(owners()) >= DUTIES, 15)
        assert all(len(members) == 1 for members in owners().values()), owners()
        victim = owners()["location/wh-1"][0]
        victims_duties = {duty for duty, members in owners().items() if members == [victim]}
        survivors = {n: d for n, d in daemons.items() if n != victim}
        async with survivors[min(survivors)].admin() as admin:
            view = (await admin.get("/v1/admin/cluster")).json()
        assert {m["name"] for m in view["members"]} == {"a", "b", "c"}
        assert {lease["duty"]: lease["owner"] for lease in view["leases"]} == {
            duty: members[0] for duty, members in owners().items()
        }

        marks = {n: len(d.log) for n, d in survivors.items()}
        daemons[victim].signal(signal.SIGKILL)
        killed_at = trio.current_time()

        def taken_over() -> str | None:
            for name, daemon in survivors.items():
                if acquired(daemon, after=marks[name]).get("location/wh-1") == "taken_over":
                    return name
            return None

        await until(list(survivors.values()), lambda: taken_over() is not None, 15)
        assert trio.current_time() - killed_at < TAKEOVER_BOUND
        heir = taken_over()
        assert heir is not None

        def all_taken_over() -> bool:
            taken = set()
            for name, daemon in survivors.items():
                taken |= {
                    d for d, o in acquired(daemon, after=marks[name]).items() if o == "taken_over"
                }
            return taken >= victims_duties

        await until(list(survivors.values()), all_taken_over, 15)
        async with survivors[heir].admin() as admin:
            view = (await admin.get("/v1/admin/cluster")).json()
            actors = {a["name"]: a for a in (await admin.get("/v1/admin/actors")).json()["actors"]}
        owner_of = {lease["duty"]: lease["owner"] for lease in view["leases"]}
        assert owner_of["location/wh-1"] == heir
        assert victim not in owner_of.values()  # every duty it held runs elsewhere now
        assert set(owner_of) == DUTIES
        assert actors["cluster"]["state"] == "running"
        async with httpx.AsyncClient() as client:
            scrape = (await client.get(survivors[heir].metrics + "/metrics")).text
        assert metric(scrape, "somsd_cluster_lease_takeovers_total", duty="location/wh-1") == 1
        held = metric(scrape, "somsd_cluster_leases_held", member=heir)
        assert held is not None
        assert held >= 1

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            print_cluster(view)
        lines = printed.getvalue().splitlines()
        assert any(line.startswith("location/wh-1") and heir in line for line in lines), lines


async def test_a_daemon_without_a_cluster_has_no_cluster_route_and_no_keeper(
    tmp_path: Path,
) -> None:
    async with running_daemon(write_daemon_config(tmp_path)) as daemon, daemon.admin() as admin:
        answer = await admin.get("/v1/admin/cluster")
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "no_cluster"
        actors = {a["name"] for a in (await admin.get("/v1/admin/actors")).json()["actors"]}
        assert "cluster" not in actors
        assert "core/routing" not in actors
