"""`somsd doctor` for carriers, against the DHL simulator over loopback HTTP."""

from __future__ import annotations

from pathlib import Path

from actors.doctor import check_config
from adapters.dhl.simulator import SHIPPING_PREFIX, DhlSimulator
from somsd.config import parse_config
from tests.adapters.conftest import Serve


def config_text(url: str, sim: DhlSimulator, *, street: str = "Hafenstr. 1") -> str:
    return f"""
[[location]]
name = "wh-1"
carriers = ["dhl"]
sender = {{ name = "Versand", street = "{street}", zip = "44147", city = "Dortmund" }}
billing_numbers = {{ V01PAK = "33333333330102" }}

[[carrier]]
name = "dhl"
kind = "dhl-parcel-de"
url = "{url}{SHIPPING_PREFIX}"
api_key_file = "dhl.key"
user = "{sim.user}"
password_file = "dhl.password"
"""


async def test_doctor_checks_reach_credentials_and_a_dry_run(tmp_path: Path, serve: Serve) -> None:
    sim = DhlSimulator()
    url, _ = await serve(sim)
    (tmp_path / "dhl.key").write_text(sim.api_key)
    (tmp_path / "dhl.password").write_text(sim.password)
    config = parse_config(config_text(url, sim), config_dir=tmp_path, environ={})
    checks = await check_config(config)
    assert [c.name for c in checks] == ["https", "reachable", "dry run from wh-1"]
    assert all(c.ok for c in checks), [c.line() for c in checks]
    assert sim.created == 0

    (tmp_path / "dhl.password").write_text("wrong")
    config = parse_config(config_text(url, sim), config_dir=tmp_path, environ={})
    [*_, dry_run] = await check_config(config)
    assert not dry_run.ok
    assert "401" in dry_run.detail
    assert "check api_key_file, user and password_file" in dry_run.detail

    (tmp_path / "dhl.password").write_text(sim.password)
    config = parse_config(
        config_text(url, sim, street="Hafenstrasse"), config_dir=tmp_path, environ={}
    )
    [*_, dry_run] = await check_config(config)
    assert not dry_run.ok
    assert "house number" in dry_run.detail
