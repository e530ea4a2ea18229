"""Running a real `somsd run` process in a test: its log, its notify messages, its URLs.

The daemon binds port 0 and logs the bound URLs (`http_listening`); the test reads them from
its JSON log instead of guessing free ports. `NOTIFY_SOCKET` points at a datagram socket the
test owns, so the systemd protocol is observed exactly as systemd would see it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

ADMIN_TOKEN = "test-admin-token-7f3a"

# Real processes and sockets: these bounds are wall-clock. Start-up of the daemon takes about
# 0.5 s on this 2-core machine; ten times that absorbs a loaded CI run.
START_TIMEOUT = 15.0
EVENT_TIMEOUT = 10.0


def write_daemon_config(directory: Path, body: str = "", *, data_dir: Path | None = None) -> Path:
    """A config on loopback port 0 with an admin token, plus `body` (channels, locations)."""
    (directory / "admin.token").write_text(ADMIN_TOKEN + "\n")
    path = directory / "somsd.toml"
    path.write_text(
        f"""
[daemon]
data_dir = "{data_dir or directory / "data"}"
drain_timeout = "3s"

[api]
listen = "127.0.0.1:0"
token_file = "admin.token"

[metrics]
listen = "127.0.0.1:0"
{body}
"""
    )
    return path


def pin_api_port(config: Path) -> Path:
    """Give `config` a real API port: the command line (`status`, `reload`, operator
    actions) finds the daemon through `api.listen`, which port 0 does not tell it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = config.read_text()
    config.write_text(text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"', 1))
    return config


class DaemonProcess:
    def __init__(self, process: trio.Process, notify_socket: trio.socket.SocketType) -> None:
        self.process = process
        self._notify_socket = notify_socket
        self.output: list[str] = []  # every stdout line, raw (with its <N> prefix)
        self.log: list[dict[str, Any]] = []
        self.notifications: list[str] = []
        self._changed = trio.Event()
        self.urls: dict[str, str] = {}

    @property
    def api(self) -> str:
        return self.urls["api"]

    @property
    def metrics(self) -> str:
        return self.urls["metrics"]

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                self.output.append(line)
                if line.startswith("<") and ">" in line[:4]:
                    try:
                        entry = json.loads(line[line.index(">") + 1 :])
                    except json.JSONDecodeError:
                        continue
                    self.log.append(entry)
                    if entry.get("event") == "http_listening":
                        self.urls[entry["listener"]] = entry["urls"][0]
            self._wake()
        self._wake()

    async def _read_notify(self) -> None:
        while True:
            data = await self._notify_socket.recv(4096)
            self.notifications.append(data.decode())
            self._wake()

    async def wait_for(self, what: str, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(EVENT_TIMEOUT):
            while not predicate():
                if self.process.returncode is not None:
                    raise AssertionError(f"somsd exited while waiting for {what}: {self.tail()}")
                await self._changed.wait()

    async def wait_notification(self, prefix: str, *, after: int = 0) -> str:
        def found() -> bool:
            return any(n.startswith(prefix) for n in self.notifications[after:])

        await self.wait_for(f"notification {prefix!r}", found)
        return next(n for n in self.notifications[after:] if n.startswith(prefix))

    async def wait_log(self, event: str, *, after: int = 0) -> dict[str, Any]:
        await self.wait_for(
            f"log event {event!r}", lambda: any(e.get("event") == event for e in self.log[after:])
        )
        return next(e for e in self.log[after:] if e.get("event") == event)

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self) -> int:
        with trio.fail_after(EVENT_TIMEOUT):
            return await self.process.wait()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output[-lines:])

    def admin(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kwargs
        )


async def next_log_line(daemons: Sequence[DaemonProcess]) -> None:
    """Return when any of `daemons` writes its next line (or notification)."""
    async with trio.open_nursery() as nursery:
        for daemon in daemons:

            async def one(d: DaemonProcess = daemon) -> None:
                await d._changed.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(one)


@asynccontextmanager
async def running_daemon(
    config: Path, *, extra_env: dict[str, str] | None = None
) -> AsyncIterator[DaemonProcess]:
    """Start `somsd run -c config`, wait for READY=1 and both URLs; kill it on the way out."""
    notify_path = config.parent / "notify.sock"
    notify_path.unlink(missing_ok=True)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
    await sock.bind(str(notify_path))
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "PYTHONUNBUFFERED": "1"}
    env.pop("WATCHDOG_USEC", None)
    env.update(extra_env or {})
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "somsd", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    daemon = DaemonProcess(process, sock)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon._read_stdout)
            nursery.start_soon(daemon._read_notify)
            with trio.fail_after(START_TIMEOUT):
                await daemon.wait_notification("READY=1")
                await daemon.wait_for("listener URLs", lambda: len(daemon.urls) == 2)
            yield daemon
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(5):
                await process.wait()
        sock.close()
