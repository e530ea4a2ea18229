"""The operator's path from SQLite to PostgreSQL with the real CLI and real daemons:
`somsd db migrate-to-postgres`, then `db verify|rebuild|backup` and `somsd run` on PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from actors.blobs import LegacyFiles
from somsd.store import blob_key
from tests.harness import running_daemon
from tests.orders.shop import (
    CHANNEL,
    intake_path,
    list_all_orders,
    order_body,
    signed,
    somsd_cli,
    webhook_config,
)

pytestmark = pytest.mark.slow

ORDERS = 6
PASSWORD = "pw-never-shown-7f3a"
POSTGRES = '\n[store]\nbackend = "postgres"\ndsn_file = "store.dsn"\n'


async def test_a_sqlite_daemon_moves_to_postgres_and_carries_on(
    tmp_path: Path, pg_dsn: str
) -> None:
    config = webhook_config(tmp_path)
    async with running_daemon(config) as daemon, httpx.AsyncClient() as client:
        for n in range(ORDERS):
            body = order_body(f"pg-{n}")
            answer = await client.post(
                daemon.api + intake_path(), content=body, headers=signed(body)
            )
            assert answer.status_code == 202, answer.text

    # Trust authentication ignores the password; it is there to prove it is never shown.
    dsn = pg_dsn.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    (tmp_path / "store.dsn").write_text(dsn + "\n")
    config.write_text(config.read_text() + POSTGRES)
    # A carrier label as an older somsd kept it: a file in the data dir, moved in as a blob.
    (tmp_path / "data" / "labels").mkdir()
    (tmp_path / "data" / "labels" / "f-1.pdf").write_bytes(b"%PDF-1.4 old label\n")
    # And an invoice PDF it rendered, content-addressed under documents/.
    old_pdf = b"%PDF-1.4 old invoice\n"
    document = LegacyFiles(tmp_path / "data" / "documents").path_of(blob_key(old_pdf))
    document.parent.mkdir(parents=True)
    document.write_bytes(old_pdf)
    result = await somsd_cli("db", "migrate-to-postgres", "-c", str(config))
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "idempotency          6 rows  sha256 " in out, out
    assert "older files          2 stored as blobs" in out, out
    assert "(equal in both)" in out
    assert PASSWORD not in out + result.stderr.decode()

    for command in (("db", "verify"), ("db", "rebuild"), ("db", "verify")):
        result = await somsd_cli(*command, "-c", str(config))
        assert result.returncode == 0, (command, result.stderr.decode())
    assert result.stdout == b"database ok\n"
    listed = await somsd_cli("orders", "list", "-c", str(config))
    assert listed.returncode == 0, listed.stderr.decode()
    assert len(listed.stdout.decode().splitlines()) == 1 + ORDERS

    async with running_daemon(config) as daemon, daemon.admin() as admin:
        body = order_body("pg-after")
        answer = await admin.post(daemon.api + intake_path(), content=body, headers=signed(body))
        assert answer.status_code == 202, answer.text
        again = order_body("pg-0")  # taken in on SQLite: its idempotency key moved too
        answer = await admin.post(daemon.api + intake_path(), content=again, headers=signed(again))
        assert answer.status_code == 200, answer.text
        orders = await list_all_orders(admin, channel=CHANNEL)
        assert len(orders) == ORDERS + 1
        assert PASSWORD not in repr(daemon.log)
        if shutil.which("pg_dump"):
            dest = tmp_path / "live.pgdump"
            result = await somsd_cli("db", "backup", str(dest), "-c", str(config))
            assert result.returncode == 0, result.stderr.decode()
            assert dest.stat().st_size > 0


async def test_backend_postgres_without_a_dsn_file_is_a_config_error(tmp_path: Path) -> None:
    config = webhook_config(tmp_path, '\n[store]\nbackend = "postgres"\n')
    result = await somsd_cli("check-config", "-c", str(config))
    assert result.returncode == 2
    assert 'store.dsn_file: required for backend "postgres"' in result.stdout.decode() + (
        result.stderr.decode()
    )


async def test_the_store_cannot_change_on_reload(tmp_path: Path) -> None:
    """A reload naming another store is refused; the daemon keeps the one it opened."""
    config = webhook_config(tmp_path)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        (tmp_path / "store.dsn").write_text("postgresql://somsd@127.0.0.1:1/somsd\n")
        config.write_text(config.read_text() + POSTGRES)
        answer = (await admin.post("/v1/admin/reload")).json()
        assert answer["applied"] is False
        assert any(p.startswith("store: the event store cannot change") for p in answer["problems"])
