"""The `somsd` command line.

User mistakes (a bad config, an unreachable daemon, a missing file) print one clear line per
problem on stderr and exit non-zero, never a traceback. Sub-commands import their heavy modules
lazily so `somsd --help` and `somsd check-config` stay fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, NoReturn

from somsd.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # invalid config or arguments, as check-config's contract says


class CliError(Exception):
    """A problem the user can fix; printed as one line, no traceback."""


def _config_path(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return Path(args.config)
    return Path(os.environ.get("SOMSD_CONFIG", str(DEFAULT_CONFIG_PATH)))


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    print(f"somsd: {message}", file=sys.stderr)
    raise SystemExit(code)


# -- commands ---------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from somsd.daemon import run_daemon

    return run_daemon(_config_path(args))


def cmd_demo(args: argparse.Namespace) -> int:
    import trio

    from somsd.demo import DemoError, DemoOptions, run_demo
    from somsd.errors import unwrap_exception_group

    options = DemoOptions(
        orders=args.orders,
        data_dir=Path(args.data_dir),
        error_rate=args.error_rate,
        outage_after=args.outage_after,
        timeout=args.timeout,
        live=not args.no_live and sys.stdout.isatty(),
    )
    try:
        return trio.run(run_demo, options)
    except* DemoError as group:
        raise CliError(str(unwrap_exception_group(group))) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    print(
        f"{config.source}: ok ({len(config.channel)} channels, {len(config.location)} "
        f"locations, {len(config.carrier)} carriers, {len(config.erp)} ERPs)"
    )
    return EXIT_OK


def _admin_request(config: Config, method: str, path: str) -> Any:
    import httpx

    tokens = config.api.token_file.lines() if config.api.token_file else []
    if not tokens:
        raise CliError("api.token_file is not set, so the admin API is disabled")
    host = config.api.listen.host
    if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104  # a wildcard bind is reached via loopback
        host = "127.0.0.1"
    url = f"http://{host}:{config.api.listen.port}{path}"
    headers = {"Authorization": f"Bearer {tokens[0].reveal()}"}
    try:
        response = httpx.request(method, url, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise ConnectionError(f"cannot reach somsd at {url}: {exc}") from exc
    if response.status_code in (401, 403):
        raise CliError(f"{url}: {response.json()['error']['message']}")
    return response.json()


def cmd_reload(args: argparse.Namespace) -> int:
    config = _load(args)
    try:
        result = _admin_request(config, "POST", "/v1/admin/reload")
    except ConnectionError as exc:
        pid_file = config.daemon.pid_file
        if not pid_file or not Path(pid_file).exists():
            raise CliError(f"{exc}; and no daemon.pid_file to signal instead") from None
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, signal.SIGHUP)
        print(f"sent SIGHUP to somsd (pid {pid}); see its log for the result")
        return EXIT_OK
    if result["applied"]:
        print("reloaded; changed: " + (", ".join(result["changed"]) or "nothing"))
        return EXIT_OK
    for problem in result["problems"]:
        print(f"somsd: reload rejected: {problem}", file=sys.stderr)
    return EXIT_USAGE


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args)
    try:
        report = _admin_request(config, "GET", "/v1/admin/actors")
    except ConnectionError as exc:
        raise CliError(str(exc)) from None
    print(f"ready: {'yes' if report['ready'] else 'NO'}")
    print(f"{'actor':<32} {'supervisor':<13} {'state':<9} {'restarts':>8} {'mailbox':>8}")
    for actor in report["actors"]:
        depth = "" if actor.get("mailbox_depth") is None else actor["mailbox_depth"]
        print(
            f"{actor['name']:<32} {actor['supervisor']:<13} {actor['state']:<9} "
            f"{actor['restarts']:>8} {depth!s:>8}"
        )
    return EXIT_OK if report["ready"] else EXIT_FAILURE


def _database(args: argparse.Namespace) -> Path:
    from somsd.daemon import DATABASE_FILE

    path = Path(_load(args).daemon.data_dir) / DATABASE_FILE
    if not path.exists():
        raise CliError(f"no database at {path} (check daemon.data_dir)")
    return path


def cmd_db_backup(args: argparse.Namespace) -> int:
    from somsd.store import backup_database

    source = _database(args)
    backup_database(source, Path(args.dest))
    print(f"backed up {source} to {args.dest}")
    return EXIT_OK


def cmd_db_verify(args: argparse.Namespace) -> int:
    from somsd.projections import all_projections
    from somsd.store import verify_database

    problems = verify_database(_database(args), all_projections())
    for problem in problems:
        print(f"somsd: db verify: {problem}", file=sys.stderr)
    if problems:
        return EXIT_FAILURE
    print("database ok")
    return EXIT_OK


def cmd_db_rebuild(args: argparse.Namespace) -> int:
    from somsd.projections import all_projections
    from somsd.store import rebuild_projections

    path = _database(args)
    rebuild_projections(path, all_projections())
    print(f"rebuilt projections in {path}")
    return EXIT_OK


def _order_reader(args: argparse.Namespace) -> Any:
    """A read-only connection to the event store: works whether or not the daemon runs."""
    from somsd.store import open_reader

    return open_reader(_database(args))


def cmd_orders_list(args: argparse.Namespace) -> int:
    from somsd.projections.orders import list_orders

    with closing(_order_reader(args)) as conn:
        orders = list_orders(
            conn,
            status=args.status,
            channel=args.channel,
            text=args.q,
            after=args.cursor,
            limit=args.limit,
        )
    print(f"{'order':<19} {'channel':<12} {'number':<14} {'status':<11} {'total':>10}  customer")
    for o in orders:
        print(
            f"{o.order_id:<19} {o.channel:<12} {o.number:<14} {o.status:<11} "
            f"{o.total:>6} {o.currency}  {o.customer_name} <{o.customer_email}>"
        )
    if len(orders) == args.limit:
        print(f"(more: --cursor {orders[-1].cursor})")
    return EXIT_OK


def cmd_orders_show(args: argparse.Namespace) -> int:
    import msgspec

    from somsd.projections.fulfilments import read_order_detail

    with closing(_order_reader(args)) as conn:
        detail = read_order_detail(conn, args.order_id)
    if detail is None:
        raise CliError(f"no order {args.order_id!r}")
    print(msgspec.json.format(msgspec.json.encode(detail), indent=2).decode())
    return EXIT_OK


def cmd_orders_events(args: argparse.Namespace) -> int:
    from somsd.projections.orders import order_stream
    from somsd.store import query_stream

    with closing(_order_reader(args)) as conn:
        events = query_stream(conn, order_stream(args.order_id), 0)
    if not events:
        raise CliError(f"no order {args.order_id!r}")
    for event in events:
        print(
            f"{event.version:>3} {event.recorded_at.isoformat()} {event.type:<17} "
            + event.payload.decode()
        )
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    from somsd.channel_cli import reconcile_command

    code, text = reconcile_command(_load(args), args.channel, dry_run=args.dry_run)
    print(text, file=sys.stderr if code else sys.stdout)
    return code


def cmd_doctor(args: argparse.Namespace) -> int:
    import trio

    from actors.doctor import check_config

    config = _load(args)
    checks = trio.run(check_config, config)
    for check in checks:
        print(check.line())
    if not checks:
        print("nothing to check: no channel of a kind doctor knows (smartstore)")
    return EXIT_OK if all(check.ok for check in checks) else EXIT_FAILURE


# -- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="somsd", description="On-premises order-management middleware."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help=f"config file (default: $SOMSD_CONFIG or {DEFAULT_CONFIG_PATH})",
        )
        sub.set_defaults(handler=handler)
        return sub

    command("run", cmd_run, "run the daemon")
    demo = commands.add_parser(
        "demo",
        help="the daemon with simulated shop, 3PL and stores on loopback",
        description="the daemon with simulated shop, 3PL and stores on loopback",
    )
    demo.add_argument("--orders", type=int, help="place N orders, exit 0 once all are final")
    demo.add_argument("--data-dir", default="var/demo", help="where the demo keeps its data")
    demo.add_argument("--error-rate", type=float, default=0.0, help="3PL answers 500 this often")
    demo.add_argument("--outage-after", type=float, help="seconds until the 3PL goes down for 10 s")
    demo.add_argument(
        "--timeout", type=float, default=120.0, help="with --orders: give up after this long"
    )
    demo.add_argument("--no-live", action="store_true", help="no live view, just the summary")
    demo.set_defaults(handler=cmd_demo)
    command("check-config", cmd_check_config, "validate the config; exit 0 valid, 2 invalid")
    command("reload", cmd_reload, "ask the running daemon to reload its config")
    command("status", cmd_status, "actors, states, restarts and mailbox depths")
    command("doctor", cmd_doctor, "check each shop connection: reach, https, keys, rights, clock")
    reconcile = command(
        "reconcile", cmd_reconcile, "compare a shop's stock and visibility with somsd, fix drift"
    )
    reconcile.add_argument("channel", metavar="CHANNEL")
    reconcile.add_argument("--dry-run", action="store_true", help="only report, change nothing")
    db = commands.add_parser(
        "db", help="event log maintenance", description="event log maintenance"
    )
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    for name, handler, help_text in (
        ("backup", cmd_db_backup, "online backup (works while the daemon runs)"),
        ("verify", cmd_db_verify, "integrity check and event/projection consistency"),
        ("rebuild", cmd_db_rebuild, "rebuild projections by replaying the events"),
    ):
        sub = db_commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("-c", "--config", metavar="FILE", help="config file")
        if name == "backup":
            sub.add_argument("dest", metavar="DEST", help="file to write the backup to")
        sub.set_defaults(handler=handler)
    orders = commands.add_parser(
        "orders", help="read orders", description="read orders from the data dir"
    )
    order_commands = orders.add_subparsers(dest="orders_command", required=True, metavar="COMMAND")
    listing = order_commands.add_parser("list", help="orders in arrival order, filtered")
    listing.add_argument("--status")
    listing.add_argument("--channel")
    listing.add_argument("-q", help="text in the order number, customer name or e-mail")
    listing.add_argument("--cursor", type=int, default=0, help="list orders after this cursor")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=cmd_orders_list)
    for name, handler, help_text in (
        ("show", cmd_orders_show, "one order as JSON, with its routing and fulfilments"),
        ("events", cmd_orders_events, "the order's events, oldest first"),
    ):
        sub = order_commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("order_id", metavar="ORDER_ID")
        sub.set_defaults(handler=handler)
    for sub in (listing, *order_commands.choices.values()):
        if not any(a.dest == "config" for a in sub._actions):
            sub.add_argument("-c", "--config", metavar="FILE", help="config file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        _fail(str(exc))
    except Exception as exc:
        from somsd.store import StoreError  # the store's messages name the file and the fix

        if isinstance(exc, StoreError):
            _fail(str(exc))
        raise
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
