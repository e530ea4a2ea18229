"""`somsd db verify|rebuild|backup|migrate-to-postgres` on a PostgreSQL store.

`verify_postgres` reads one REPEATABLE READ snapshot, so it runs beside live daemons; it checks
the schema version, stream versions, idempotency rows, and compares every projection table
with a replay of the whole log into an empty in-memory SQLite database: the same check as on
SQLite, and a proof that both dialects build the same rows. `rebuild_postgres` replays the log
into fresh projection tables in one transaction under the install lock. `backup_postgres` runs
`pg_dump` (custom format, the password passed in the environment, never on the command line).
`migrate_sqlite_to_postgres` copies an SQLite store into an empty PostgreSQL one in one
transaction and commits only if counts and hashes of events, idempotency and outbox agree.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import msgspec
import psycopg
import psycopg.conninfo
import structlog

from somsd.secrets import Secret
from somsd.store._admin import (
    _check_blobs,
    _check_idempotency,
    _check_streams,
    _create_private_like,
    _fsync,
    check_projections_against_replay,
    compare_rows,
    missing_guards,
)
from somsd.store._errors import StoreError
from somsd.store._models import MAX_BLOB_BYTES, blob_key
from somsd.store._postgres import (
    _INSTALL_LOCK,
    PG_SCHEMA_VERSION,
    PgConnection,
    connect,
    describe_dsn,
    install_pg_projections,
    migrate_pg,
    pg_existing_tables,
    pg_schema_version,
    pg_stored_projection_versions,
)
from somsd.store._projection import Projection
from somsd.store._schema import (
    build_projections,
    check_projections,
    existing_tables,
    open_reader,
    quote,
)
from somsd.store._sql import Connection
from somsd.store._time import to_text, utc_now

__all__ = [
    "MigrationReport",
    "backup_postgres",
    "migrate_sqlite_to_postgres",
    "rebuild_postgres",
    "verify_postgres",
]

log = structlog.get_logger("somsd.store")

# The store's own tables and the order their rows are copied and hashed in.
_COPIED: tuple[tuple[str, str, str], ...] = (
    ("events", "seq, stream, version, type, payload, metadata, recorded_at", "seq"),
    ("idempotency", "source, external_id, stream, first_seq, recorded_at", "source, external_id"),
    (
        "outbox",
        "id, target, payload, idempotency_key, state, attempts, next_attempt_at, last_error, "
        "created_at, updated_at",
        "id",
    ),
    ("blobs", "sha256, content, size, created_at", "sha256"),
)
_COPY_PAGE = 1000
# Blobs are up to MAX_BLOB_BYTES each (labels: ~100 KB): a few per page keep memory bounded.
_BLOB_PAGE = 8


def verify_postgres(
    dsn: Secret | str,
    projections: Sequence[Projection] = (),
    *,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """What is wrong with the PostgreSQL store, one sentence each; [] means healthy."""
    projections = check_projections(projections)
    conn = connect(dsn, read_only=True)
    try:
        conn.execute("BEGIN")
        version = pg_schema_version(conn)
        if version != PG_SCHEMA_VERSION:
            return [
                f"schema version is {version}, expected {PG_SCHEMA_VERSION}; open it with somsd"
            ]
        problems = _check_streams(conn)
        problems += _check_pg_triggers(conn)
        problems += _check_idempotency(conn)
        problems += _check_blobs(conn)
        problems += _check_pg_projections(conn, projections, progress)
        conn.execute("ROLLBACK")
        return problems
    finally:
        conn.close()


# The triggers of PG_MIGRATIONS that keep the log append-only and blobs immutable.
_PG_GUARDS = ("events_no_change", "events_no_truncate", "blobs_no_update")


def _check_pg_triggers(conn: PgConnection) -> list[str]:
    """The guard triggers exist, and no trigger on the store's tables is switched off: beside
    the guards a cluster's outbox has NOTIFY triggers (`somsd.cluster.outbox`), without which
    members hear of new deliveries only when they poll. `ALTER TABLE ... DISABLE TRIGGER`
    (or a restore with --disable-triggers left so) shows only here: the rows stay valid."""
    rows = conn.execute(
        "SELECT c.relname, t.tgname, t.tgenabled FROM pg_trigger AS t "
        "JOIN pg_class AS c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace "
        "AND c.relname IN ('events', 'idempotency', 'outbox', 'blobs') ORDER BY 1, 2"
    ).fetchall()
    problems = missing_guards({str(name) for _, name, _ in rows}, _PG_GUARDS)
    # tgenabled: O fires (origin), A always, D disabled, R only under replication.
    problems += [
        f"trigger {name!r} on {table} is disabled; enable it with "
        f"ALTER TABLE {table} ENABLE TRIGGER {name}"
        for table, name, enabled in rows
        if str(enabled) in ("D", "R")
    ]
    return problems


def _check_pg_projections(
    conn: PgConnection,
    projections: Sequence[Projection],
    progress: Callable[[int], None] | None,
) -> list[str]:
    if not projections:
        return []
    return check_projections_against_replay(
        conn,
        projections,
        progress,
        have=pg_existing_tables(conn),
        stored=pg_stored_projection_versions(conn),
        compare=_compare_pg_table,
    )


def _compare_pg_table(
    stored: PgConnection, fresh: sqlite3.Connection, name: str, table: str
) -> list[str]:
    where = f"projection {name!r} table {table!r}"
    columns = [
        str(row[0])
        for row in stored.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table.lower(),),
        ).fetchall()
    ]
    want_columns = [row[1] for row in fresh.execute(f"PRAGMA table_info({quote(table)})")]
    if columns != want_columns:
        return [f"{where}: columns {columns} differ from its DDL; run `somsd db rebuild`"]
    return compare_rows(where, stored, fresh, table)


def rebuild_postgres(
    dsn: Secret | str,
    projections: Sequence[Projection],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Drop, recreate and refill every projection's tables in one transaction."""
    projections = check_projections(projections)
    conn = connect(dsn)
    try:
        migrate_pg(conn, describe_dsn(dsn))
        with conn.raw.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (_INSTALL_LOCK,))
            count = build_projections(conn, projections, progress=progress)
    finally:
        conn.close()
    log.info(
        "event_store_projections_rebuilt",
        path=describe_dsn(dsn),
        projections=[p.name for p in projections],
        events=count,
    )
    return count


