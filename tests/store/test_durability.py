"""Durability with a real process: SIGKILL at a random moment loses no acknowledged append."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.store.helpers import StoreBackend, StreamStats

REPO = Path(__file__).resolve().parents[2]
# Three kills: enough to hit different points of the batch cycle (mid-fsync, between batches,
# during recovery of the previous crash) while keeping the test to a few seconds.
KILLS = 3
# Kill 0.3-1.5 s after "ready": past start-up, at full throughput, bounded in time.
KILL_AFTER = (0.3, 1.5)


async def run_and_kill(path: Path | str, run_id: str, delay: float) -> list[str]:
    """Start the appender, kill it `delay` s after it is ready; return the ids it acked."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.store.appender", str(path), run_id],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    buffer = b""
    acked: list[str] = []
    ready = False

    def take_lines() -> None:
        nonlocal buffer, ready
        *lines, buffer = buffer.split(b"\n")  # a trailing partial line stays buffered
        for line in lines:
            if line == b"ready":
                ready = True
            elif line.startswith(b"ack "):
                acked.append(line[4:].decode())

    try:
        with trio.fail_after(20):  # generous start-up bound for a loaded 2-core machine
            while not ready:
                chunk = await process.stdout.receive_some()
                assert chunk, "appender exited before it was ready"
                buffer += chunk
                take_lines()
        with trio.move_on_after(delay):
            while chunk := await process.stdout.receive_some():
                buffer += chunk
                take_lines()
    finally:
        process.kill()  # SIGKILL: no cleanup, no drain, no final commit
        with trio.CancelScope(shield=True):
            # Lines the child wrote before dying are still in the pipe; they count too.
            while chunk := await process.stdout.receive_some():
                buffer += chunk
                take_lines()
            await process.wait()
    assert process.returncode == -9
    return acked


@pytest.mark.slow
async def test_acknowledged_appends_survive_sigkill(backend: StoreBackend) -> None:
    """Every append acknowledged before a SIGKILL is in the store exactly once, and the store
    verifies; repeated on the same store, so each run also recovers the previous crash. On
    PostgreSQL the killed process's connections die with it, its open batch rolls back."""
    path = backend.location
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    acked: list[str] = []
    for run in range(KILLS):
        delay = rng.uniform(*KILL_AFTER)
        this_run = await run_and_kill(path, f"r{run}", delay)
        assert len(this_run) > 100, f"seed {seed}: run {run} acked only {len(this_run)}"
        acked += this_run

    stored = backend.query("SELECT payload FROM events")
    counts: dict[str, int] = {}
    for (payload,) in stored:
        ident = json.loads(bytes(payload))["id"]
        counts[ident] = counts.get(ident, 0) + 1
    missing = [ident for ident in acked if ident not in counts]
    repeated = [ident for ident, n in counts.items() if n > 1]
    assert missing == [], f"seed {seed}: {len(missing)} acknowledged appends lost"
    assert repeated == [], f"seed {seed}: appends stored twice"
    assert len(set(acked)) == len(acked)
    assert backend.verify([StreamStats()]) == []
