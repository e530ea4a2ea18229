"""The operator commands against a real running daemon and its real database."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from tests.harness import pin_api_port, running_daemon, write_daemon_config

pytestmark = pytest.mark.slow


async def somsd(*args: str) -> tuple[int, str, str]:
    result = await trio.run_process(
        [sys.executable, "-m", "somsd", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def fixed_port_config(tmp_path: Path) -> Path:
    """`reload` and `status` find the daemon through api.listen, so it needs a real port."""
    return pin_api_port(write_daemon_config(tmp_path))


async def test_status_and_reload_talk_to_the_running_daemon(tmp_path: Path) -> None:
    config = fixed_port_config(tmp_path)
    async with running_daemon(config) as daemon:
        code, out, err = await somsd("status", "-c", str(config))
        assert code == 0, err
        assert out.splitlines()[0] == "ready: yes"
        assert any(line.split()[:3] == ["store", "root", "running"] for line in out.splitlines())

        code, out, err = await somsd("reload", "-c", str(config))
        assert (code, out) == (0, "reloaded; changed: nothing\n"), err
        await daemon.wait_log("config_reloaded")


async def test_reload_without_a_daemon_says_so_in_one_line(tmp_path: Path) -> None:
    config = fixed_port_config(tmp_path)
    code, _, err = await somsd("reload", "-c", str(config))
    assert code == 1
    assert err.startswith("somsd: cannot reach somsd at http://127.0.0.1:")
    assert err.count("\n") == 1
    assert "Traceback" not in err


async def test_backup_while_running_then_verify_and_rebuild(tmp_path: Path) -> None:
    """`db backup` copies the live database; `db verify` and `db rebuild` succeed on it."""
    config = write_daemon_config(tmp_path)
    backup = tmp_path / "backup.db"
    async with running_daemon(config):
        code, out, err = await somsd("db", "backup", str(backup), "-c", str(config))
        assert code == 0, err
    assert backup.stat().st_size > 0
    code, out, err = await somsd("db", "verify", "-c", str(config))
    assert (code, out) == (0, "database ok\n"), err
    code, out, err = await somsd("db", "rebuild", "-c", str(config))
    assert code == 0, err


async def test_db_commands_on_a_missing_database_fail_clearly(tmp_path: Path) -> None:
    config = write_daemon_config(tmp_path)
    code, _, err = await somsd("db", "verify", "-c", str(config))
    assert code == 1
    database = tmp_path / "data" / "somsd.db"
    assert err == f"somsd: no database at {database} (check daemon.data_dir)\n"


async def test_backup_refuses_to_overwrite_in_one_line(tmp_path: Path) -> None:
    config = write_daemon_config(tmp_path)
    async with running_daemon(config):
        pass
    existing = tmp_path / "existing.db"
    existing.write_text("")
    code, _, err = await somsd("db", "backup", str(existing), "-c", str(config))
    assert code == 1
    assert err == f"somsd: {existing} exists; choose a new backup name or remove the old file\n"
