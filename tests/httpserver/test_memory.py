"""Issue 11: a real `somsd run` holds 2,000 idle keep-alive connections under 200 MiB RSS and
still answers a new client at once."""

from __future__ import annotations

import resource
from pathlib import Path

import httpx
import pytest
import trio

from tests.harness import running_daemon, write_daemon_config

pytestmark = pytest.mark.slow

CONNECTIONS = 2000
RSS_LIMIT_KIB = 200 * 1024


def raise_descriptor_limit(needed: int) -> None:
    """The test holds one end of each connection and the daemon (a child) the other."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_two_thousand_idle_keep_alive_connections_stay_under_200_mib(
    tmp_path: Path,
) -> None:
    raise_descriptor_limit(CONNECTIONS + 512)
    async with running_daemon(write_daemon_config(tmp_path)) as daemon:
        host, port = daemon.api.removeprefix("http://").rsplit(":", 1)
        request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        streams: list[trio.SocketStream] = []
        before = rss_kib(daemon.process.pid)
        try:
            with trio.fail_after(120):
                for _ in range(CONNECTIONS):
                    stream = await trio.open_tcp_stream(host, int(port))
                    streams.append(stream)
                    await stream.send_all(request)
                    answer = await stream.receive_some(4096)
                    assert answer.startswith(b"HTTP/1.1 200 "), answer
                    assert b"connection: close" not in answer  # kept alive, now idle
            held = rss_kib(daemon.process.pid)
            async with httpx.AsyncClient(base_url=daemon.api) as client:
                with trio.fail_after(5):
                    assert (await client.get("/readyz")).status_code == 200
        finally:
            for stream in streams:
                await stream.aclose()
    print(f"RSS before {before / 1024:.1f} MiB, with {CONNECTIONS} idle: {held / 1024:.1f} MiB")
    assert held < RSS_LIMIT_KIB, f"{held / 1024:.1f} MiB"