def pg_dump_command(dsn: Secret | str, dest: Path) -> tuple[list[str], dict[str, str]]:
    """The `pg_dump` call (argv, extra environment) that backs the store up to `dest`.

    The password goes into PGPASSWORD, not the argv, where every local user could read it."""
    text = dsn.reveal() if isinstance(dsn, Secret) else dsn
    parts = psycopg.conninfo.conninfo_to_dict(text)
    password = parts.pop("password", None)
    env = {} if password is None else {"PGPASSWORD": str(password)}
    conninfo = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})
    argv = ["pg_dump", "--format=custom", "--no-owner", f"--file={dest}", f"--dbname={conninfo}"]
    return argv, env


def backup_postgres(dsn: Secret | str, dest: Path) -> None:
    """Dump the database with `pg_dump` (one consistent snapshot, safe while daemons write).

    Restore with `pg_restore --dbname=DSN --clean DEST`. Without pg_dump on the PATH this
    raises with the exact command to run where it is installed."""
    if dest.exists():
        raise StoreError(f"{dest} exists; choose a new backup name or remove the old file")
    argv, env = pg_dump_command(dsn, dest.with_name(dest.name + ".partial"))
    if shutil.which("pg_dump") is None:
        shown = " ".join([*argv[:-1], f"--dbname='{describe_dsn(dsn)}'"])
        raise StoreError(
            "pg_dump is not installed (Debian: apt install postgresql-client); run "
            f"`PGPASSWORD=... {shown}` on a machine that has it, then rename the file to {dest}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    _create_private_like(partial, dest.parent)
    done = subprocess.run(  # argv built above, no shell
        argv, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise StoreError(f"pg_dump failed ({done.returncode}): {done.stderr.strip()}")
    _fsync(partial)
    partial.replace(dest)
    _fsync(dest.parent)
    log.info("event_store_backed_up", source=describe_dsn(dsn), backup=str(dest))


class MigrationReport(msgspec.Struct, frozen=True):
    """Rows copied and their SHA-256 per store table, equal on both sides, and events replayed."""

    counts: dict[str, int]
    hashes: dict[str, str]
    replayed: int
    files: int = 0  # files stored as blobs beside the copy (`files=`)


def migrate_sqlite_to_postgres(
    source: Path,
    dsn: Secret | str,
    projections: Sequence[Projection],
    *,
    progress: Callable[[int], None] | None = None,
    files: Sequence[Path] = (),
) -> MigrationReport:
    """Copy the SQLite store at `source` into the empty PostgreSQL store at `dsn`.

    One PostgreSQL transaction: events (with their seqs), idempotency and outbox rows are
    copied, the identity counters moved past them, the projections built by replaying the
    copied log, and the counts and hashes of every copied table compared with the source's
    before COMMIT. Any difference rolls everything back. Read the source with the daemon
    stopped (or from a backup), so nothing is appended after the copy.

    `files` are stored as blobs in the same transaction, each under its SHA-256: the label
    files an older somsd kept under the data dir, whose `label_stored` events name that hash,
    so every member of a cluster can serve them.
    """
    projections = check_projections(projections)
    where = describe_dsn(dsn)
    reader = open_reader(source)
    target = connect(dsn)
    try:
        migrate_pg(target, where)
        reader.execute("BEGIN")
        # A store last opened by an older somsd has no blobs table yet: nothing to copy there.
        present = existing_tables(reader)
        copied = tuple(table for table in _COPIED if table[0] in present)
        want = {table: _digest(reader, table, columns, order) for table, columns, order in copied}
        with target.raw.transaction():
            target.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (_INSTALL_LOCK,))
            (existing,) = target.execute("SELECT count(*) FROM events").fetchone()
            if existing:
                raise StoreError(
                    f"{where} already holds {existing} events; migrate into an empty database"
                )
            for table, columns, order in copied:
                _copy(reader, target, table, columns, order, progress=progress)
            target.raw.execute(
                "SELECT setval(pg_get_serial_sequence('outbox', 'id'), "
                "coalesce((SELECT max(id) FROM outbox), 0) + 1, false)"
            )
            have = {
                table: _digest(target, table, columns, order) for table, columns, order in copied
            }
            if have != want:
                raise StoreError(
                    "the copy differs from the source; nothing was committed: "
                    + "; ".join(
                        f"{table}: source {want[table]}, copy {have[table]}"
                        for table in want
                        if want[table] != have[table]
                    )
                )
            stored_files = _store_files(target, files)
            replayed = build_projections(target, projections)
        install_pg_projections(target, projections)
    finally:
        reader.close()
        target.close()
    report = MigrationReport(
        counts={table: count for table, (count, _) in want.items()},
        hashes={table: digest for table, (_, digest) in want.items()},
        replayed=replayed,
        files=stored_files,
    )
    log.info("event_store_migrated_to_postgres", source=str(source), target=where, **report.counts)
    return report


def _store_files(target: PgConnection, files: Sequence[Path]) -> int:
    """Each file as a blob (kept if the same bytes are stored already); the number stored."""
    for path in files:
        content = path.read_bytes()
        if len(content) > MAX_BLOB_BYTES:
            raise StoreError(f"{path}: {len(content)} bytes, more than a blob holds")
        target.execute(
            "INSERT INTO blobs (sha256, content, size, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sha256) DO NOTHING",
            (blob_key(content), content, len(content), to_text(utc_now())),
        )
    return len(files)


def _page_size(table: str) -> int:
    return _BLOB_PAGE if table == "blobs" else _COPY_PAGE


def _rows(conn: Connection, table: str, columns: str, order: str) -> Iterator[tuple[object, ...]]:
    # Keyset pages would need per-table cursors; the store tables are modest and an OFFSET
    # scan of a few hundred thousand rows is seconds, once.
    offset = 0
    size = _page_size(table)
    while page := conn.execute(
        f"SELECT {columns} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?",  # noqa: S608
        (size, offset),
    ).fetchall():
        for row in page:
            yield tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
        offset += len(page)


def _digest(conn: Connection, table: str, columns: str, order: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for row in _rows(conn, table, columns, order):
        digest.update(repr(row).encode())
        digest.update(b"\n")
        count += 1
    return count, digest.hexdigest()


def _copy(
    source: sqlite3.Connection,
    target: PgConnection,
    table: str,
    columns: str,
    order: str,
    *,
    progress: Callable[[int], None] | None,
) -> None:
    marks = ", ".join("?" for _ in columns.split(","))
    insert = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608
    page: list[tuple[object, ...]] = []
    copied = 0
    for row in _rows(source, table, columns, order):
        page.append(row)
        if len(page) == _page_size(table):
            target.executemany(insert, page)
            copied += len(page)
            page.clear()
            if progress is not None and table == "events":
                progress(copied)
    if page:
        target.executemany(insert, page)
