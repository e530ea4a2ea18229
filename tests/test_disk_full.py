"""Issue 15.11: a full disk is a state, not a crash: 503 at once with the reason, `/readyz`
and a metric report it, core actors keep running, and somsd resumes by itself."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.harness import running_daemon
from tests.orders.shop import order_body, post_order, sample_value, scrape, webhook_config

pytestmark = pytest.mark.slow

# A fresh store with its WAL needs well under 4 MiB; the test fills the rest.
TMPFS_SIZE = "8m"


@contextlib.contextmanager
def small_tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        # CI runs as root, where this works; a developer's unprivileged run cannot mount.
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full; return it (delete it to free)."""
    filler = directory / "filler"
    block = b"\0" * 65536
    # Unbuffered: a buffered file keeps the part of the last block that did not fit and
    # raises ENOSPC again when it is closed, outside the except below (whether it does depends
    # on how the space left divides into blocks).
    with filler.open("wb", buffering=0) as out:
        try:
            for _ in range(100_000):  # bound: 6 GiB, far above any tmpfs size used here
                out.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


async def test_disk_full_answers_503_at_once_and_recovers(tmp_path: Path) -> None:
    mount = tmp_path / "disk"
    with small_tmpfs(mount):
        config = webhook_config(tmp_path)
        config.write_text(config.read_text().replace(str(tmp_path / "data"), str(mount / "data")))
        async with (
            running_daemon(config) as daemon,
            httpx.AsyncClient(base_url=daemon.api) as client,
        ):
            assert (await post_order(client, order_body("before-full"))).status_code == 202
            filler = fill(mount)
            for n in range(20):
                started = trio.current_time()
                response = await post_order(client, order_body(f"while-full-{n}"))
                elapsed = trio.current_time() - started
                assert response.status_code == 503, daemon.tail(40)
                assert "is full" in response.json()["error"]["message"]
                assert elapsed < 1.0, elapsed
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "is full" in ready.json()["reason"]
            samples = await scrape(daemon)
            assert sample_value(samples, "somsd_store_disk_full") == 1
            assert sample_value(samples, "somsd_actor_restarts_total", actor="order-desk") == 0
            assert [e for e in daemon.log if e.get("event") == "event_store_disk_full"]

            filler.unlink()
            # Another process: no event to wait on, so poll (bounded: 10 s).
            for _ in range(100):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await trio.sleep(0.1)
            else:
                raise AssertionError("not ready again 10 s after space was freed")
            assert (await post_order(client, order_body("after-full"))).status_code == 202
            samples = await scrape(daemon)
            assert sample_value(samples, "somsd_store_disk_full") == 0
            assert [e for e in daemon.log if e.get("event") == "event_store_disk_space_back"]
            restarts = {
                labels: value
                for (name, labels), value in samples.items()
                if name == "somsd_actor_restarts_total" and value
            }
            assert restarts == {}
            assert daemon.process.returncode is None
