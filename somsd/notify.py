"""The systemd notify protocol, spoken by ourselves.

systemd learns a `Type=notify` service's state from datagrams the service sends to the
`AF_UNIX`/`SOCK_DGRAM` socket named in `$NOTIFY_SOCKET` (a leading `@` means the Linux abstract
namespace). Each datagram holds newline-separated `KEY=VALUE` assignments: `READY=1` once the
event store is open and the actors run, `RELOADING=1` with `MONOTONIC_USEC=` while a reload is
applied (then `READY=1` again, also when the reload was rejected), `STOPPING=1` on SIGTERM,
`STATUS=` for `systemctl status`, and `WATCHDOG=1` at half the `WatchdogSec=` interval.

Why not python-systemd: it needs libsystemd headers to build and brings nothing we need
beyond one `sendto`, which this module does in a few lines (the same steps as `sd_notify(3)`:
a fresh socket per message, no connection, no state to leak between calls).

Sending never raises into the daemon. A failed send is counted (`send_failures`) and logged
once per outage — once when sending stops working, once when it works again — so a
misconfigured unit can not flood the journal every watchdog tick.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog
import trio

__all__ = ["MAX_STATUS_CHARS", "Notifier"]

log = structlog.get_logger("somsd.notify")

# systemd (252, src/core/manager.c) reads notify datagrams into a PIPE_BUF-sized buffer
# (NOTIFY_BUFFER_MAX, 4096 bytes) and ignores longer ones. A status line is for humans reading
# `systemctl status`; 512 characters are at most 2048 bytes of UTF-8, leaving room for the other
# assignments in the same datagram.
MAX_STATUS_CHARS = 512

# How long one send may block the calling thread (the trio loop) when systemd's receive queue
# is full. That only happens while PID 1 is overloaded; losing READY=1 or WATCHDOG=1 would get
# the service killed, a stall of a quarter second would not.
_SEND_TIMEOUT_S = 0.25


def _clean(value: str) -> str:
    """Keep a value on one line: a newline would start a new assignment (say `READY=1`
    smuggled in through an error message in STATUS), and systemd drops datagrams with NUL."""
    return value.replace("\n", " ").replace("\r", " ").replace("\0", " ")


def _monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares `MONOTONIC_USEC` against.

    Never `trio.current_time()`: it carries a random offset of 10,000-200,000 s
    (python-trio/trio:src/trio/_core/_run.py), so systemd would see a time far in the future
    or the past and the reload would never be matched to its signal.
    """
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Tells systemd about the daemon's state; a no-op outside systemd.

    Build it with `from_environ()`. Each method sends one datagram and returns True when the
    kernel accepted it, False when there is no notify socket or the send failed (counted in
    `send_failures`, logged once per outage, never raised).
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
    ) -> None:
        """`address` is `$NOTIFY_SOCKET` as systemd wrote it (`@name` for abstract sockets);
        `watchdog_usec` is the watchdog timeout meant for this process, if any."""
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.send_failures = 0
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` as systemd sets them.

        The watchdog is ours only when `WATCHDOG_PID` is unset or names this process: a
        process started by somsd that inherited the variables must not ping on our behalf.
        """
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_usec: int | None = None
        raw_usec = environ.get("WATCHDOG_USEC", "")
        raw_pid = environ.get("WATCHDOG_PID", "")
        ours = not raw_pid or (raw_pid.isdigit() and int(raw_pid) == os.getpid())
        if address is not None and ours and raw_usec.isdigit() and int(raw_usec) > 0:
            watchdog_usec = int(raw_usec)
        return cls(address, watchdog_usec=watchdog_usec)

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self.address is not None

    def ready(self, status: str | None = None) -> bool:
        """Startup or a reload finished (also a rejected reload: systemd waits for it)."""
        return self._send([("READY", "1")], status)

    def reloading(self, status: str | None = None) -> bool:
        """A reload started; `MONOTONIC_USEC` lets systemd match it to the signal it sent."""
        return self._send([("RELOADING", "1"), ("MONOTONIC_USEC", str(_monotonic_usec()))], status)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown started: intake stops, in-flight work drains."""
        return self._send([("STOPPING", "1")], status)

    def status(self, text: str) -> bool:
        """Set the one-line status `systemctl status` shows."""
        return self._send([], text)

    def watchdog(self) -> bool:
        """Tell systemd the event loop is alive."""
        return self._send([("WATCHDOG", "1")], None)

    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the timeout, as `sd_watchdog_enabled(3)` advises, so
        one late ping does not get us killed. None when systemd watches no watchdog for us."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    async def run_watchdog(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Ping `WATCHDOG=1` from a trio task until cancelled.

        Running in the event loop is the point: a ping proves the loop is not blocked. With no
        watchdog configured the task sleeps forever instead of returning, so a supervisor that
        restarts children which exit sees the same tree with or without systemd.
        """
        interval = self.watchdog_interval()
        if interval is None:
            task_status.started()
            await trio.sleep_forever()
        self.watchdog()
        task_status.started()
        while True:
            await trio.sleep(interval)
            self.watchdog()

    def _send(self, fields: list[tuple[str, str]], status: str | None) -> bool:
        if self.address is None:
            return False
        if status is not None:
            text = _clean(status)
            if len(text) > MAX_STATUS_CHARS:
                text = text[: MAX_STATUS_CHARS - 1] + "…"
            fields = [*fields, ("STATUS", text)]
        payload = "\n".join(f"{key}={_clean(value)}" for key, value in fields)
        # The kernel wants a NUL in front of an abstract name; systemd writes it as `@`.
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(_SEND_TIMEOUT_S)
                sock.sendto(payload.encode("utf-8", errors="replace"), target)
        except OSError as exc:
            self.send_failures += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "systemd_notify_failed",
                    socket=self.address,
                    keys=[key for key, _ in fields],
                    error=f"{type(exc).__name__}: {exc}",
                    hint="check NOTIFY_SOCKET and that the unit has Type=notify, NotifyAccess=main",
                )
            return False
        if self._failing:
            self._failing = False
            log.info("systemd_notify_recovered", socket=self.address, failures=self.send_failures)
        return True
