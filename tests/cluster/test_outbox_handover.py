"""Two real `somsd run` daemons on one PostgreSQL store: outbox rows for a 3PL location are
delivered only by the daemon holding the location's lease, and a SIGKILL of that daemon hands
delivery over to the other without any fulfilment created twice at the 3PL.

Daemon `a` starts first and owns `location/wh-1`; every order and the stock go to daemon `b`,
so each outbox row is written by one daemon and claimed by the other (a cross-daemon wake-up).
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from adapters.threepl import ThreePLKnobs, ThreePLSimulator
from somsd.config import ListenAddress
from somsd.http import HttpListener
from tests.cluster.members import TTL, member_config, owns, until
from tests.harness import running_daemon
from tests.orders.shop import intake_path, order_body, signed

pytestmark = pytest.mark.slow

ORDERS = 40
TOKEN = "wms-token-handover"
# A dead owner's lease lapses TTL after its last renewal; the rest is start-up and slack for a
# loaded two-core machine.
RUN_BUDGET = 60.0


def wh_member(tmp_path: Path, dsn: str, member: str, wms_url: str) -> Path:
    return member_config(
        tmp_path / member,
        dsn,
        member,
        webhook=True,
        files={"wh.token": TOKEN},
        body=f"""
[[location]]
name = "wh-1"
adapter = "rest"
url = "{wms_url}"
token_file = "wh.token"
poll_interval = "1h"
""",
    )


@pytest.fixture
async def wms(nursery: trio.Nursery) -> AsyncIterator[tuple[ThreePLSimulator, str]]:
    # Slow answers, so fulfilments are in flight when the owner is killed; no status moves.
    # Its stock is what its counts report (an untracked stock would count every SKU as 0).
    sim = ThreePLSimulator(
        api_token=TOKEN,
        knobs=ThreePLKnobs(latency=0.05, step_delay=3600),
        stock={"MUG-1": 10_000},
    )
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
    config_a = wh_member(tmp_path, dsn, "a", url)
    config_b = wh_member(tmp_path, dsn, "b", url)
    with trio.fail_after(RUN_BUDGET):
        async with running_daemon(config_a) as a:
            await until([a], lambda: owns(a, "location/wh-1"), RUN_BUDGET, what="a owns wh-1")
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
                    await until(
                        [a, b], lambda: len(creates()) >= 5, RUN_BUDGET, what="first deliveries"
                    )
                if debug.cancelled_caught:
                    print("A", a.tail(60))
                    print("B", b.tail(60))
                    print(sim.requests[:5])
                    raise AssertionError("no fulfilment reached the 3PL within 15 s")
                assert not owns(b, "location/wh-1"), "b took the location while a held it"
                killed_at = trio.current_time()
                a.signal(signal.SIGKILL)
                assert await a.wait_exit() == -signal.SIGKILL

                await until([b], lambda: owns(b, "location/wh-1"), RUN_BUDGET, what="b owns wh-1")
                takeover = trio.current_time() - killed_at
                print(f"location lease taken over {takeover:.2f} s after the SIGKILL")
                assert takeover < TTL + 3.0, b.tail()
                await until(
                    [b],
                    lambda: len(sim._jobs) >= ORDERS,
                    RUN_BUDGET,
                    what="every fulfilment at the 3PL",
                )

    # Each order's fulfilment exists once at the 3PL; a row resent after the handover carried
    # its first idempotency key (answered as a replay), never a second fulfilment.
    assert len(sim._jobs) == ORDERS
    keys = Counter(r.idempotency_key for r in creates())
    assert len(keys) == ORDERS, keys
    assert all(count <= 2 for count in keys.values()), keys
