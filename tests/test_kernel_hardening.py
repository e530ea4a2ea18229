"""Issue 15/16 regressions over a real `somsd run`: reloads never kill the daemon, one daemon
per data dir, busy ports named, clear start-up failures, HTTP connection hygiene."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from somsd.domain.testing import sample_line
from somsd.http import READ_TIMEOUT_SECONDS
from tests.harness import DaemonProcess, running_daemon, write_daemon_config
from tests.orders.shop import (
    CHANNEL,
    accept,
    order_body,
    post_order,
    sample_value,
    scrape,
    webhook_config,
)

pytestmark = pytest.mark.slow

NON_ASCII_SECRET = "geheim-ä-schlüssel-123"


def somsd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "somsd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def reload_by_sighup(daemon: DaemonProcess) -> str:
    """Send SIGHUP and return the log event that ended that reload."""
    mark = len(daemon.log)
    daemon.signal(signal.SIGHUP)
    ends = {"config_reloaded", "config_reload_rejected", "config_reload_failed"}
    await daemon.wait_for(
        "the reload's outcome", lambda: any(e.get("event") in ends for e in daemon.log[mark:])
    )
    return next(e["event"] for e in daemon.log[mark:] if e.get("event") in ends)


def busy_port() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    return holder


async def test_deeply_nested_config_on_reload_is_rejected_and_counted(tmp_path: Path) -> None:
    """Issue 15.1: 2,000 nested inline tables + SIGHUP -> rejected, counted, still serving."""
    config = webhook_config(tmp_path)
    good = config.read_text()
    async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.api) as client:
        config.write_text(good + "x = " + "{a=" * 2000 + "1" + "}" * 2000 + "\n")
        assert await reload_by_sighup(daemon) == "config_reload_rejected"
        rejected = [e for e in daemon.log if e.get("event") == "config_reload_rejected"][-1]
        assert "nested too deeply" in rejected["problems"][0]
        await accept(client, order_body("deep-1"))
        assert sample_value(await scrape(daemon), "somsd_config_reloads_total", result="invalid")
        assert daemon.process.returncode is None


async def test_non_ascii_secrets_reload_and_verify(tmp_path: Path) -> None:
    """Issue 15.2: a non-ASCII channel secret and admin token reload fine; orders signed with
    the new key are accepted, the old key is refused."""
    config = webhook_config(tmp_path)
    async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.api) as client:
        (tmp_path / f"{CHANNEL}.secret").write_text(NON_ASCII_SECRET + "\n")
        (tmp_path / "admin.token").write_text(NON_ASCII_SECRET + "\n")
        assert await reload_by_sighup(daemon) == "config_reloaded"
        response = await post_order(client, order_body("utf8-1"), key=NON_ASCII_SECRET)
        assert response.status_code == 202, response.text
        old_key = await post_order(client, order_body("utf8-2"))
        assert old_key.status_code == 401
        # A second reload compares the non-ASCII secrets with each other (the original crash).
        assert await reload_by_sighup(daemon) == "config_reloaded"
        assert (await client.get("/readyz")).status_code == 200


async def test_reload_to_a_busy_port_fails_and_keeps_the_old_listener(tmp_path: Path) -> None:
    """Issue 15.3: api.listen / metrics.listen moved to a port in use -> the reload is counted
    `failed`, logged with the address, nothing of it applied, the old listeners keep serving;
    a later move to a free port takes effect."""
    config = webhook_config(tmp_path)
    good = config.read_text()
    holder = busy_port()
    taken = f"127.0.0.1:{holder.getsockname()[1]}"
    try:
        async with running_daemon(config) as daemon:
            old_api = daemon.api
            for table in ("api", "metrics"):
                old, new = f'[{table}]\nlisten = "127.0.0.1:0"', f'[{table}]\nlisten = "{taken}"'
                config.write_text(good.replace(old, new))
                assert await reload_by_sighup(daemon) == "config_reload_failed"
                failed = [e for e in daemon.log if e.get("event") == "config_reload_failed"][-1]
                assert failed["reason"] == f"cannot listen on {taken}: Address already in use"
                async with httpx.AsyncClient(base_url=old_api) as client:
                    assert (await client.get("/readyz")).status_code == 200
            samples = await scrape(daemon)
            assert sample_value(samples, "somsd_config_reloads_total", result="failed") == 2
            assert daemon.process.returncode is None

            # The admin route answers the same failure as 422, with the address.
            async with daemon.admin() as admin:
                response = await admin.post("/v1/admin/reload")
            assert response.status_code == 422
            assert taken in response.json()["problems"][0]

            free = busy_port()
            free_address = f"127.0.0.1:{free.getsockname()[1]}"
            free.close()
            config.write_text(
                good.replace('[api]\nlisten = "127.0.0.1:0"', f'[api]\nlisten = "{free_address}"')
            )
            assert await reload_by_sighup(daemon) == "config_reloaded"
            async with httpx.AsyncClient(base_url=f"http://{free_address}") as client:
                with trio.fail_after(10):
                    while True:
                        try:
                            if (await client.get("/readyz")).status_code == 200:
                                break
                        except httpx.ConnectError:
                            await trio.sleep(0.05)
    finally:
        holder.close()


async def test_second_daemon_on_the_same_data_dir_exits_naming_the_holder(tmp_path: Path) -> None:
    """Issue 16.1: a copy of the config (other ports, same data dir) exits at once, one line."""
    first = tmp_path / "first"
    first.mkdir()
    second = tmp_path / "second"
    second.mkdir()
    data = tmp_path / "data"
    async with running_daemon(write_daemon_config(first, data_dir=data)) as daemon:
        result = somsd("run", "-c", str(write_daemon_config(second, data_dir=data)))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f'somsd: data dir "{data}" is in use by another somsd (pid {daemon.process.pid}); '
            "stop it first or give this one its own daemon.data_dir"
        ]
        assert result.stdout == ""  # no actor started, nothing logged
        async with httpx.AsyncClient() as client:
            assert (await client.get(daemon.api + "/readyz")).status_code == 200


def test_busy_port_at_start_is_named_before_anything_starts(tmp_path: Path) -> None:
    """Issue 16.1: EADDRINUSE at start names the address; the store is never opened."""
    holder = busy_port()
    taken = f"127.0.0.1:{holder.getsockname()[1]}"
    try:
        config = write_daemon_config(tmp_path)
        config.write_text(config.read_text().replace('"127.0.0.1:0"', f'"{taken}"', 1))
        result = somsd("run", "-c", str(config))
    finally:
        holder.close()
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"somsd: cannot listen on {taken}: Address already in use; "
        "free the port or change the listen address"
    ]
    assert not (tmp_path / "data" / "somsd.db").exists()


def _read_only_mount(path: Path) -> None:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")


def test_unwritable_data_dir_is_one_line_with_the_fix(tmp_path: Path) -> None:
    """Issue 15.14 / 16.13: `somsd run` and `somsd check-config` name the path and the fix."""
    data = tmp_path / "readonly"
    _read_only_mount(data)
    try:
        config = write_daemon_config(tmp_path, data_dir=data)
        for command in ("run", "check-config"):
            result = somsd(command, "-c", str(config))
            assert result.returncode != 0
            lines = result.stderr.splitlines()
            assert len(lines) == 1, result.stderr
            assert f'"{data}" is not writable' in lines[0]
            assert "chown somsd:" in lines[0]
            assert "Traceback" not in result.stdout + result.stderr
        # With another problem in the file, check-config still names both in one run.
        config.write_text(config.read_text().replace("[daemon]\n", "[daemon]\ncolour = 1\n"))
        result = somsd("check-config", "-c", str(config))
        assert result.returncode == 2
        assert len(result.stderr.splitlines()) == 2, result.stderr
        assert "daemon.colour: unknown key" in result.stderr
        assert f'"{data}" is not writable' in result.stderr
    finally:
        subprocess.run(["umount", str(data)], check=False)


def test_check_config_reports_every_problem_in_one_run(tmp_path: Path) -> None:
    """Issue 16.13: unknown keys, bad durations, names, countries and ranges all at once."""
    (tmp_path / "b2b.secret").write_text("k\n")
    config = tmp_path / "somsd.toml"
    config.write_text(
        f"""
