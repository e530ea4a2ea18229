"""`somsd reconcile CHANNEL` and `somsd doctor`: the channel commands of the CLI.

`reconcile` asks the running daemon (like `somsd reload`), so the fixes go through the daemon's
outbox; on a terminal it shows the catalogue read so far while the daemon works.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import httpx

from somsd.config import Config

__all__ = ["admin_client", "reconcile_command"]

# A reconciliation of 100,000 products takes well under a minute; ten minutes covers a slow
# shop without leaving a hung command forever.
RECONCILE_TIMEOUT = 600.0


def admin_client(config: Config, *, timeout: float = 30.0) -> httpx.Client:
    tokens = config.api.token_file.lines() if config.api.token_file else []
    if not tokens:
        raise ValueError("api.token_file is not set, so the admin API is disabled")
    host = config.api.listen.host
    if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104  # a wildcard bind is reached via loopback
        host = "127.0.0.1"
    return httpx.Client(
        base_url=f"http://{host}:{config.api.listen.port}",
        headers={"Authorization": f"Bearer {tokens[0].reveal()}"},
        timeout=timeout,
    )


def reconcile_command(config: Config, channel: str, *, dry_run: bool) -> tuple[int, str]:
    """Run a reconciliation in the daemon; (exit code, text to print)."""
    path = f"/v1/channels/{channel}/reconcile"
    result: dict[str, Any] = {}

    def post() -> None:
        try:
            with admin_client(config, timeout=RECONCILE_TIMEOUT) as client:
                response = client.post(path, params={"dry_run": str(dry_run).lower()})
            result["status"] = response.status_code
            result["body"] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            result["error"] = str(exc)

    worker = threading.Thread(target=post, daemon=True)
    worker.start()
    if sys.stdout.isatty():
        _show_progress(config, channel, worker)
    worker.join()
    if "error" in result:
        return 1, f"somsd: cannot reach the daemon: {result['error']}"
    body = result["body"]
    if result["status"] != 200:
        return 1, f"somsd: reconcile {channel}: {body['error']['message']}"
    counts = body["counts"]
    lines = [
        f"{'dry run: ' if dry_run else ''}{channel}: checked {counts['checked']} in "
        f"{body['seconds']} s"
    ]
    report = body["report"]
    for key in (
        "wrongly_hidden",
        "wrongly_shown",
        "stock_corrected",
        "unknown_in_shop",
        "missing_in_shop",
    ):
        skus = report[key]
        shown = ", ".join(skus[:10]) + (f" (+{len(skus) - 10} more)" if len(skus) > 10 else "")
        lines.append(f"  {key:<16} {counts[key]:>7}  {shown}")
    return 0, "\n".join(lines)


def _show_progress(config: Config, channel: str, worker: threading.Thread) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with (
        admin_client(config) as client,
        Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()
        ) as progress,
    ):
        task = progress.add_task(f"reading {channel}'s catalogue", total=None)
        while worker.is_alive():
            try:
                seen = client.get(f"/v1/channels/{channel}/reconciliation/progress").json()
                progress.update(task, description=f"read {seen['read']} products")
            except (httpx.HTTPError, KeyError, ValueError):
                pass  # the progress line is a nicety; the result still comes
            worker.join(0.25)
