"""`[cluster]` needs the store on the cluster's own PostgreSQL database, at every gate: `somsd
check-config`, `somsd run`, and a reload (rejected, the running config goes on)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cluster.members import member_config
from tests.harness import running_daemon
from tests.pgcluster import PgCluster
from tests.test_config import somsd_cli

MISMATCH = "[cluster] and [store] must use the same PostgreSQL database"


def test_check_config_refuses_a_cluster_on_the_sqlite_store(tmp_path: Path, pg_dsn: str) -> None:
    config = member_config(tmp_path, pg_dsn)
    config.write_text(config.read_text().replace('backend = "postgres"', 'backend = "sqlite"'))
    result = somsd_cli("check-config", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f'{config}: cluster: needs [store] backend = "postgres"')


def test_run_refuses_a_store_on_another_database_and_starts_nothing(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    store_dsn, cluster_dsn = pg_cluster.fresh_database(), pg_cluster.fresh_database()
    config = member_config(tmp_path, cluster_dsn, store_dsn=store_dsn)
    result = somsd_cli("run", "-c", str(config))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{config}: cluster.dsn_file: names database 127.0.0.1:")
    assert line.endswith(MISMATCH)
    assert "Traceback" not in result.stderr


@pytest.mark.slow
async def test_a_reload_onto_another_database_is_rejected_and_the_old_config_runs_on(
    tmp_path: Path, pg_cluster: PgCluster
) -> None:
    dsn = pg_cluster.fresh_database()
    config = member_config(tmp_path, dsn)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        (tmp_path / "store.dsn").write_text(pg_cluster.fresh_database() + "\n")
        answer = await admin.post("/v1/admin/reload")
        assert answer.status_code == 422, answer.text
        assert answer.json()["applied"] is False
        (problem,) = answer.json()["problems"]
        assert problem.endswith(MISMATCH)
        rejected = await daemon.wait_log("config_reload_rejected")
        assert rejected["problems"][0].endswith(MISMATCH)
        async with httpx.AsyncClient() as client:
            scrape = (await client.get(daemon.metrics + "/metrics")).text
        assert 'somsd_config_reloads_total{result="invalid"} 1.0' in scrape
        # Still the member it was, on the database it started with.
        view = (await admin.get("/v1/admin/cluster")).json()
        assert [m["name"] for m in view["members"]] == ["a"]
        assert (await admin.get("/readyz")).status_code == 200