[daemon]
data_dir = "{tmp_path / "data"}"
colour = "blue"

[api]
max_body_bytes = 99999999999999999999

[[channel]]
name = "B2B Shop"
kind = "webhook"
secret_file = "b2b.secret"
pol_interval = "5s"
poll_interval = "5 s"

[[location]]
name = "wh-1"
country = "Germany"
ships_to = ["DE", "de"]
lat = 123.0
lon = 7.0
"""
    )
    result = somsd("check-config", "-c", str(config))
    assert result.returncode == 2
    problems = [line.removeprefix(f"{config}: ") for line in result.stderr.splitlines()]
    assert problems == [
        "daemon.colour: unknown key (check the spelling)",
        "api.max_body_bytes: must be at most 67108864",
        "channel[0].pol_interval: unknown key (check the spelling)",
        'channel[0].poll_interval: "5 s" is not a duration; write "30s", "5m" or "250ms"',
        "location[0].lat: must be at most 90",
        "channel[0].name: \"B2B Shop\" must be lower-case letters, digits, '-' or '_' "
        "(it appears in URLs and metric labels)",
        'location[0].country: "Germany" is not an ISO 3166-1 alpha-2 country code; write e.g. "DE"',
        'location[0].ships_to[1]: "de" is not an ISO 3166-1 alpha-2 country code; write e.g. "DE"',
    ]


async def test_413_closes_the_connection_and_the_next_request_works(tmp_path: Path) -> None:
    """Issue 15.12: a 413 says `Connection: close`; a keep-alive client's next request works."""
    config = webhook_config(tmp_path, max_body_bytes=1024)
    async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.api) as client:
        too_big = await post_order(client, b"{" + b" " * 4096 + b"}")
        assert too_big.status_code == 413
        assert too_big.headers["connection"] == "close"
        assert (await client.get("/readyz")).status_code == 200


