"""The `somsd` command line.

User mistakes (a bad config, an unreachable daemon, a missing file) print one clear line per
problem on stderr and exit non-zero, never a traceback. Sub-commands import their heavy modules
lazily so `somsd --help` and `somsd check-config` stay fast.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, NoReturn

from somsd.config import DEFAULT_CONFIG_PATH, Config, ConfigError, DaemonConfig, load_config
from somsd.secrets import Secret

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

    # The ~100,000 objects of the imported modules live as long as the process: moved out of
    # the collector's generations, a full collection no longer walks them (it stalled the trio
    # loop for 80 - 350 ms under load, the intake's p99; bench/intake.py, issue 11).
    gc.collect()
    gc.freeze()
    return run_daemon(_config_path(args))


def cmd_demo(args: argparse.Namespace) -> int:
    import trio

    from somsd.demo import EXIT_INTERRUPTED, DemoError, DemoOptions, run_demo
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
        return _run_demo_until_interrupted(trio.run, run_demo, options, EXIT_INTERRUPTED)
    except* DemoError as group:
        raise CliError(str(unwrap_exception_group(group))) from None


def _run_demo_until_interrupted(run: Any, demo: Any, options: Any, interrupted: int) -> int:
    """A Ctrl-C before the demo's own handler is in place (nothing started yet): one line."""
    code = interrupted
    try:
        code = run(demo, options)
    except* KeyboardInterrupt:
        print("somsd demo: interrupted", file=sys.stderr)
    return code


def cmd_check_config(args: argparse.Namespace) -> int:
    from somsd.config import data_dir_problem, raw_data_dir

    try:
        config = _load(args)
    except ConfigError as exc:
        # One run lists everything: the data dir is checked even when other keys are wrong.
        data_dir = raw_data_dir(_config_path(args))
        problem = data_dir_problem(Config(daemon=DaemonConfig(data_dir=data_dir)))
        if problem is not None:
            exc.problems.append(problem)
        raise
    problem = data_dir_problem(config)
    if problem is not None:
        raise ConfigError(config.source, [problem])
    print(
        f"{config.source}: ok ({len(config.channel)} channels, {len(config.location)} "
        f"locations, {len(config.carrier)} carriers, {len(config.erp)} ERPs)"
    )
    return EXIT_OK


def _admin_request(
    config: Config,
    method: str,
    path: str,
    *,
    body: object = None,
    params: dict[str, str] | None = None,
) -> Any:
    import httpx

    tokens = config.api.token_file.lines() if config.api.token_file else []
    if not tokens:
        raise CliError("api.token_file is not set, so the admin API is disabled")
    host = config.api.listen.host
    if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104  # a wildcard bind is reached via loopback
        host = "127.0.0.1"
    url = f"http://{host}:{config.api.listen.port}{path}"
    headers = {"Authorization": f"Bearer {tokens[0].reveal()}", "X-Somsd-User": _os_user()}
    try:
        response = httpx.request(
            method,
            url,
            headers=headers,
            timeout=30,
            params=params,
            json=body if body is not None else None,
        )
    except httpx.HTTPError as exc:
        raise ConnectionError(f"cannot reach somsd at {url}: {exc}") from exc
    if response.status_code in (401, 403):
        raise CliError(f"{url}: {response.json()['error']['message']}")
    return response.json()


