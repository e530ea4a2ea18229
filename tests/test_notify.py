"""The systemd notify protocol against a real datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from somsd.notify import MAX_STATUS_CHARS, Notifier


class FakeSystemd:
    """A bound AF_UNIX datagram socket that collects what the daemon sends."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    def received(self) -> list[str]:
        """Every datagram that arrived since the last call, decoded."""
        messages = []
        while True:
            try:
                messages.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return messages


@pytest.fixture
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short directory: AF_UNIX paths are limited to 108 bytes, and tmp_path embeds the
    # (long) test name.
    return tmp_path_factory.mktemp("n") / "notify"


@pytest.fixture
def systemd(socket_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(socket_path))
    yield fake
    fake.sock.close()


@pytest.fixture
def notifier(socket_path: Path, systemd: FakeSystemd) -> Notifier:
    return Notifier.from_environ({"NOTIFY_SOCKET": str(socket_path)})


def test_ready_sends_ready_with_optional_status(notifier: Notifier, systemd: FakeSystemd) -> None:
    """ready() sends READY=1, with STATUS= in the same datagram when given."""
    assert notifier.ready()
    assert notifier.ready(status="running")

    assert systemd.received() == ["READY=1", "READY=1\nSTATUS=running"]


def test_stopping_status_and_watchdog_send_their_assignments(
    notifier: Notifier, systemd: FakeSystemd
) -> None:
    """stopping(), status() and watchdog() each send exactly their KEY=VALUE lines."""
    notifier.status("draining 3 requests")
    notifier.stopping()
    notifier.stopping(status="stopping")
    notifier.watchdog()

    assert systemd.received() == [
        "STATUS=draining 3 requests",
        "STOPPING=1",
        "STOPPING=1\nSTATUS=stopping",
        "WATCHDOG=1",
    ]


async def test_reloading_carries_the_kernel_monotonic_clock_not_trios(
    notifier: Notifier, systemd: FakeSystemd
) -> None:
    """MONOTONIC_USEC lies between two CLOCK_MONOTONIC readings, far from trio's offset clock."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading(status="reloading config")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    [message] = systemd.received()
    reloading, monotonic, status = message.split("\n")
    assert (reloading, status) == ("RELOADING=1", "STATUS=reloading config")
    key, _, value = monotonic.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    # trio's clock is offset by 10,000 s or more, so a mix-up would be off by at least that.
    assert abs(int(value) - trio.current_time() * 1_000_000) > 1_000_000_000


def test_abstract_socket_named_with_at_sign_is_reached() -> None:
    """NOTIFY_SOCKET=@name addresses the abstract namespace, as systemd writes it."""
    name = f"somsd-test-{uuid.uuid4().hex}"
    fake = FakeSystemd("\0" + name)
    try:
        assert Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}).ready(status="up")
        assert fake.received() == ["READY=1\nSTATUS=up"]
    finally:
        fake.sock.close()


def test_status_text_cannot_inject_assignments_or_overflow(
    notifier: Notifier, systemd: FakeSystemd
) -> None:
    """A newline in a status stays inside STATUS, and an overlong status is cut short."""
    notifier.ready(status="last reload rejected: bad\nREADY=1\r\0x")
    notifier.status("x" * 10_000)

    first, second = systemd.received()
    assert first == "READY=1\nSTATUS=last reload rejected: bad READY=1  x"
    assert second == "STATUS=" + "x" * (MAX_STATUS_CHARS - 1) + "…"


def test_without_notify_socket_every_call_is_a_quiet_no_op() -> None:
    """Outside systemd nothing is sent, nothing is logged and there is no watchdog."""
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "30000000"})
    with capture_logs() as logged:
        results = [notifier.ready(), notifier.reloading(), notifier.watchdog(), notifier.stopping()]

    assert not notifier.enabled
    assert results == [False, False, False, False]
    assert notifier.watchdog_interval() is None
    assert notifier.send_failures == 0
    assert logged == []


def test_unreachable_socket_is_counted_and_logged_once_per_outage(socket_path: Path) -> None:
    """Sends to a missing socket return False and never raise; one warning, one recovery line."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(socket_path)})
    with capture_logs() as logged:
        results = [notifier.ready(), notifier.watchdog(), notifier.watchdog()]
        fake = FakeSystemd(str(socket_path))
        try:
            assert notifier.watchdog()
            assert notifier.watchdog()
        finally:
            fake.sock.close()

    assert results == [False, False, False]
    assert notifier.send_failures == 3
    assert [(entry["log_level"], entry["event"]) for entry in logged] == [
        ("warning", "systemd_notify_failed"),
        ("info", "systemd_notify_recovered"),
    ]
    assert logged[0]["socket"] == str(socket_path)
    assert logged[0]["keys"] == ["READY"]
    assert logged[0]["error"].startswith("FileNotFoundError")


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_when_it_is_ours(
    environ: dict[str, str], interval: float | None
) -> None:
    """Half of WATCHDOG_USEC, only when WATCHDOG_PID is unset or names this process."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify", **environ})
    assert notifier.watchdog_interval() == interval


async def test_watchdog_pings_at_half_the_interval(
    socket_path: Path, systemd: FakeSystemd, autojump_clock: trio.testing.MockClock
) -> None:
    """With WATCHDOG_USEC=400000 the task pings at once, then every 0.2 virtual seconds."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(socket_path), "WATCHDOG_USEC": "400000"})
    samples = []
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run_watchdog)
        samples.append(systemd.received())
        # Sample halfway between the expected pings (0.2, 0.4, 0.6, 0.8) so float rounding of
        # the sleep deadlines can not move a ping across a sample.
        await trio.sleep(0.1)
        for _ in range(4):
            samples.append(systemd.received())
            await trio.sleep(0.2)
        samples.append(systemd.received())
        nursery.cancel_scope.cancel()

    ping = ["WATCHDOG=1"]
    assert samples == [ping, [], ping, ping, ping, ping]
    assert systemd.received() == []


async def test_watchdog_task_without_watchdog_sleeps_until_cancelled(
    notifier: Notifier, systemd: FakeSystemd, autojump_clock: trio.testing.MockClock
) -> None:
    """Without WatchdogSec the task starts, sends nothing and stays alive until cancelled."""
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run_watchdog)
        await trio.sleep(3600)
        assert len(nursery.child_tasks) == 1
        nursery.cancel_scope.cancel()

    assert systemd.received() == []