async def test_a_stalled_request_header_is_cut_off(tmp_path: Path) -> None:
    """Issue 15.12: half a request header and then silence: closed after the read timeout,
    not held for minutes."""
    async with running_daemon(write_daemon_config(tmp_path)) as daemon:
        host, port = daemon.api.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = trio.current_time()
        with trio.fail_after(READ_TIMEOUT_SECONDS + 10):
            while await stream.receive_some(1024):
                pass
        assert trio.current_time() - started >= READ_TIMEOUT_SECONDS - 1
        await stream.aclose()
        async with httpx.AsyncClient() as client:
            assert (await client.get(daemon.api + "/readyz")).status_code == 200


async def test_verify_is_clean_after_orders_with_several_shipments(tmp_path: Path) -> None:
    """Issue 15.10: an order shipped in five parts verifies clean from a fresh process (another
    hash seed, so another set order) while the daemon runs and after it stopped."""
    config = webhook_config(tmp_path)
    lines = [sample_line(sku=f"SKU-{n}", quantity=1, unit_price="5.00") for n in range(5)]
    async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.api) as shop:
        async with daemon.admin() as admin:
            for order in range(3):
                order_id = await accept(shop, order_body(f"multi-ship-{order}", lines=lines))
                for line in range(5):
                    response = await admin.post(
                        f"/v1/orders/{order_id}/shipments",
                        json={
                            "lines": [{"line": line, "quantity": 1}],
                            "shipment_id": f"shp-{order}-{line}-{'z' * line}",
                        },
                    )
                    assert response.status_code == 200, response.text
        for seed in ("1", "2", "3"):
            with trio.fail_after(60):
                verify = await trio.run_process(
                    [sys.executable, "-m", "somsd", "db", "verify", "-c", str(config)],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env={**os.environ, "PYTHONHASHSEED": seed},
                )
            assert verify.returncode == 0, verify.stderr.decode()