def _os_user() -> str:
    """Who acts, for the order history (`user:NAME`): the login running the command."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return f"uid-{os.getuid()}"


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
    print(f"{'actor':<32} {'supervisor':<13} {'state':<19} {'restarts':>8} {'mailbox':>8}")
    for actor in report["actors"]:
        depth = "" if actor.get("mailbox_depth") is None else actor["mailbox_depth"]
        state = actor["state"] + (" (no driver)" if actor.get("no_driver") else "")
        print(
            f"{actor['name']:<32} {actor['supervisor']:<13} {state:<19} "
            f"{actor['restarts']:>8} {depth!s:>8}"
        )
    if config.cluster is not None:
        try:
            print_cluster(_admin_request(config, "GET", "/v1/admin/cluster"))
        except ConnectionError as exc:
            raise CliError(str(exc)) from None
    return EXIT_OK if report["ready"] else EXIT_FAILURE


def print_cluster(report: dict[str, Any]) -> None:
    """`somsd status` with `[cluster]`: the members, their last heartbeat, who owns what."""
    print(f"\ncluster: {len(report['members'])} members (answered by {report['member']})")
    print(f"{'member':<24} {'alive':<6} {'last heartbeat':<33} owns")
    for member in report["members"]:
        alive = "yes" if member["alive"] else "NO"
        owns = ", ".join(member["owns"]) or "-"
        print(f"{member['name']:<24} {alive:<6} {member['last_heartbeat']:<33} {owns}")
    print(f"{'duty':<32} {'owner':<24} {'token':>8}")
    for lease in report["leases"]:
        owner = lease["owner"] or "(nobody)"
        print(f"{lease['duty']:<32} {owner:<24} {lease['token']:>8}")


def _database(args: argparse.Namespace) -> Path:
    from somsd.daemon import DATABASE_FILE

    path = Path(_load(args).daemon.data_dir) / DATABASE_FILE
    if not path.exists():
        raise CliError(f"no database at {path} (check daemon.data_dir)")
    return path


def _postgres_dsn(args: argparse.Namespace) -> Secret | None:
    """The DSN when `[store] backend = "postgres"`, else None (the data dir's SQLite file)."""
    store = _load(args).store
    if store.backend != "postgres":
        return None
    if store.dsn_file is None:
        raise CliError('store.dsn_file: required for backend "postgres"')
    return store.dsn_file.secret


def _postgres_event_count(dsn: Secret) -> int:
    from somsd.store.postgres import connect

    with closing(connect(dsn, read_only=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def cmd_db_backup(args: argparse.Namespace) -> int:
    from somsd.store import backup_database

    if (dsn := _postgres_dsn(args)) is not None:
        from somsd.store.postgres import backup_postgres, describe_dsn

        with _progress("pg_dump", None):
            backup_postgres(dsn, Path(args.dest))
        print(f"backed up {describe_dsn(dsn)} to {args.dest} (pg_restore --dbname=DSN DEST)")
        return EXIT_OK
    source = _database(args)
    with _progress(f"backing up {source.name}", None):
        backup_database(source, Path(args.dest))
    print(f"backed up {source} to {args.dest}")
    return EXIT_OK


def cmd_db_verify(args: argparse.Namespace) -> int:
    from somsd.projections import all_projections
    from somsd.store import verify_database

    if (dsn := _postgres_dsn(args)) is not None:
        from somsd.store.postgres import verify_postgres

        with _progress("verifying", _postgres_event_count(dsn)) as advance:
            problems = verify_postgres(dsn, all_projections(), progress=advance)
    else:
        path = _database(args)
        with _progress("verifying", _event_count(path)) as advance:
            problems = verify_database(path, all_projections(), progress=advance)
    for problem in problems:
        print(f"somsd: db verify: {problem}", file=sys.stderr)
    if problems:
        return EXIT_FAILURE
    print("database ok")
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Supplier invoices: every audit trail's hash chain and every file it names."""
    from actors.supplier_invoices import verify_audit

    if (dsn := _postgres_dsn(args)) is not None:
        from somsd.store.postgres import connect

        # The files of older versions are still looked for under the data dir; the rest are
        # blobs in the database, and no SQLite file need be there.
        with closing(connect(dsn, read_only=True)) as postgres:
            report = verify_audit(postgres, Path(_load(args).daemon.data_dir))
    else:
        path = _database(args)
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as sqlite:
            report = verify_audit(sqlite, path.parent)
    for problem in report.problems:
        print(f"somsd: audit verify: {problem}", file=sys.stderr)
    if report.problems:
        return EXIT_FAILURE
    print(
        f"audit ok: {report.invoices} supplier invoices, {report.entries} entries, "
        f"{report.files} files"
    )
    return EXIT_OK


def cmd_db_rebuild(args: argparse.Namespace) -> int:
    from somsd.projections import all_projections
    from somsd.store import rebuild_projections

    if (dsn := _postgres_dsn(args)) is not None:
        from somsd.store.postgres import describe_dsn, rebuild_postgres

        with _progress("replaying events", _postgres_event_count(dsn)) as advance:
            rebuild_postgres(dsn, all_projections(), progress=advance)
        print(f"rebuilt projections in {describe_dsn(dsn)}")
        return EXIT_OK
    path = _database(args)
    with _progress("replaying events", _event_count(path)) as advance:
        rebuild_projections(path, all_projections(), progress=advance)
    print(f"rebuilt projections in {path}")
    return EXIT_OK


def cmd_db_migrate_to_postgres(args: argparse.Namespace) -> int:
    from somsd.projections import all_projections
    from somsd.store.postgres import describe_dsn, migrate_sqlite_to_postgres

    config = _load(args)
    store = config.store
    if store.dsn_file is None:
        raise CliError("store.dsn_file: set it to the PostgreSQL DSN's file to migrate into")
    source = Path(args.source) if args.source else _database(args)
    if not source.exists():
        raise CliError(f"no database at {source}")
    from actors.documents import legacy_documents
    from actors.supplier_invoices import legacy_files

    # Carrier labels, rendered documents and supplier invoices' files an older somsd kept as
    # files: into the database with the log, so every member serves them (their events name
    # them by SHA-256).
    data_dir = Path(config.daemon.data_dir)
    older = sorted(
        path
        for path in (data_dir / "labels").glob("*")
        if path.suffix in (".pdf", ".zpl") and path.is_file()
    )
    older += legacy_documents(config).stored() + legacy_files(data_dir).stored()
    with _progress("copying events", _event_count(source)) as advance:
        report = migrate_sqlite_to_postgres(
            source, store.dsn_file.secret, all_projections(), progress=advance, files=older
        )
    for table, count in report.counts.items():
        print(f"{table:<12} {count:>9} rows  sha256 {report.hashes[table]}  (equal in both)")
    if report.files:
        print(f"older files  {report.files:>9} stored as blobs (labels, documents, invoices)")
    print(f"migrated {source} to {describe_dsn(store.dsn_file.secret)}; projections replayed")
    if store.backend != "postgres":
        print('now set [store] backend = "postgres" and start somsd')
    return EXIT_OK


def _order_reader(args: argparse.Namespace) -> Any:
    """A read-only connection to the event store: works whether or not the daemon runs."""
    from somsd.store import open_reader

    if (dsn := _postgres_dsn(args)) is not None:
        from somsd.store.postgres import connect

        return connect(dsn, read_only=True)
    return open_reader(_database(args))


def _check_status(args: argparse.Namespace) -> None:
    """An unknown `--status` is a typo, not an empty list: name the statuses there are."""
    from somsd.domain.status import build_status_machine

    if args.status is None:
        return
    statuses = build_status_machine(_load(args).custom_statuses()).statuses
    if args.status not in statuses:
        _fail(f"unknown status {args.status!r}; statuses: {', '.join(statuses)}", EXIT_USAGE)


def _resolve_order_id(conn: Any, reference: str) -> str:
    """An order id, or the shop's order number (unique across channels, else say which)."""
    if conn.execute("SELECT 1 FROM orders WHERE order_id = ?", (reference,)).fetchone():
        return reference
    rows = conn.execute(
        "SELECT order_id, channel FROM orders WHERE number = ? ORDER BY seq", (reference,)
    ).fetchall()
    if len(rows) == 1:
        return str(rows[0][0])
    if rows:
        choices = ", ".join(f"{order_id} ({channel})" for order_id, channel in rows)
        raise CliError(f"order number {reference!r} is in several channels: {choices}")
    raise CliError(f"no order {reference!r}")  # neither an order id nor an order number


def cmd_orders_list(args: argparse.Namespace) -> int:
    from somsd.projections.orders import list_orders

    _check_status(args)
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
        detail = read_order_detail(conn, _resolve_order_id(conn, args.order_id))
    if detail is None:
        raise CliError(f"no order {args.order_id!r}")
    print(msgspec.json.format(msgspec.json.encode(detail), indent=2).decode())
    return EXIT_OK


def cmd_orders_events(args: argparse.Namespace) -> int:
    from somsd.projections.orders import order_stream
    from somsd.store import query_stream

    with closing(_order_reader(args)) as conn:
        events = query_stream(conn, order_stream(_resolve_order_id(conn, args.order_id)), 0)
    if not events:
        raise CliError(f"no order {args.order_id!r}")
    for event in events:
        print(
            f"{event.version:>3} {event.recorded_at.isoformat()} {event.type:<17} "
            + event.payload.decode()
        )
    return EXIT_OK


# -- progress on a terminal -------------------------------------------------------------


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (a spinner when `total` is unknown) while stdout is a terminal;
    plain output otherwise, so scripts and logs see only the result line."""
    if not sys.stdout.isatty():
        yield lambda done: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        (SpinnerColumn(), TextColumn(label), TimeElapsedColumn())
        if total is None
        else (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def _event_count(path: Path) -> int:
    from somsd.store import open_reader

    with closing(open_reader(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


# -- acting through the running daemon's admin API ---------------------------------------


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    """One admin API call; an error answer becomes one line naming what the daemon said."""
    config = _load(args)
    try:
        answer = _admin_request(config, method, path, **kwargs)
    except ConnectionError as exc:
        raise CliError(str(exc)) from None
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        where = f" (at {error['path']})" if error.get("path") else ""
        raise CliError(f"{error.get('message', error.get('code'))}{where}")
    return answer


def _segment(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _print_json(data: object) -> None:
    import json

    print(json.dumps(data, indent=2, ensure_ascii=False))


def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)} | ({"target": args.target} if args.target else {})
    page = _call(args, "GET", "/v1/dead-letters", params=params)
    print(f"{'id':>6} {'target':<24} {'attempts':>8}  {'updated':<25} last error")
    for entry in page["dead_letters"]:
        print(
            f"{entry['id']:>6} {entry['target']:<24} {entry['attempts']:>8}  "
            f"{entry['updated_at']:<25} {entry['last_error'] or ''}"
        )
    return EXIT_OK


def cmd_dead_letters_retry(args: argparse.Namespace) -> int:
    if (args.id is None) == (args.target is None):
        raise CliError("dead-letters retry: give either an ID or --target TARGET")
    if args.id is not None:
        ids = [args.id]
    else:
        page = _call(
            args, "GET", "/v1/dead-letters", params={"target": args.target, "limit": "500"}
        )
        ids = [str(entry["id"]) for entry in page["dead_letters"]]
        if not ids:
            print(f"no dead letters for {args.target}")
            return EXIT_OK
    for entry_id in ids:
        answer = _call(args, "POST", f"/v1/dead-letters/{_segment(entry_id)}/retry")
        print(f"requeued {answer['id']}: {answer['state']}")
    return EXIT_OK


def cmd_inventory(args: argparse.Namespace) -> int:
    _print_json(_call(args, "GET", f"/v1/inventory/{_segment(args.sku)}"))
    return EXIT_OK


def cmd_fulfilments_list(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)}
    if args.location:
        params["location"] = args.location
    if args.state:
        params["state"] = args.state
    page = _call(args, "GET", "/v1/fulfillments", params=params)
    print(f"{'fulfilment':<28} {'location':<14} {'state':<12} {'order':<14} lines")
    for item in page["fulfillments"]:
        lines = ", ".join(f"{line['quantity']}x {line['sku']}" for line in item["lines"])
        print(
            f"{item['id']:<28} {item['location']:<14} {item['state']:<12} "
            f"{item['order_number']:<14} {lines}"
        )
    return EXIT_OK


def cmd_fulfilments_show(args: argparse.Namespace) -> int:
    _print_json(_call(args, "GET", f"/v1/fulfillments/{_segment(args.fulfilment_id)}"))
    return EXIT_OK


def cmd_fulfilments_rule_out_label(args: argparse.Namespace) -> int:
    path = f"/v1/fulfillments/{_segment(args.fulfilment_id)}/label/rule-out"
    ruled = _call(args, "POST", path, body={"reason": args.reason})
    print(f"{ruled['fulfilment_id']}: {ruled['attempts']} unanswered attempt(s) ruled out")
    return EXIT_OK


def _acting_order_id(args: argparse.Namespace) -> str:
    """The order id for an action: an order number is looked up when the data dir is readable."""
    from somsd.daemon import DATABASE_FILE
    from somsd.store import StoreError, open_reader

    path = Path(_load(args).daemon.data_dir) / DATABASE_FILE
    try:
        if _postgres_dsn(args) is not None:
            with closing(_order_reader(args)) as reader:
                return _resolve_order_id(reader, args.order_id)
        with closing(open_reader(path)) as conn:
            return _resolve_order_id(conn, args.order_id)
    except (StoreError, OSError, sqlite3.Error):
        return str(args.order_id)  # no local view of the store: the daemon judges the id


def _order_action(args: argparse.Namespace, action: str, body: dict[str, Any]) -> int:
    order_id = _acting_order_id(args)
    state = _call(args, "POST", f"/v1/orders/{_segment(order_id)}/{action}", body=body)
    print(f"{order_id}: {state.get('status', 'ok')}")
    return EXIT_OK


def cmd_orders_release(args: argparse.Namespace) -> int:
    return _order_action(args, "release", {"reason": args.reason})


def cmd_orders_cancel(args: argparse.Namespace) -> int:
    return _order_action(args, "cancel", {"reason": args.reason})


def cmd_orders_payment(args: argparse.Namespace) -> int:
    body = {"amount": args.amount, "payment_id": args.payment_id, "reference": args.reference}
    return _order_action(args, "payments", body)


def cmd_orders_status(args: argparse.Namespace) -> int:
    return _order_action(args, "status", {"status": args.status, "reason": args.reason})


_ADDRESS_FIELDS = ("name", "company", "street", "zip", "city", "country")


def cmd_orders_address(args: argparse.Namespace) -> int:
    """Correct an address: the order's current one with the given fields replaced."""
    changes = {f: getattr(args, f) for f in _ADDRESS_FIELDS if getattr(args, f) is not None}
    if not changes:
        raise CliError("orders address: give at least one of --" + ", --".join(_ADDRESS_FIELDS))
    order_id = _acting_order_id(args)
    order = _call(args, "GET", f"/v1/orders/{_segment(order_id)}")["order"]
    both = ("billing_address", "shipping_address")
    which = both if args.to == "both" else (f"{args.to}_address",)
    body: dict[str, Any] = {"reason": args.reason}
    for key in which:
        body[key] = {**order[key], **changes}
    state = _call(args, "POST", f"/v1/orders/{_segment(order_id)}/address", body=body)
    print(f"{order_id}: {state.get('status', 'ok')}")
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
        print("nothing to check: no smartstore channel, no ERP, no carrier and no [notify]")
    return EXIT_OK if all(check.ok for check in checks) else EXIT_FAILURE


# -- parser -----------------------------------------------------------------------------


def _add_audit_commands(commands: Any) -> None:
    audit = commands.add_parser(
        "audit", help="audit trails", description="audit trails of supplier invoices"
    )
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    audit_verify = audit_commands.add_parser(
        "verify",
        help="check every hash chain and stored file hash; exit 1 when anything was changed",
        description="check every hash chain and stored file hash; exit 1 when anything changed",
    )
    audit_verify.add_argument("-c", "--config", metavar="FILE", help="config file")
    audit_verify.set_defaults(handler=cmd_audit_verify)


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
    command(
        "doctor",
        cmd_doctor,
        "check each shop connection (reach, https, keys, rights, clock) and the SMTP relay",
    )
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
        (
            "migrate-to-postgres",
            cmd_db_migrate_to_postgres,
            "copy the SQLite event log into the empty PostgreSQL database of [store] dsn_file",
        ),
    ):
        sub = db_commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("-c", "--config", metavar="FILE", help="config file")
        if name == "backup":
            sub.add_argument("dest", metavar="DEST", help="file to write the backup to")
        if name == "migrate-to-postgres":
            sub.add_argument(
                "--from",
                dest="source",
                metavar="FILE",
                help="the SQLite file (default: somsd.db in daemon.data_dir; stop the daemon)",
            )
        sub.set_defaults(handler=handler)
    _add_audit_commands(commands)
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
        sub.add_argument("order_id", metavar="ORDER", help="order id or the shop's order number")
        sub.set_defaults(handler=handler)
    _add_acting_commands(commands, order_commands)
    for sub in (listing, *order_commands.choices.values()):
        if not any(a.dest == "config" for a in sub._actions):
            sub.add_argument("-c", "--config", metavar="FILE", help="config file")
    return parser


def _add_acting_commands(commands: Any, order_commands: Any) -> None:
    """The commands that act through the running daemon's admin API."""

    def with_config(sub: argparse.ArgumentParser, handler: Any) -> argparse.ArgumentParser:
        sub.add_argument("-c", "--config", metavar="FILE", help="config file")
        sub.set_defaults(handler=handler)
        return sub

    dead = commands.add_parser(
        "dead-letters", help="outbox entries that gave up", description="list and retry"
    )
    dead_commands = dead.add_subparsers(dest="dead_command", required=True, metavar="COMMAND")
    listing = with_config(
        dead_commands.add_parser("list", help="dead letters, newest first"), cmd_dead_letters_list
    )
    listing.add_argument("--target", help="only this target, e.g. location/wh-1")
    listing.add_argument("--limit", type=int, default=100)
    retry = with_config(
        dead_commands.add_parser("retry", help="requeue one dead letter, or all of a target"),
        cmd_dead_letters_retry,
    )
    retry.add_argument("id", metavar="ID", nargs="?")
    retry.add_argument("--target", help="requeue every dead letter of this target")

    inventory = with_config(
        commands.add_parser("inventory", help="one SKU's stock, ATP and channel availability"),
        cmd_inventory,
    )
    inventory.add_argument("sku", metavar="SKU")

    fulfil = commands.add_parser("fulfilments", help="fulfilments at the locations")
    fulfil_commands = fulfil.add_subparsers(dest="fulfil_command", required=True, metavar="COMMAND")
    listing = with_config(
        fulfil_commands.add_parser("list", help="open fulfilments (or those in --state)"),
        cmd_fulfilments_list,
    )
    listing.add_argument("--location")
    listing.add_argument("--state")
    listing.add_argument("--limit", type=int, default=100)
    show = with_config(
        fulfil_commands.add_parser("show", help="one fulfilment as JSON"), cmd_fulfilments_show
    )
    show.add_argument("fulfilment_id", metavar="ID")
    rule_out_help = (
        "after checking the carrier's portal: the unanswered label purchase bought nothing, "
        "so the next attempt buys without a lookup"
    )
    rule_out = with_config(
        fulfil_commands.add_parser("rule-out-label", help=rule_out_help, description=rule_out_help),
        cmd_fulfilments_rule_out_label,
    )
    rule_out.add_argument("fulfilment_id", metavar="ID")
    rule_out.add_argument("--reason", required=True, help="what was checked (kept with the label)")

    def order_action(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = order_commands.add_parser(
            name, help=help_text, description=help_text
        )
        sub.add_argument("order_id", metavar="ORDER", help="order id or the shop's order number")
        sub.set_defaults(handler=handler)
        return sub

    order_action("release", cmd_orders_release, "release a hold").add_argument(
        "--reason", required=True, help="why (kept in the order's history)"
    )
    order_action("cancel", cmd_orders_cancel, "cancel the whole order").add_argument(
        "--reason", required=True
    )
    payment = order_action("payment", cmd_orders_payment, "record a payment that arrived")
    payment.add_argument("amount", metavar="AMOUNT", help="in the order's currency, e.g. 49.90")
    payment.add_argument("--payment-id", default="", help="the bank's or PSP's id (dedupes)")
    payment.add_argument("--reference", default="")
    status = order_action("status", cmd_orders_status, "move the order to another status")
    status.add_argument("status", metavar="STATUS")
    status.add_argument("--reason", required=True)
    address = order_action(
        "address",
        cmd_orders_address,
        "correct the shipping (default) or billing address; re-checks the address hold",
    )
    address.add_argument("--to", choices=("shipping", "billing", "both"), default="shipping")
    for field in _ADDRESS_FIELDS:
        address.add_argument(f"--{field}")
    address.add_argument("--reason", required=True)


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
