"""Issue 15, "what it must show": hundreds of generated bad configs via SIGHUP under light load.

The daemon never exits; every invalid file is rejected and counted `invalid`, every valid one
that cannot take effect (a busy port) is counted `failed`, the valid ones (non-ASCII secrets)
are applied and counted `success`; orders keep being taken in throughout. Counts come from the
real metrics endpoint.
"""

from __future__ import annotations

import random
import signal
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from tests.harness import DaemonProcess, running_daemon
from tests.orders.shop import (
    OTHER_CHANNEL,
    order_body,
    post_order,
    sample_value,
    scrape,
    webhook_config,
)

pytestmark = pytest.mark.slow

SEED = 15
CASES = 300
TIME_BUDGET = 90.0  # seconds for all reloads; about 30 s on the 2-core CI machine
ORDER_INTERVAL = 0.2  # five signed orders a second
OUTCOMES = {
    "config_reloaded": "success",
    "config_reload_rejected": "invalid",
    "config_reload_failed": "failed",
}

WRONG_TYPES = ('"big"', "true", "[1]", "{a=1}", "1.5", '"1024"')
BAD_DURATIONS = ("3", "s", "-1s", "3 s", "1w", "ⅷs", "")
BAD_COUNTRIES = ("Germany", "de", "XX", "DEU")

Case = tuple[str, bytes, str]  # kind, file content, expected result


def generate(good: str, rng: random.Random, busy: str) -> Case:
    """One config: the good one broken in one of many ways (or a valid non-ASCII secret)."""

    def text(kind: str, body: str, expected: str = "invalid") -> Case:
        return kind, body.encode(), expected

    listen = '[api]\nlisten = "127.0.0.1:0"'
    makers: list[Callable[[], Case]] = [
        lambda: text(
            "deep-table",
            good + "x = " + "{a=" * (n := rng.randint(40, 5000)) + "1" + "}" * n + "\n",
        ),
        lambda: text(
            "deep-array",
            good + "y = " + "[" * (n := rng.randint(40, 5000)) + "]" * n + "\n",
        ),
        lambda: text(
            "huge-int",
            good.replace("[api]\n", f"[api]\nmax_body_bytes = {'9' * rng.randint(9, 5000)}\n"),
        ),
        lambda: text(
            "huge-float",
            good + f'\n[[location]]\nname = "wh"\nlat = 1e{rng.randint(3, 999)}\nlon = 7.0\n',
        ),
        lambda: text(
            "huge-duration",
            good.replace("[daemon]\n", '[daemon]\nlog_level = "info"\n# x\n').replace(
                'drain_timeout = "3s"', f'drain_timeout = "{"9" * rng.randint(7, 400)}d"'
            ),
        ),
        lambda: text(
            "bad-duration",
            good.replace(
                'drain_timeout = "3s"',
                f'drain_timeout = "{rng.choice(BAD_DURATIONS)}"',
            ),
        ),
        lambda: text(
            "unknown-key",
            good.replace("[daemon]\n", f"[daemon]\nkey_{rng.randint(0, 10**6)} = 1\n"),
        ),
        lambda: text("unknown-section", good + f"\n[section_{rng.randint(0, 999)}]\n"),
        lambda: text(
            "wrong-type",
            good.replace("[api]\n", "[api]\nmax_body_bytes = " + rng.choice(WRONG_TYPES) + "\n"),
        ),
        lambda: text(
            "bad-country",
            good + f'\n[[location]]\nname = "wh"\ncountry = "{rng.choice(BAD_COUNTRIES)}"\n',
        ),
        lambda: text(
            "bad-toml", good + rng.choice(["[daemon", "x = ", "= 1", 'a = "\n', "[[channel]\n"])
        ),
        lambda: (
            "invalid-utf8",
            good.encode() + b"\n# " + bytes(rng.randint(0x80, 0xFF) for _ in range(8)) + b"\n",
            "invalid",
        ),
        lambda: text("busy-port", good.replace(listen, f'[api]\nlisten = "{busy}"'), "failed"),
        lambda: text("non-ascii-secret", good, "success"),  # the secret file changes, see below
    ]
    return rng.choice(makers)()


async def reload_outcome(daemon: DaemonProcess) -> str:
    mark = len(daemon.log)
    daemon.signal(signal.SIGHUP)

    def ended() -> bool:
        return any(e.get("event") in OUTCOMES for e in daemon.log[mark:])

    await daemon.wait_for("the reload's outcome", ended)
    return next(OUTCOMES[e["event"]] for e in daemon.log[mark:] if e.get("event") in OUTCOMES)


async def test_hundreds_of_bad_reloads_under_load_never_stop_the_daemon(tmp_path: Path) -> None:
    config = webhook_config(tmp_path)
    good = config.read_text()
    secret_file = tmp_path / f"{OTHER_CHANNEL}.secret"
    rng = random.Random(SEED)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = f"127.0.0.1:{holder.getsockname()[1]}"
    expected: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    accepted = 0
    try:
        async with running_daemon(config) as daemon:
            before = await scrape(daemon)

            async def load(client: httpx.AsyncClient, stop: trio.Event) -> None:
                nonlocal accepted
                for n in range(100_000):  # bounded by the test's own time budget
                    if stop.is_set():
                        return
                    response = await post_order(client, order_body(f"fuzz-{n}"))
                    assert response.status_code == 202, response.text
                    accepted += 1
                    await trio.sleep(ORDER_INTERVAL)

            stop = trio.Event()
            async with (
                httpx.AsyncClient(base_url=daemon.api, timeout=10) as client,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(load, client, stop)
                with trio.fail_after(TIME_BUDGET):
                    for index in range(CASES):
                        kind, content, result = generate(good, rng, busy)
                        if kind == "non-ascii-secret":
                            secret_file.write_text(f"geheim-ä-schlüssel-{index}\n")
                        config.write_bytes(content)
                        outcome = await reload_outcome(daemon)
                        assert outcome == result, (kind, daemon.tail(5))
                        assert daemon.process.returncode is None
                        kinds[kind] += 1
                        expected[result] += 1
                        seen[outcome] += 1
                config.write_text(good)
                assert await reload_outcome(daemon) == "success"
                expected["success"] += 1
                stop.set()

            after = await scrape(daemon)
            for result in ("success", "invalid", "failed"):
                counted = sample_value(
                    after, "somsd_config_reloads_total", result=result
                ) - sample_value(before, "somsd_config_reloads_total", result=result)
                assert counted == expected[result], (result, counted, expected)
            async with httpx.AsyncClient(base_url=daemon.api) as client:
                assert (await client.get("/readyz")).status_code == 200
                assert (await post_order(client, order_body("after-fuzz"))).status_code == 202
            assert daemon.process.returncode is None
    finally:
        holder.close()
    assert len(kinds) >= 12, kinds  # every generator ran
    assert expected["invalid"] >= CASES // 2
    assert accepted >= 1  # the load ran alongside (every order it sent was a 202)
