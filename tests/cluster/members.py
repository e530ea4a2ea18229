"""What the cluster tests share: a member's config, and waiting on real daemons' logs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import trio

from adapters.smartstore import SmartstoreSimulator, write_credentials
from tests.harness import DaemonProcess, next_log_line, write_daemon_config
from tests.orders.shop import webhook_config

__all__ = [
    "TTL",
    "acquired",
    "cluster_tables",
    "member_config",
    "owns",
    "shop_member",
    "until",
]

# Short, so a SIGKILLed owner's leases lapse within a test's patience.
TTL = 2.0


def cluster_tables(
    directory: Path, dsn: str, member: str, *, store_dsn: str | None = None, ttl: float = TTL
) -> str:
    """The `[store]` (PostgreSQL on `store_dsn`, default the cluster's `dsn`) and `[cluster]`
    tables of a member, with both DSN files written beside its config in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cluster.dsn").write_text(dsn + "\n")
    (directory / "store.dsn").write_text((store_dsn or dsn) + "\n")
    return f"""
[store]
backend = "postgres"
dsn_file = "store.dsn"

[cluster]
member = "{member}"
dsn_file = "cluster.dsn"
lease_ttl = "{ttl:g}s"
renew_every = "500ms"
"""


def member_config(
    directory: Path,
    dsn: str,
    member: str = "a",
    *,
    body: str = "",
    files: Mapping[str, str] | None = None,
    store_dsn: str | None = None,
    webhook: bool = False,
    ttl: float = TTL,
) -> Path:
    """A `[cluster]` member on PostgreSQL (`cluster_tables`), `body` (locations, channels) and
    `files` (tokens, secrets) beside the config, and the webhook channels of
    tests/orders/shop.py when `webhook`."""
    tables = body + cluster_tables(directory, dsn, member, store_dsn=store_dsn, ttl=ttl)
    for name, text in (files or {}).items():
        (directory / name).write_text(text + "\n")
    return webhook_config(directory, tables) if webhook else write_daemon_config(directory, tables)


def shop_member(
    directory: Path,
    dsn: str,
    member: str,
    *,
    shop: SmartstoreSimulator,
    shop_url: str,
    wms_url: str,
    wms_token: str,
    poll_interval: str = "1h",
    feed_interval: str = "1h",
    channels: str = "",
    files: Mapping[str, str] | None = None,
    location: str = "",
) -> Path:
    """A member with the Smartstore channel `shop` (polled every `poll_interval`) and the
    3PL location `wh-1` (its feed read every `feed_interval`), `channels` before them and
    `location` keys added to wh-1's table."""
    directory.mkdir()
    _, secret = write_credentials(directory / "creds", shop)
    return member_config(
        directory,
        dsn,
        member,
        files={"wh.token": wms_token, **(files or {})},
        body=f"""{channels}
[[channel]]
name = "shop"
kind = "smartstore"
url = "{shop_url}"
public_key = "{shop.public_key}"
secret_key_file = "{secret}"
poll_interval = "{poll_interval}"
sync_stock = false
locations = ["wh-1"]

[[location]]
name = "wh-1"
adapter = "rest"
url = "{wms_url}"
token_file = "wh.token"
poll_interval = "{feed_interval}"
{location}""",
    )


def acquired(daemon: DaemonProcess, *, after: int = 0) -> dict[str, str]:
    """duty -> outcome of each lease this daemon acquired (from its log after line `after`)."""
    return {
        e["duty"]: e["outcome"] for e in daemon.log[after:] if e.get("event") == "lease_acquired"
    }


def owns(daemon: DaemonProcess, duty: str, *, after: int = 0) -> bool:
    return duty in acquired(daemon, after=after)


async def until(
    daemons: list[DaemonProcess],
    predicate: Callable[[], object],
    limit: float = 15,
    *,
    what: str = "",
) -> None:
    """Until `predicate()` holds, asked again at each daemon log line and every 50 ms (a
    simulator's requests and a heartbeat log nothing); `trio.TooSlowError` after `limit`."""
    with trio.fail_after(limit):
        while not predicate():
            with trio.move_on_after(0.05):
                await next_log_line(daemons)
    if what:
        print(f"reached: {what}")
