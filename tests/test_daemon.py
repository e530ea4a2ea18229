"""A real `somsd run` process: readiness, reload, metrics, secrets, shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ADMIN_TOKEN, running_daemon, write_daemon_config

pytestmark = pytest.mark.slow

CHANNEL_SECRET = "hmac-key-never-in-logs-51c0"

TWO_CHANNELS = """
[[location]]
name = "wh-1"

[[channel]]
name = "alpha"
kind = "webhook"
secret_file = "alpha.secret"
locations = ["wh-1"]

[[channel]]
name = "beta"
kind = "webhook"
secret_file = "beta.secret"
locations = []
"""


def two_channel_config(tmp_path: Path) -> Path:
    (tmp_path / "alpha.secret").write_text(CHANNEL_SECRET + "\n")
    (tmp_path / "beta.secret").write_text("beta-key\n")
    return write_daemon_config(tmp_path, TWO_CHANNELS)


def actors_by_name(report: dict[str, object]) -> dict[str, dict[str, object]]:
    actors = report["actors"]
    assert isinstance(actors, list)
    return {a["name"]: a for a in actors}


async def test_reload_restarts_only_the_changed_actor(tmp_path: Path) -> None:
    """SIGHUP with one channel changed: RELOADING=1 then READY=1; only that channel restarts."""
    config = two_channel_config(tmp_path)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        before = actors_by_name((await admin.get("/v1/admin/actors")).json())
        assert before["channel/alpha"]["handled"] == 1
        assert before["channel/beta"]["state"] == "running"

        config.write_text(config.read_text().replace("locations = []", "hide_sold_out = false"))
        mark = len(daemon.notifications)
        daemon.signal(signal.SIGHUP)
        reloading = await daemon.wait_notification("RELOADING=1", after=mark)
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        fields = dict(line.split("=", 1) for line in reloading.splitlines())
        # MONOTONIC_USEC comes from the real monotonic clock (not trio's offset clock).
        assert 0 <= now_usec - int(fields["MONOTONIC_USEC"]) < 10_000_000
        await daemon.wait_notification("READY=1", after=mark + 1)
        assert daemon.notifications[mark].startswith("RELOADING=1")
        logged = await daemon.wait_log("config_reloaded")
        assert logged["changed"] == ["channel/beta"]

        after = actors_by_name((await admin.get("/v1/admin/actors")).json())
        alpha, beta = after["channel/alpha"], after["channel/beta"]
        # alpha: same task (incarnation) and same actor object (it counted both requests).
        assert alpha["incarnation"] == before["channel/alpha"]["incarnation"]
        assert alpha["started_at"] == before["channel/alpha"]["started_at"]
        assert alpha["handled"] == 2
        # beta: a new actor with the new config.
        assert beta["incarnation"] == before["channel/beta"]["incarnation"] + 1
        assert beta["handled"] == 1
        assert beta["state"] == "running"


async def test_invalid_reload_keeps_the_old_config_running(tmp_path: Path) -> None:
    """A broken config on SIGHUP is rejected, logged with its path and counted; serving goes on."""
    config = two_channel_config(tmp_path)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        before = actors_by_name((await admin.get("/v1/admin/actors")).json())
        good = config.read_text()
        config.write_text(good.replace("[daemon]", '[daemon]\ncolour = "blue"'))
        mark = len(daemon.notifications)
        daemon.signal(signal.SIGHUP)
        await daemon.wait_notification("RELOADING=1", after=mark)
        ready = await daemon.wait_notification("READY=1", after=mark + 1)
        assert "reload rejected" in ready
        rejected = await daemon.wait_log("config_reload_rejected")
        assert rejected["problems"] == ["daemon.colour: unknown key (check the spelling)"]

        assert (await admin.get("/healthz")).status_code == 200
        assert (await admin.get("/readyz")).status_code == 200
        after = actors_by_name((await admin.get("/v1/admin/actors")).json())
        assert {n: a["incarnation"] for n, a in after.items()} == {
            n: a["incarnation"] for n, a in before.items()
        }
        async with httpx.AsyncClient() as client:
            scrape = (await client.get(daemon.metrics + "/metrics")).text
        assert 'somsd_config_reloads_total{result="invalid"} 1.0' in scrape

        # The admin route reports the same rejection, with the problem, as 422.
        response = await admin.post("/v1/admin/reload")
        assert response.status_code == 422
        assert response.json()["applied"] is False
        assert response.json()["problems"] == ["daemon.colour: unknown key (check the spelling)"]

        config.write_text(good)
        response = await admin.post("/v1/admin/reload")
        assert response.status_code == 200
        assert response.json() == {"applied": True, "changed": [], "problems": []}


async def test_sighup_burst_coalesces(tmp_path: Path) -> None:
    """Many SIGHUPs in a row cause at most two reloads (the running one and one more)."""
    config = two_channel_config(tmp_path)
    async with running_daemon(config) as daemon:
        for _ in range(20):
            daemon.signal(signal.SIGHUP)
        await daemon.wait_log("config_reloaded")
        async with daemon.admin() as admin:
            await admin.get("/v1/admin/actors")  # a round trip: pending signals were handled
        reloads = [e for e in daemon.log if e.get("event") == "config_reloaded"]
        assert 1 <= len(reloads) <= 2


async def test_metrics_scrape_is_valid_prometheus_and_openmetrics(tmp_path: Path) -> None:
    """The scrape parses with prometheus_client's parser and `promtool check metrics` is silent."""
    config = two_channel_config(tmp_path)
    async with running_daemon(config) as daemon, httpx.AsyncClient() as client:
        response = await client.get(daemon.metrics + "/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        for name in (
            "somsd_actor_up",
            "somsd_actor_restarts",
            "somsd_mailbox_depth",
            "somsd_eventlog_append_seconds",
            "somsd_eventlog_batch_size",
            "somsd_config_reloads",
            "somsd_config_last_reload_success_timestamp_seconds",
            "process_resident_memory_bytes",
        ):
            assert name in families, name
        up = {s.labels["actor"]: s.value for s in families["somsd_actor_up"].samples}
        assert up["channel/alpha"] == 1
        assert up["store"] == 1
        promtool = await trio.run_process(
            ["promtool", "check", "metrics"],
            stdin=response.content,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert (promtool.returncode, promtool.stdout, promtool.stderr) == (0, b"", b"")

        openmetrics = await client.get(
            daemon.metrics + "/metrics", headers={"Accept": "application/openmetrics-text"}
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.endswith("# EOF\n")


async def test_admin_routes_need_the_bearer_token(tmp_path: Path) -> None:
    config = two_channel_config(tmp_path)
    async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.api) as client:
        assert (await client.get("/v1/admin/actors")).status_code == 401
        wrong = await client.get("/v1/admin/actors", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "unauthorized"
        right = await client.get(
            "/v1/admin/actors", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert right.status_code == 200
        openapi = (await client.get("/openapi.json")).json()
        assert openapi["paths"]["/v1/admin/reload"]["post"]["security"] == [{"bearer": []}]


async def test_secrets_never_reach_the_log(tmp_path: Path) -> None:
    """Loading, reloading and rejecting a config that holds a secret never prints it."""
    config = two_channel_config(tmp_path)
    config.write_text(config.read_text().replace("[daemon]", '[daemon]\nlog_level = "debug"'))
    async with running_daemon(config) as daemon:
        (tmp_path / "alpha.secret").write_text("rotated-" + CHANNEL_SECRET)
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log("config_reloaded")
        config.write_text(config.read_text().replace('kind = "webhook"', "kind = 7", 1))
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log("config_reload_rejected")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit() == 0
    assert CHANNEL_SECRET not in "\n".join(daemon.output)
    assert ADMIN_TOKEN not in "\n".join(daemon.output)


async def test_sigterm_stops_cleanly_with_stopping_notification(tmp_path: Path) -> None:
    """SIGTERM: STOPPING=1, listeners close, exit code 0."""
    config = two_channel_config(tmp_path)
    async with running_daemon(config) as daemon:
        daemon.signal(signal.SIGTERM)
        await daemon.wait_notification("STOPPING=1")
        assert await daemon.wait_exit() == 0
        await daemon.wait_log("somsd_stopped")
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(daemon.api + "/healthz")


def test_unopenable_data_dir_fails_start_with_exit_1(tmp_path: Path) -> None:
    """A daemon whose store cannot open never reports READY and exits non-zero."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = write_daemon_config(tmp_path, data_dir=blocker / "data")
    result = subprocess.run(
        [sys.executable, "-m", "somsd", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    # One line naming the path and the fix, before any actor started.
    assert result.stderr.splitlines() == [
        f'somsd: daemon.data_dir: "{blocker}" is not a directory; point data_dir at a directory'
    ]
    assert "Traceback" not in result.stderr + result.stdout


async def test_watchdog_pings_while_the_loop_runs(tmp_path: Path) -> None:
    """With WATCHDOG_USEC set, the daemon sends WATCHDOG=1 repeatedly at half the interval."""
    config = two_channel_config(tmp_path)
    async with running_daemon(config, extra_env={"WATCHDOG_USEC": "200000"}) as daemon:
        await daemon.wait_for(
            "three watchdog pings", lambda: daemon.notifications.count("WATCHDOG=1") >= 3
        )
