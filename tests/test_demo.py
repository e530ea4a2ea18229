"""`somsd demo --orders N`: the embedded default end to end, as a newcomer runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio

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


@pytest.mark.slow
async def test_demo_brings_300_orders_to_a_final_state(tmp_path: Path) -> None:
    """Shops, router, warehouses, 3PL, stores and ERP take 300 orders to complete, exit 0.

    The main shop is the Smartstore simulator: its 200 orders are polled in, and the shop's own
    state (read in the demo's process) shows every one shipped and complete; the one
    reconciliation finds exactly the seeded drift."""
    from somsd.demo import UNKNOWN_IN_SHOP, WRONGLY_SHOWN, WRONGLY_UNPUBLISHED

    code, output = await run_demo(tmp_path)
    assert code == 0, output[-3000:]
    assert "all orders final" in output
    assert "300 of 300" in output
    assert _count(output, "orders placed") == _count(output, "taken in as new orders") == 300
    assert _count(output, "smartstore: shop checkouts") == 200, output[-3000:]
    assert _count(output, "smartstore: polled in") == 200
    assert _count(output, "smartstore: shop shipped") == 200
    assert _count(output, "smartstore: shop complete") == 200
    assert _count(output, "smartstore:   wrongly_hidden") == WRONGLY_UNPUBLISHED
    assert _count(output, "smartstore:   wrongly_shown") == WRONGLY_SHOWN
    assert _count(output, "smartstore:   unknown_in_shop") == UNKNOWN_IN_SHOP
    assert _count(output, 'dead_letters{target="channel/smartstore"}') == 0
    # Every order's confirmation at least reached the demo's SMTP server.
    assert _count(output, "mails received by the SMTP server") >= 300


@pytest.mark.slow
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


# -- the live view in a terminal, as a newcomer runs `make demo` twice -----------------------

TERMINAL = (24, 80)  # rows, columns: the smallest terminal the view is made for
RUN_SECONDS = 10  # how long each live run places orders before Ctrl-C
PTY_TIME_LIMIT = 90  # per run: start, RUN_SECONDS of orders, Ctrl-C and a clean stop


def _count(output: str, row: str) -> int:
    """The number in the summary row labelled `row`."""
    match = re.search(re.escape(row) + r"\s*│\s*(\d+)", output)
    assert match, output[-3000:]
    return int(match.group(1))


def _live_run(data_dir: Path) -> tuple[int, str, str]:
    """One `somsd demo` in a pseudo-terminal, stopped with Ctrl-C: (exit code, run id, output)."""
    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "somsd", "demo", "--data-dir", str(data_dir)],
        dimensions=TERMINAL,
        encoding="utf-8",
        codec_errors="replace",
        timeout=PTY_TIME_LIMIT,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"},
    )
    try:
        child.expect(r"run ([0-9a-f]{6}) · \d+ s")
        run_id = child.match.group(1)
        child.expect(r"run [0-9a-f]{6} · " + rf"({RUN_SECONDS}|[1-9]\d{{2,}}|[2-9]\d) s")
        # While it runs, the generated config names the port really bound: the CLI reaches it.
        status = subprocess.run(
            [sys.executable, "-m", "somsd", "status", "-c", str(data_dir / "somsd.toml")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        child.sendintr()
        child.expect(pexpect.EOF)
        output = child.before
    finally:
        child.close(force=True)
    assert child.exitstatus is not None, output[-3000:]
    return child.exitstatus, run_id, output


@pytest.mark.slow
def test_demo_runs_twice_in_a_terminal_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """Two live runs into one data dir at 80x24: Ctrl-C ends each with its summary and exit 0,
    no traceback, and the second run's orders are new orders (its own numbers), not duplicates."""
    data_dir = tmp_path / "demo"
    runs = [_live_run(data_dir) for _ in range(2)]
    (first_code, first_id, _), (code, second_id, output) = runs
    assert first_code == 0
    assert code == 0, output[-3000:]
    assert first_id != second_id
    for _, run_id, text in runs:
        assert f"somsd demo summary (run {run_id})" in text, text[-3000:]
        assert "Traceback" not in text
        assert "ExceptionGroup" not in text
        assert "stopped by Ctrl-C" in text
    assert _count(output, "taken in as new orders") > 0
    assert _count(output, "already known (other runs)") == 0
    assert _count(output, "  complete") > 0  # and they are worked: the 3PL and stores go on
    assert _count(output, "orders placed") == _count(output, "taken in as new orders")


def test_the_header_fits_every_width_and_keeps_urls_and_file_names() -> None:
    """The header is one line at any width; the URLs and the two file names stay whole."""
    from somsd.demo import fit_header

    token, config = (
        "/srv/a/rather/long/demo/folder/admin.token",
        "/srv/a/rather/long/demo/folder/somsd.toml",
    )
    for width in range(70, 220, 5):
        line = fit_header("http://127.0.0.1:8470", "http://127.0.0.1:9470", token, config, width)
        assert len(line) <= width
        assert "127.0.0.1:8470" in line
        assert ":9470" in line
        assert "admin.token" in line
        assert "somsd.toml" in line
