"""`somsd demo --orders N`: the embedded default end to end, as a newcomer runs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

pytestmark = pytest.mark.slow

# The bound for 300 orders from a fresh clone; runs here take 25-50 s.
DEMO_TIME_LIMIT = 120
# With a flaky 3PL, entries that fail during the outage wait out their backoff (1 s doubling,
# so up to ~30 s after the outage ends); runs here take 45-75 s. The bound allows for a loaded
# CI machine; losing an order shows up as a non-final order, not as time.
FLAKY_TIME_LIMIT = 240


async def run_demo(tmp_path: Path, *extra: str, limit: float = DEMO_TIME_LIMIT) -> tuple[int, str]:
    command = [sys.executable, "-m", "somsd", "demo", "--orders", "300", "--no-live"]
    command += ["--data-dir", str(tmp_path / "demo"), "--timeout", str(limit - 10), *extra]
    with trio.fail_after(limit):
        result = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


async def test_demo_brings_300_orders_to_a_final_state(tmp_path: Path) -> None:
    """Shop, router, warehouses, 3PL, stores and ERP take 300 orders to complete, exit 0."""
    code, output = await run_demo(tmp_path)
    assert code == 0, output[-3000:]
    assert "all orders final" in output
    assert "300 of 300" in output


async def test_demo_survives_a_flaky_3pl_without_losing_anything(tmp_path: Path) -> None:
    """With 20 % 3PL errors and a 10 s outage every order still completes; retries are counted."""
    code, output = await run_demo(
        tmp_path, "--error-rate", "0.2", "--outage-after", "3", limit=FLAKY_TIME_LIMIT
    )
    assert code == 0, output[-3000:]
    assert "300 of 300" in output
    retry_rows = [line for line in output.splitlines() if 'outcome="retry"' in line]
    assert retry_rows, output[-3000:]
    dead_rows = [line for line in output.splitlines() if "dead_letters{" in line]
    assert all(line.split("│")[-2].strip() == "0" for line in dead_rows), dead_rows
