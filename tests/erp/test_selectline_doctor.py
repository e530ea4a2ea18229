"""`somsd doctor`'s SelectLine checks against the real simulator."""

from __future__ import annotations

from pathlib import Path

from actors.doctor import check_selectline
from adapters.selectline.simulator import SelectLineKnobs, SelectLineSimulator
from somsd.config import ErpConfig, SecretFile
from somsd.secrets import Secret
from tests.adapters.conftest import Serve


def section(url: str, tmp_path: Path, password: str = "sim-password") -> ErpConfig:
    path = tmp_path / "sl.password"
    path.write_text(password + "\n")
    return ErpConfig(
        name="sl", kind="selectline", url=url, password_file=SecretFile(path, Secret(password))
    )


async def test_a_healthy_erp_passes_every_check_and_gives_the_seat_back(
    serve: Serve, tmp_path: Path
) -> None:
    sim = SelectLineSimulator(knobs=SelectLineKnobs(seats=1))
    sim.seed(3)
    url, _ = await serve(sim)
    checks = await check_selectline(section(url, tmp_path), {"200", "400"})
    assert [(c.name, c.ok) for c in checks] == [
        ("reachable", True),
        ("login", True),
        ("read articles", True),
        ("read documents", True),
        ("read warehouses", True),
        ("warehouses", True),
        ("clock", True),
    ]
    assert not sim.sessions


async def test_missing_warehouses_taken_seats_and_a_skewed_clock_are_named(
    serve: Serve, tmp_path: Path
) -> None:
    sim = SelectLineSimulator(knobs=SelectLineKnobs(clock_skew=600))
    sim.seed(1)
    url, _ = await serve(sim)
    checks = {c.name: c for c in await check_selectline(section(url, tmp_path), {"200", "999"})}
    assert not checks["warehouses"].ok
    assert "999" in checks["warehouses"].detail
    assert not checks["clock"].ok
    sim.knobs.seats = 0
    checks = {c.name: c for c in await check_selectline(section(url, tmp_path), set())}
    assert not checks["login"].ok
    assert "no free SelectLine licence" in checks["login"].detail
