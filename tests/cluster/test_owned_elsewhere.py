"""Requests for work another member owns (actors/owned_elsewhere.py): real daemons on one
PostgreSQL database answer 503 naming the owner and its API URL, with Retry-After, and after the
owner's SIGKILL the heir answers the same request itself."""

from __future__ import annotations

import contextlib
import math
import signal
import socket
from pathlib import Path

import httpx
import pytest
import trio

from actors.owned_elsewhere import advertised_api_url
from adapters.smartstore import SmartstoreSimulator
from adapters.threepl import ThreePLSimulator
from somsd.cluster.postgres import connect, ensure_schema
from somsd.config import ClusterConfig, SecretFile
from somsd.secrets import Secret
from tests.adapters.conftest import Serve, serve
from tests.cluster.members import TTL, owns, shop_member, until
from tests.harness import next_log_line, running_daemon

__all__ = ["serve"]

RECONCILE = "/v1/channels/shop/reconcile"
CALLBACK = "/v1/locations/wh-1/callbacks"
DUTIES = ("channel/shop", "location/wh-1")


Upstreams = tuple[SmartstoreSimulator, str, str]


@pytest.fixture
async def upstreams(serve: Serve) -> Upstreams:
    sim = SmartstoreSimulator()
    sim.seed_catalogue(5, seed=1)
    shop, _ = await serve(sim)
    wms, _ = await serve(ThreePLSimulator(api_token="wms-token"))
    return sim, shop, wms


async def advertised(admin: httpx.AsyncClient, member: str) -> str | None:
    """The api_url `member` wrote with its heartbeat, as any member reports it."""
    view = (await admin.get("/v1/admin/cluster")).json()
    urls = {m["name"]: m["api_url"] for m in view["members"]}
    return urls.get(member)


@pytest.mark.slow
async def test_a_member_refuses_work_it_does_not_own_naming_the_owner_until_it_inherits_it(
    tmp_path: Path, pg_dsn: str, upstreams: Upstreams
) -> None:
    sim, shop, wms = upstreams
    configs = {
        name: shop_member(
            tmp_path / name,
            pg_dsn,
            name,
            shop=sim,
            shop_url=shop,
            wms_url=wms,
            wms_token="wms-token",
            files={"wh.callback": "callback-key"},
            location='callback_secret_file = "wh.callback"\n',
        )
        for name in ("a", "b")
    }
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_daemon(configs["a"]))
        await until([a], lambda: all(owns(a, duty) for duty in DUTIES))
        b = await stack.enter_async_context(running_daemon(configs["b"]))
        admin_b = await stack.enter_async_context(b.admin())
        async with a.admin() as admin_a:
            # A first heartbeat may precede the listener; the next one names the URL.
            with trio.fail_after(10):
                while await advertised(admin_a, "a") != a.api:
                    with trio.move_on_after(0.1):  # a heartbeat logs nothing: ask again
                        await next_log_line([a])
            owner_answer = await admin_a.post(RECONCILE, params={"dry_run": "true"})
        assert owner_answer.status_code == 200, owner_answer.text

        refused = await admin_b.post(RECONCILE, params={"dry_run": "true"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == {
            "code": "owned_elsewhere",
            "message": f"channel/shop runs on member a; send the request to it at {a.api}",
            "duty": "channel/shop",
            "owner": "a",
            "owner_api_url": a.api,
        }
        assert 1 <= int(refused.headers["Retry-After"]) <= math.ceil(TTL)
        # The report is the running actor's: b has none of its own to give.
        report = await admin_b.get("/v1/channels/shop/reconciliation")
        assert (report.status_code, report.json()["error"]["owner"]) == (503, "a")
        # What b is not configured for stays its own 404.
        assert (await admin_b.post("/v1/channels/nope/reconcile")).status_code == 404
        # The 3PL's callback route is open without the admin token: no inner address in it.
        async with httpx.AsyncClient(base_url=b.api) as anonymous:
            callback = await anonymous.post(CALLBACK, content=b"{}")
        assert callback.status_code == 503
        assert callback.json()["error"] == {
            "code": "owned_elsewhere",
            "message": "location/wh-1 runs on another member; retry later",
            "duty": "location/wh-1",
        }
        assert "Retry-After" in callback.headers

        mark = len(b.log)
        a.signal(signal.SIGKILL)
        await until([b], lambda: owns(b, "channel/shop", after=mark))
        inherited = await admin_b.post(RECONCILE, params={"dry_run": "true"})
        assert inherited.status_code == 200, inherited.text
        assert inherited.json()["dry_run"] is True


def test_the_advertised_url_is_the_configured_one_or_the_bound_address_named() -> None:
    cluster = ClusterConfig(
        member="a",
        dsn_file=SecretFile(Path("x"), Secret("postgresql:///x")),
    )
    assert advertised_api_url(cluster, []) is None
    assert advertised_api_url(cluster, ["http://10.0.0.5:8470"]) == "http://10.0.0.5:8470"
    host = socket.gethostname()
    assert advertised_api_url(cluster, ["http://0.0.0.0:8470"]) == f"http://{host}:8470"
    assert advertised_api_url(cluster, ["http://[::]:8470"]) == f"http://{host}:8470"
    configured = ClusterConfig(
        member="a",
        dsn_file=cluster.dsn_file,
        advertise_url="https://somsd-a.example:8443/",
    )
    assert advertised_api_url(configured, ["http://0.0.0.0:8470"]) == "https://somsd-a.example:8443"


def test_a_members_table_from_before_the_api_url_gains_the_column(pg_dsn: str) -> None:
    with connect(pg_dsn) as conn:
        conn.execute(
            "CREATE TABLE cluster_members (member TEXT PRIMARY KEY, holder TEXT NOT NULL, "
            "started_at TIMESTAMPTZ NOT NULL, heartbeat_at TIMESTAMPTZ NOT NULL, "
            "duties TEXT[] NOT NULL DEFAULT '{}')"
        )
        conn.execute("INSERT INTO cluster_members VALUES ('old', 'old/1', now(), now(), '{}')")
        ensure_schema(conn)
        ensure_schema(conn)  # again: a second member starting finds it done
        row = conn.execute("SELECT member, api_url FROM cluster_members").fetchone()
    assert row == ("old", None)
