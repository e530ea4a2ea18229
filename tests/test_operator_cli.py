"""The operator's command line acting on a real running daemon (issue 16, items 2, 3, 11, 14).

Every command runs as `python -m somsd ...` against a real `somsd run` with webhook channels:
orders are posted signed over HTTP, the CLI talks to the admin API, errors are one line.
"""

from __future__ import annotations

import datetime
import json
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio

from somsd.domain.order import Address
from tests.harness import START_TIMEOUT, pin_api_port, running_daemon
from tests.orders.shop import accept, order_body, somsd_cli, webhook_config

pytestmark = pytest.mark.slow

# A carrier with its driver (nothing listens at its url: no location ships with it, so it never
# calls) and a section somsd has no driver for yet (an ERP of kind rest).
CARRIER = """
[[carrier]]
name = "dhl"
kind = "dhl-parcel-de"
url = "http://127.0.0.1:9/parcel/de/shipping/v2"
api_key_file = "dhl.key"
user = "gkp-user"
password_file = "dhl.password"

[[erp]]
name = "erp"
kind = "rest"
"""

NO_STREET = Address(name="Erika Muster", street=" ", zip="10115", city="Berlin", country="DE")


def operator_config(tmp_path: Path) -> Path:
    """Webhook channels, a carrier and a driverless ERP, on a fixed API port the CLI can find."""
    (tmp_path / "dhl.key").write_text("key\n")
    (tmp_path / "dhl.password").write_text("password\n")
    return pin_api_port(webhook_config(tmp_path, CARRIER))


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = await somsd_cli(*args, "-c", str(config))
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def one_line_error(err: str) -> None:
    assert err.startswith("somsd: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


async def test_a_section_without_driver_says_so_everywhere(tmp_path: Path) -> None:
    """Start warning naming the section; `status`, the admin actors report and /readyz."""
    config = operator_config(tmp_path)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        warning = await daemon.wait_log("integration_without_driver")
        assert (warning["level"], warning["section"]) == ("warning", "erp/erp")

        code, out, err = await cli(config, "status")
        assert code == 0, err
        rows = {line.split()[0]: line for line in out.splitlines()[2:]}
        assert "no driver" not in rows["carrier/dhl"]
        assert "running (no driver)" in rows["erp/erp"]
        assert "no driver" not in rows["channel/b2b"]

        report = (await admin.get("/v1/admin/actors")).json()
        actors = {a["name"]: a for a in report["actors"]}
        assert actors["erp/erp"]["no_driver"] is True
        assert actors["carrier/dhl"]["driver"] == "dhl-parcel-de"
        assert actors["channel/b2b"]["driver"] == "webhook intake"
        # RFC 3339 in UTC, like every other time in the API.
        for stamp in (report["config_loaded_at"], actors["store"]["started_at"]):
            parsed = datetime.datetime.fromisoformat(stamp)
            assert parsed.utcoffset() == datetime.timedelta(0), stamp

        ready = await admin.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        assert any(line.startswith("erp/erp: no driver") for line in ready.json()["detail"])


async def test_orders_are_acted_on_from_the_command_line(tmp_path: Path) -> None:
    """Address correction releases an address hold; payment, status, cancel, release; by
    order number too; and every mistake is one line with a non-zero exit."""
    config = operator_config(tmp_path)
    async with running_daemon(config) as daemon, httpx.AsyncClient(base_url=daemon.api) as api:
        held = await accept(api, order_body("5001", shipping_address=NO_STREET))
        unpaid = await accept(api, order_body("5002", payment_status="pending"))
        other = await accept(
            api, order_body("5003", payment_method="invoice", payment_status="pending")
        )

        code, out, err = await cli(config, "orders", "show", "5001")
        assert code == 0, err
        assert json.loads(out)["status"] == "on-hold"

        code, _, err = await cli(config, "orders", "list", "--status", "bogus")
        assert code == 2
        one_line_error(err)
        assert "on-hold" in err
        assert "pending" in err

        # A correction that is still invalid for intake: named by its JSON path, nothing changes.
        code, _, err = await cli(
            config, "orders", "address", "5001", "--country", "Germany", "--reason", "typo"
        )
        assert code == 1
        one_line_error(err)
        assert "$.shipping_address.country" in err

        code, out, err = await cli(
            config, "orders", "address", "5001", "--street", "Hauptstr. 9", "--reason", "called"
        )
        assert code == 0, err
        assert out.startswith(f"{held}: "), out
        assert "on-hold" not in out, out
        code, out, err = await cli(config, "orders", "events", "5001")
        assert code == 0, err
        corrected = next(line for line in out.splitlines() if "AddressCorrected" in line)
        assert '"reason":"called"' in corrected
        assert '"actor":"user:' in corrected
        assert "Hauptstr. 9" in corrected
        assert any("HoldReleased" in line for line in out.splitlines())
        code, out, _ = await cli(config, "orders", "show", held)
        assert json.loads(out)["status"] != "on-hold"

        # Payment by order number, cancel by id; refused moves are one line each.
        code, out, err = await cli(
            config, "orders", "payment", "5002", "29.90", "--payment-id", "bank-1"
        )
        assert code == 0, err
        assert out.startswith(f"{unpaid}: "), out
        code, out, err = await cli(config, "orders", "cancel", other, "--reason", "customer asked")
        assert (code, out) == (0, f"{other}: canceled\n"), err
        code, _, err = await cli(config, "orders", "release", unpaid, "--reason", "x")
        assert code == 1
        one_line_error(err)
        assert "not on hold" in err
        code, _, err = await cli(config, "orders", "status", unpaid, "closed", "--reason", "x")
        assert code == 1
        one_line_error(err)

        # Outbox, inventory and fulfilment views; unknown ids are one line each.
        code, out, err = await cli(config, "dead-letters", "list")
        assert code == 0, err
        assert out.split()[:2] == ["id", "target"]
        code, _, err = await cli(config, "dead-letters", "retry", "999")
        assert code == 1
        one_line_error(err)
        code, _, err = await cli(config, "dead-letters", "retry")
        assert code == 1
        one_line_error(err)
        code, out, err = await cli(config, "dead-letters", "retry", "--target", "location/none")
        assert (code, out) == (0, "no dead letters for location/none\n"), err
        code, out, err = await cli(config, "fulfilments", "list")
        assert code == 0, err
        code, _, err = await cli(config, "fulfilments", "show", "f-nope")
        assert code == 1
        one_line_error(err)
        code, out, err = await cli(config, "inventory", "MUG-1")
        assert code in (0, 1), err
        if code == 0:
            assert json.loads(out)
        else:
            one_line_error(err)
        assert daemon.process.returncode is None


async def test_backup_is_private_and_owned_like_the_store(tmp_path: Path) -> None:
    """0600 whatever the umask, and (as root) the store's owner, not the caller's."""
    config = operator_config(tmp_path)
    async with running_daemon(config):
        pass
    database = tmp_path / "data" / "somsd.db"
    if os.geteuid() == 0:
        os.chown(database, 65534, 65534)
    backup = tmp_path / "backups" / "nightly.db"
    old_umask = os.umask(0o022)
    try:
        code, _out, err = await cli(config, "db", "backup", str(backup))
    finally:
        os.umask(old_umask)
    assert code == 0, err
    info = backup.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    owner = database.stat()
    assert (info.st_uid, info.st_gid) == (owner.st_uid, owner.st_gid)
    assert not list(backup.parent.glob("*.partial"))


def read_terminal(leader: int, until: bytes | None, deadline: float) -> bytes:
    """What a pseudo-terminal's other side wrote, until `until` appears, EOF or the deadline."""
    output = b""
    while time.monotonic() < deadline and (until is None or until not in output):
        readable, _, _ = select.select([leader], [], [], 0.5)
        if readable:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    return output


def verify_on_terminal(config: Path) -> bytes:
    """`somsd db verify` with stdout and stderr on a pseudo-terminal; what it wrote there."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "somsd", "db", "verify", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    try:
        output = read_terminal(leader, None, time.monotonic() + START_TIMEOUT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        os.close(leader)
    return output


async def test_db_verify_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    """On a TTY a progress bar names the step; piped, only the result line is written."""
    config = operator_config(tmp_path)
    async with running_daemon(config):
        pass
    output = await trio.to_thread.run_sync(verify_on_terminal, config)
    assert b"verifying" in output
    assert output.rstrip().endswith(b"database ok")
    code, out, err = await cli(config, "db", "verify")
    assert (code, out) == (0, "database ok\n"), err


def test_run_on_a_terminal_logs_readable_lines(tmp_path: Path) -> None:
    """`somsd run` with stdout on a pseudo-terminal writes ConsoleRenderer lines, not JSON."""
    config = operator_config(tmp_path)
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    process = subprocess.Popen(  # our own interpreter and module
        [sys.executable, "-m", "somsd", "run", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    try:
        output = read_terminal(leader, b"somsd_ready", time.monotonic() + START_TIMEOUT)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        os.close(leader)
    text = output.decode("utf-8", "replace")
    assert "somsd_ready" in text, text
    ready = next(line for line in text.splitlines() if "somsd_ready" in line)
    assert not ready.lstrip().startswith(("<", "{")), ready
    assert "[info" in ready, ready
    assert "integration_without_driver" in text
