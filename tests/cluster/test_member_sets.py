"""Every member runs the same [[location]]s and [[channel]]s: real `somsd run` members on one
PostgreSQL database; a member whose names differ from a live member's is refused at start
(exit 2, naming the difference), and a reload that would make one differ is rejected while the
old config runs on (logged and counted), like the cluster/store check."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from somsd.cluster import postgres
from somsd.cluster.lease import LeaseRules
from somsd.cluster.sets import MemberSets, check_and_record
from tests.cluster.members import member_config
from tests.harness import running_daemon
from tests.orders.shop import somsd_cli

pytestmark = pytest.mark.slow

SAME = "cluster: [[location]]s and [[channel]]s must be the same on every member"


def sets_member(tmp_path: Path, dsn: str, member: str, locations: tuple[str, ...]) -> Path:
    tables = "".join(f'\n[[location]]\nname = "{name}"\n' for name in locations)
    return member_config(
        tmp_path / member,
        dsn,
        member,
        files={"b2b.secret": "s3cret"},
        body=f"""
[[channel]]
name = "b2b"
kind = "webhook"
secret_file = "b2b.secret"
{tables}
""",
    )


async def test_a_member_with_another_location_is_refused_at_start(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with running_daemon(sets_member(tmp_path, pg_dsn, "a", ("wh-1",))):
        odd = sets_member(tmp_path, pg_dsn, "b", ("wh-1", "wh-2"))
        result = await somsd_cli("run", "-c", str(odd))
        assert result.returncode == 2, result.stderr.decode()
        (line,) = result.stderr.decode().splitlines()
        assert line == (
            f"{odd}: {SAME} (a member routes orders to the locations its own config names): "
            "location wh-2 only here"
        )
        same = sets_member(tmp_path, pg_dsn, "c", ("wh-1",))
        async with running_daemon(same) as joined, joined.admin() as admin:
            view = (await admin.get("/v1/admin/cluster")).json()
            assert {m["name"] for m in view["members"]} >= {"a", "c"}
            assert "b" not in {m["name"] for m in view["members"]}


async def test_a_reload_that_would_differ_is_rejected_and_the_old_config_runs_on(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(
                running_daemon(sets_member(tmp_path, pg_dsn, name, ("wh-1",)))
            )
            for name in ("a", "b")
        ]
        sets_member(tmp_path, pg_dsn, "a", ("wh-1", "wh-2"))
        async with a.admin() as admin:
            answer = await admin.post("/v1/admin/reload")
            assert answer.status_code == 422, answer.text
            assert answer.json()["applied"] is False
            (problem,) = answer.json()["problems"]
            assert problem.startswith(SAME)
            assert problem.endswith("location wh-2 only here")
            rejected = await a.wait_log("config_reload_rejected")
            assert rejected["problems"] == [problem]
            async with httpx.AsyncClient() as client:
                scrape = (await client.get(a.metrics + "/metrics")).text
            assert 'somsd_config_reloads_total{result="invalid"} 1.0' in scrape
            actors = {x["name"] for x in (await admin.get("/v1/admin/actors")).json()["actors"]}
            assert "location/wh-2" not in actors

            # The same names with another setting: no difference, the reload goes through.
            sets_member(tmp_path, pg_dsn, "a", ("wh-1",))
            path = tmp_path / "a" / "somsd.toml"
            path.write_text(
                path.read_text().replace("[daemon]\n", '[daemon]\nlog_level = "debug"\n')
            )
            answer = await admin.post("/v1/admin/reload")
            assert answer.status_code == 200, answer.text
            assert answer.json()["applied"] is True
        async with b.admin() as other:
            assert (await other.get("/readyz")).status_code == 200


def test_the_difference_names_each_side() -> None:
    here = MemberSets(("wh-1", "wh-2"), ("b2b",))
    there = MemberSets(("wh-1",), ("b2b", "shop"))
    assert here.difference("a", there) == "location wh-2 only here; channel shop only on 'a'"
    assert here.fingerprint != there.fingerprint
    assert here.fingerprint == MemberSets(("wh-1", "wh-2"), ("b2b",)).fingerprint
    assert MemberSets(("a",), ()).fingerprint != MemberSets((), ("a",)).fingerprint


def test_check_and_record_on_the_table(pg_dsn: str) -> None:
    """Straight on the member table: a recorded member is compared with before its first
    heartbeat, and its row reads back in the admin snapshot."""
    one, two = MemberSets(("wh-1",), ("b2b",)), MemberSets(("wh-1", "wh-2"), ("b2b",))
    with postgres.connect(pg_dsn) as conn:
        assert check_and_record(conn, member="a", sets=one, ttl=2.0) == []
        [problem] = check_and_record(conn, member="b", sets=two, ttl=2.0)
        assert problem.endswith("location wh-2 only here")
        assert check_and_record(conn, member="b", sets=one, ttl=2.0) == []
        assert check_and_record(conn, member="a", sets=two, ttl=2.0) != []  # b is live now
        view = postgres.snapshot(conn, rules=LeaseRules(ttl=2.0, renew_every=0.5))
        assert [(m.member, m.alive) for m in view.members] == [("a", True), ("b", True)]
        recorded = conn.execute(
            "SELECT member, locations, channels FROM cluster_members ORDER BY member"
        ).fetchall()
        assert recorded == [("a", ["wh-1"], ["b2b"]), ("b", ["wh-1"], ["b2b"])]
