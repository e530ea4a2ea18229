"""Two real `somsd run` daemons on one PostgreSQL store: outbox rows for a 3PL location are
delivered only by the daemon holding the location's lease, and a SIGKILL of that daemon hands
delivery over to the other without any fulfilment created twice at the 3PL.

Daemon `a` starts first and owns `location/wh-1`; every order and the stock go to daemon `b`,
so each outbox row is written by one daemon and claimed by the other (a cross-daemon wake-up).
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from adapters.threepl import ThreePLKnobs, ThreePLSimulator
from somsd.config import ListenAddress
from somsd.http import HttpListener
from tests.harness import DaemonProcess, next_log_line, running_daemon
from tests.orders.shop import intake_path, order_body, signed, webhook_config

pytestmark = pytest.mark.slow

ORDERS = 40
TTL = 2.0
TOKEN = "wms-token-handover"
# A dead owner's lease lapses TTL after its last renewal; the rest is start-up and slack for a
# loaded two-core machine.
RUN_BUDGET = 60.0


def member_config(tmp_path: Path, dsn: str, member: str, wms_url: str) -> Path:
    directory = tmp_path / member
    directory.mkdir()
    (directory / "db.dsn").write_text(dsn + "\n")
    (directory / "wh.token").write_text(TOKEN + "\n")
    return webhook_config(
        directory,
        f"""
[store]
backend = "postgres"
dsn_file = "db.dsn"

[[location]]
name = "wh-1"
adapter = "rest"
url = "{wms_url}"
token_file = "wh.token"
poll_interval = "1h"

[cluster]
member = "{member}"
dsn_file = "db.dsn"
lease_ttl = "{TTL:g}s"
renew_every = "500ms"
""",
    )


def owns(daemon: DaemonProcess, duty: str) -> bool:
    return any(e.get("event") == "lease_acquired" and e["duty"] == duty for e in daemon.log)


async def wait_for(daemons: list[DaemonProcess], what: str, predicate: Callable[[], bool]) -> None:
    """Until `predicate()` holds: asked again at each daemon log line and every 50 ms (the 3PL
    simulator's requests log nothing)."""
    while not predicate():
        with trio.move_on_after(0.05):
            await next_log_line(daemons)
    print(f"reached: {what}")


@pytest.fixture
async def wms(nursery: trio.Nursery) -> AsyncIterator[tuple[ThreePLSimulator, str]]:
    # Slow answers, so fulfilments are in flight when the owner is killed; no status moves.
    sim = ThreePLSimulator(api_token=TOKEN, knobs=ThreePLKnobs(latency=0.05, step_delay=3600))
    listener = HttpListener("wms", sim.app, ListenAddress("127.0.0.1:0"), graceful_timeout=0.5)
    await nursery.start(listener.run)
    await nursery.start(sim.run)
    yield sim, listener.urls[0]
    await listener.stop()


async def test_the_lease_owner_delivers_and_a_sigkill_hands_over_without_doubles(
    tmp_path: Path, pg_dsn: str, wms: tuple[ThreePLSimulator, str]
) -> None:
    dsn = pg_dsn  # the session's throwaway PostgreSQL (tests/cluster/conftest.py)
    sim, url = wms
    creates = lambda: [  # noqa: E731
        r for r in sim.requests if r.method == "POST" and r.path.endswith("/fulfillments")
    ]
    config_a = member_config(tmp_path, dsn, "a", url)
    config_b = member_config(tmp_path, dsn, "b", url)
    with trio.fail_after(RUN_BUDGET):
        async with running_daemon(config_a) as a:
            await wait_for([a], "a owns wh-1", lambda: owns(a, "location/wh-1"))
            async with running_daemon(config_b) as b, b.admin() as admin_b:
                response = await admin_b.put(
                    "/v1/locations/wh-1/stock", json=[{"sku": "MUG-1", "on_hand": 10_000}]
                )
                assert response.status_code < 300, response.text
                for n in range(ORDERS):
                    body = order_body(f"handover-{n}")
                    response = await admin_b.post(intake_path(), content=body, headers=signed(body))
                    assert response.status_code == 202, response.text

                # `a` delivers what `b` wrote; kill it with part of the work done.
                with trio.move_on_after(15) as debug:
                    await wait_for([a, b], "first deliveries", lambda: len(creates()) >= 5)
                if debug.cancelled_caught:
                    print("A", a.tail(60))
                    print("B", b.tail(60))
                    print(sim.requests[:5])
                    raise AssertionError("no fulfilment reached the 3PL within 15 s")
                assert not owns(b, "location/wh-1"), "b took the location while a held it"
                killed_at = trio.current_time()
                a.signal(signal.SIGKILL)
                assert await a.wait_exit() == -signal.SIGKILL

                await wait_for([b], "b owns wh-1", lambda: owns(b, "location/wh-1"))
                takeover = trio.current_time() - killed_at
                print(f"location lease taken over {takeover:.2f} s after the SIGKILL")
                assert takeover < TTL + 3.0, b.tail()
                await wait_for([b], "every fulfilment at the 3PL", lambda: len(sim._jobs) >= ORDERS)

    # Each order's fulfilment exists once at the 3PL; a row resent after the handover carried
    # its first idempotency key (answered as a replay), never a second fulfilment.
    assert len(sim._jobs) == ORDERS
    keys = Counter(r.idempotency_key for r in creates())
    assert len(keys) == ORDERS, keys
    assert all(count <= 2 for count in keys.values()), keys
