"""`somsd db verify|rebuild` on the PostgreSQL store of a cluster: the database then also holds
the lease and member tables, the outbox's NOTIFY triggers and functions, and blobs; verify
must judge the store by its own objects, live members writing beside it or not."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest
import trio

from tests.harness import running_daemon
from tests.orders.shop import intake_path, order_body, signed, somsd_cli, webhook_config

pytestmark = pytest.mark.slow

ORDERS = 4


def cluster_config(tmp_path: Path, dsn: str) -> Path:
    (tmp_path / "store.dsn").write_text(dsn + "\n")
    return webhook_config(
        tmp_path,
        """
[[location]]
name = "wh-1"

[store]
backend = "postgres"
dsn_file = "store.dsn"

[cluster]
member = "a"
dsn_file = "store.dsn"
lease_ttl = "2s"
renew_every = "500ms"
""",
    )


async def notify_triggers_installed(dsn: str) -> None:
    """The member installs the outbox's NOTIFY triggers once its listener connects."""
    with trio.fail_after(15):
        while True:
            with psycopg.connect(dsn) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'outbox_%notify'"
                ).fetchone()
            if row == (2,):
                return
            await trio.sleep(0.1)


async def test_verify_and_rebuild_pass_on_a_cluster_database_beside_a_live_member(
    tmp_path: Path, pg_dsn: str
) -> None:
    config = cluster_config(tmp_path, pg_dsn)
    async with running_daemon(config) as daemon, httpx.AsyncClient() as client:
        await notify_triggers_installed(pg_dsn)
        for n in range(ORDERS):
            body = order_body(f"cv-{n}")
            answer = await client.post(
                daemon.api + intake_path(), content=body, headers=signed(body)
            )
            assert answer.status_code == 202, answer.text
        for command in (("db", "verify"), ("db", "rebuild"), ("db", "verify")):
            result = await somsd_cli(*command, "-c", str(config))
            assert result.returncode == 0, (command, result.stdout + result.stderr)
        assert result.stdout == b"database ok\n"
        body = order_body("cv-after-rebuild")
        answer = await client.post(daemon.api + intake_path(), content=body, headers=signed(body))
        assert answer.status_code == 202, answer.text
    for command in (("db", "rebuild"), ("db", "verify")):
        result = await somsd_cli(*command, "-c", str(config))
        assert result.returncode == 0, (command, result.stdout.decode(), result.stderr.decode())
    assert result.stdout == b"database ok\n"


async def test_verify_names_a_disabled_notify_trigger_and_a_dropped_guard(
    tmp_path: Path, pg_dsn: str
) -> None:
    config = cluster_config(tmp_path, pg_dsn)
    async with running_daemon(config):
        await notify_triggers_installed(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE outbox DISABLE TRIGGER outbox_notify")
        conn.execute("DROP TRIGGER events_no_truncate ON events")
    result = await somsd_cli("db", "verify", "-c", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    shown = (result.stdout + result.stderr).decode()
    assert "trigger 'events_no_truncate' is missing" in shown
    assert (
        "trigger 'outbox_notify' on outbox is disabled; enable it with "
        "ALTER TABLE outbox ENABLE TRIGGER outbox_notify"
    ) in shown
