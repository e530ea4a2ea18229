"""A shop talking to a real `somsd run`: webhook-channel configs, signed orders, scrapes.

The order tests post canonical orders exactly as a connected system would: bytes built from
`somsd.domain.testing.sample_order`, signed with `somsd.signing.sign` at send time, over HTTP to
a daemon started by `tests.harness`. These helpers hold what every such test repeats.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio
from prometheus_client.parser import text_string_to_metric_families

from somsd.domain.testing import sample_order
from somsd.signing import SIGNATURE_HEADER, sign
from tests.harness import START_TIMEOUT, DaemonProcess, running_daemon, write_daemon_config

CHANNEL = "b2b"
CHANNEL_SECRET = "b2b-hmac-key-4e1d"
OTHER_CHANNEL = "marketplace"
OTHER_SECRET = "marketplace-hmac-key-90aa"

WEBHOOK_CHANNELS = f"""
[[channel]]
name = "{CHANNEL}"
kind = "webhook"
secret_file = "{CHANNEL}.secret"

[[channel]]
name = "{OTHER_CHANNEL}"
kind = "webhook"
secret_file = "{OTHER_CHANNEL}.secret"
"""


def webhook_config(directory: Path, extra: str = "", *, max_body_bytes: int | None = None) -> Path:
    """A daemon config with the webhook channels `b2b` and `marketplace`, plus `extra` tables."""
    (directory / f"{CHANNEL}.secret").write_text(CHANNEL_SECRET + "\n")
    (directory / f"{OTHER_CHANNEL}.secret").write_text(OTHER_SECRET + "\n")
    config = write_daemon_config(directory, WEBHOOK_CHANNELS + extra)
    if max_body_bytes is not None:
        text = config.read_text().replace("[api]\n", f"[api]\nmax_body_bytes = {max_body_bytes}\n")
        config.write_text(text)
    return config


def intake_path(channel: str = CHANNEL) -> str:
    return f"/v1/channels/{channel}/orders"


def order_body(external_id: str, **variations: Any) -> bytes:
    """The contract's example order under a new external id, varied like `sample_order`."""
    return msgspec.json.encode(sample_order(external_id=external_id, **variations))


def signed(body: bytes, *, key: str = CHANNEL_SECRET, at: float | None = None) -> dict[str, str]:
    """Headers a sender puts on `body`: JSON content type and a signature made now (or `at`)."""
    timestamp = int(time.time() if at is None else at)
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(key.encode(), body, timestamp),
    }


class BodyChunks(httpx.AsyncByteStream):
    """A request body in chunks, iterated without an async generator.

    httpx's own body streams yield from async generators; when the daemon dies (or answers
    413) while the body is being written, httpcore abandons that generator half-way, and
    trio's finalizer warns when it is collected (an error under `filterwarnings = error`).
    A plain iterator object leaves nothing to finalize. Put it on a built request:
    `request.stream = BodyChunks(body)` keeps the framing headers `build_request` chose.
    """

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    def __aiter__(self) -> BodyChunks:
        return self

    async def __anext__(self) -> bytes:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop(0)


async def post_order(
    client: httpx.AsyncClient, body: bytes, *, channel: str = CHANNEL, key: str | None = None
) -> httpx.Response:
    """POST `body` to the channel's intake route, freshly signed with the channel's key."""
    secret = key or (OTHER_SECRET if channel == OTHER_CHANNEL else CHANNEL_SECRET)
    return await client.post(intake_path(channel), content=body, headers=signed(body, key=secret))


async def accept(client: httpx.AsyncClient, body: bytes, *, channel: str = CHANNEL) -> str:
    """Post a valid order and return its order id; fails the test unless it was a new 202."""
    response = await post_order(client, body, channel=channel)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["duplicate"] is False
    order_id: str = answer["order_id"]
    return order_id


async def list_all_orders(admin: httpx.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    """Every order matching `filters`, following `next_cursor` (bounded: 100 pages)."""
    orders: list[dict[str, Any]] = []
    cursor: int | None = 0
    for _ in range(100):
        params = {**filters, "limit": "500", "cursor": str(cursor)}
        page = await admin.get("/v1/orders", params=params)
        assert page.status_code == 200, page.text
        orders += page.json()["orders"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return orders
    raise AssertionError("more than 100 pages of orders")


async def scrape(daemon: DaemonProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The metrics scrape as {(sample name, labels): value}."""
    async with httpx.AsyncClient() as client:
        response = await client.get(daemon.metrics + "/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample_value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value; 0 for a labelled counter no event has created yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def somsd_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the `somsd` command line (this interpreter's) and capture its output."""
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "somsd", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@contextmanager
def daemon_in_thread(config: Path) -> Iterator[DaemonProcess]:
    """`running_daemon` for synchronous tests (hypothesis): its trio loop runs in a thread.

    pytest-trio runs every hypothesis example in a trio run of its own, fixtures included, so
    an async daemon fixture would start a daemon per example. This one starts it once; the
    test talks to it over HTTP with a synchronous client.
    """
    started = threading.Event()
    state: dict[str, Any] = {}

    async def host() -> None:
        async with running_daemon(config) as daemon:
            state["stop"] = stop = trio.Event()
            state["token"] = trio.lowlevel.current_trio_token()
            state["daemon"] = daemon
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            trio.run(host)
        except BaseException as exc:  # reported by the test thread below
            state["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=run, name="somsd-host", daemon=True)
    thread.start()
    started.wait(START_TIMEOUT + 5)
    if "daemon" not in state:
        thread.join(5)
        raise AssertionError(f"somsd did not start in its thread: {state.get('error')!r}")
    try:
        yield state["daemon"]
    finally:
        trio.from_thread.run_sync(state["stop"].set, trio_token=state["token"])
        thread.join(10)
    if "error" in state:
        raise AssertionError("the thread running somsd failed") from state["error"]
