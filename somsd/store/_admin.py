"""Admin operations behind `somsd db backup|verify|rebuild`: synchronous, one call each.

They open their own connections, so `backup_database` and `verify_database` work while the
daemon runs (read-only connections under WAL never block its writer). `rebuild_projections`
takes the write lock for the whole replay; run it with the daemon stopped, or expect appends
to fail with `StoreUnavailable` after the writer's lock timeout while it runs.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import structlog

from somsd.store._errors import StoreError
from somsd.store._models import blob_key
from somsd.store._projection import Projection, projection_version
from somsd.store._queries import iter_events
from somsd.store._schema import (
    PROGRESS_EVERY,
    SCHEMA_VERSION,
    build_projections,
    check_projections,
    create_projection,
    existing_tables,
    immediate_transaction,
    open_reader,
    open_writer,
    quote,
    stored_projection_versions,
)
from somsd.store._sql import Connection

__all__ = ["backup_database", "rebuild_projections", "verify_database"]

log = structlog.get_logger("somsd.store")

# Enough example rows to see what is wrong with a projection table without flooding a terminal.
_MAX_ROWS_SHOWN = 5
# How long a rebuild waits for the write lock. A running daemon holds it for milliseconds per
# batch, but a daemon that is starting may be replaying the log into a new projection.
_ADMIN_LOCK_TIMEOUT = 30.0


def backup_database(src: Path, dest: Path) -> None:
    """Copy a consistent snapshot of `src` to `dest` with SQLite's online backup API.

    Safe while the daemon writes: the copy is one read transaction on a WAL database. `dest` is
    written next to itself under a temporary name and renamed when complete, so a crash never
    leaves a half backup under the real name. It is a single self-contained file (rollback
    journal mode), ready to be copied elsewhere or opened by somsd, mode 0600 and owned like
    `src` (when the caller may give it away, i.e. root backing up the somsd user's store).
    """
    if dest.exists():
        raise StoreError(f"{dest} exists; choose a new backup name or remove the old file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    _create_private_like(partial, src)
    source = open_reader(src)
    try:
        target = sqlite3.connect(partial, isolation_level=None)
        try:
            # pages=-1 (the default): every page in one step, i.e. under one read snapshot.
            # Step-wise copying would restart whenever the daemon commits in between.
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
    finally:
        source.close()
    _fsync(partial)
    partial.replace(dest)
    _fsync(dest.parent)
    log.info("event_store_backed_up", source=str(src), backup=str(dest))


def _create_private_like(path: Path, like: Path) -> None:
    """Create `path` empty, mode 0600 and owned like `like`: a backup holds customers' names,
    addresses and e-mails, so it is as private as the live database, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only narrow the mode; this pins it exactly
        owner = os.stat(like)
        if (os.geteuid(), os.getegid()) != (owner.st_uid, owner.st_gid):
            # Not root: the backup stays the caller's, still 0600.
            with contextlib.suppress(PermissionError):
                os.fchown(fd, owner.st_uid, owner.st_gid)
    finally:
        os.close(fd)


def verify_database(
    path: Path,
    projections: Sequence[Projection] = (),
    *,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Check the file and return what is wrong with it, one sentence each; [] means healthy.

    Checks SQLite's integrity, the schema version, that every stream's versions run 1..n
    without gaps, that every idempotency row points at the first event of its append, and that
    each projection table holds exactly the rows a replay of the whole log into an empty
    in-memory database produces. All checks read one snapshot, so it can run while the daemon
    writes. `progress` gets the number of events replayed so far (see `replay`).
    """
    projections = check_projections(projections)
    conn = open_reader(path)
    try:
        conn.execute("BEGIN")
        problems = _check_integrity(conn)
        if problems:
            # The rest reads tables a corrupt file may not return correctly.
            return problems
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            return [f"schema version is {version}, expected {SCHEMA_VERSION}; open it with somsd"]
        problems += _check_streams(conn)
        problems += _check_guards(conn)
        problems += _check_idempotency(conn)
        problems += _check_blobs(conn)
        problems += _check_projections(conn, projections, progress)
        return problems
    finally:
        conn.close()


def rebuild_projections(
    path: Path,
    projections: Sequence[Projection],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Drop and recreate every projection's tables and replay the log into them.

    One transaction: readers see the old tables until the new ones are complete, and a failed
    replay leaves the old ones in place. Returns the number of events replayed (0 when there
    are no projections: then there is nothing to rebuild and the log is not read).
    """
    projections = check_projections(projections)
    conn = open_writer(path, _ADMIN_LOCK_TIMEOUT)
    try:
        with immediate_transaction(conn):
            count = build_projections(conn, projections, progress=progress)
    finally:
        conn.close()
    log.info(
        "event_store_projections_rebuilt",
        path=str(path),
        projections=[p.name for p in projections],
        events=count,
    )
    return count


def _check_integrity(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    if rows == [("ok",)]:
        return []
    return [f"integrity_check: {message}" for (message,) in rows]


def _check_streams(conn: Connection) -> list[str]:
    # UNIQUE(stream, version) rules out repeats, so min = 1 and max = count means exactly 1..n.
    rows = conn.execute(
        "SELECT stream, count(*), min(version), max(version) FROM events GROUP BY stream "
        "HAVING min(version) != 1 OR max(version) != count(*) ORDER BY stream"
    ).fetchall()
    return [
        f"stream {stream!r}: {count} events with versions {low}..{high}, expected 1..{count}"
        for stream, count, low, high in rows
    ]


def _check_idempotency(conn: Connection) -> list[str]:
    rows = conn.execute(
        "SELECT i.source, i.external_id, i.stream, i.first_seq, e.stream "
        "FROM idempotency AS i LEFT JOIN events AS e ON e.seq = i.first_seq "
        "WHERE e.seq IS NULL OR e.stream != i.stream ORDER BY i.source, i.external_id"
    ).fetchall()
    problems = []
    for source, external_id, stream, first_seq, actual in rows:
        found = "no such event" if actual is None else f"that event is in stream {actual!r}"
        problems.append(
            f"idempotency ({source!r}, {external_id!r}) points at seq {first_seq} of stream "
            f"{stream!r}, but {found}"
        )
    return problems


# The triggers that make the log append-only and blobs immutable (schema migrations 1 and 3).
_SQLITE_GUARDS = ("events_no_update", "events_no_delete", "blobs_no_update")


def _check_guards(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    return missing_guards({name for (name,) in rows}, _SQLITE_GUARDS)


def missing_guards(found: Collection[str], guards: Sequence[str]) -> list[str]:
    """One problem per guard trigger not in `found` (both backends)."""
    return [
        f"trigger {name!r} is missing: the store's tables accept edits the log forbids "
        "(dropped by hand, or a partial restore); restore the database from a backup made "
        "with `somsd db backup`"
        for name in guards
        if name not in found
    ]


def _check_blobs(conn: Connection) -> list[str]:
    """Every blob still hashes to its key and has its recorded size (one row in memory at a
    time: a blob is at most `MAX_BLOB_BYTES`)."""
    problems = []
    after = ""
    while row := conn.execute(
        "SELECT sha256, content, size FROM blobs WHERE sha256 > ? ORDER BY sha256 LIMIT 1",
        (after,),
    ).fetchone():
        after, content, size = str(row[0]), bytes(row[1]), int(row[2])
        if blob_key(content) != after or len(content) != size:
            problems.append(
                f"blob {after}: {len(content)} bytes hashing to {blob_key(content)}, "
                f"recorded as {size} bytes; it was changed after it was stored"
            )
    return problems


C = TypeVar("C", bound=Connection)  # a store connection: sqlite3 or the PostgreSQL adapter


def _check_projections(
    conn: sqlite3.Connection,
    projections: Sequence[Projection],
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    return check_projections_against_replay(
        conn,
        projections,
        progress,
        have=existing_tables(conn) if projections else set(),
        stored=stored_projection_versions(conn) if projections else {},
        compare=_compare_table,
    )


def check_projections_against_replay(
    conn: C,
    projections: Sequence[Projection],
    progress: Callable[[int], None] | None,
    *,
    have: Collection[str],
    stored: Mapping[str, int],
    compare: Callable[[C, sqlite3.Connection, str, str], list[str]],
) -> list[str]:
    """Replay the log of `conn` into fresh in-memory projections and `compare` each stored
    table with its replayed twin; the one check for both backends (`have`: the stored
    tables, lower case; `stored`: the stored projection versions)."""
    if not projections:
        return []
    problems = [
        f"projection {p.name!r} is in format version {stored.get(p.name, 1)}, this somsd "
        f"writes {projection_version(p)}; it is rebuilt at the next start (or `somsd db rebuild`)"
        for p in projections
        if stored.get(p.name, 1) != projection_version(p)
    ]
    fresh = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for projection in projections:
            create_projection(fresh, projection)
        for count, event in enumerate(iter_events(conn), 1):
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(count)
            for projection in projections:
                try:
                    projection.apply(fresh, event)
                except Exception as exc:
                    return [
                        f"projection {projection.name!r} raised replaying event {event.seq} "
                        f"({event.type} in {event.stream!r}): {type(exc).__name__}: {exc}"
                    ]
        for projection in projections:
            if stored.get(projection.name, 1) != projection_version(projection):
                continue  # reported above; its rows are expected to differ
            for table in projection.tables:
                if table.lower() not in have:
                    problems.append(
                        f"projection {projection.name!r}: table {table!r} is missing; "
                        "run `somsd db rebuild`"
                    )
                    continue
                problems += compare(conn, fresh, projection.name, table)
    finally:
        fresh.close()
    return problems


def _compare_table(
    stored: sqlite3.Connection, fresh: sqlite3.Connection, name: str, table: str
) -> list[str]:
    where = f"projection {name!r} table {table!r}"
    columns = _columns(stored, table)
    if columns != _columns(fresh, table):
        return [f"{where}: columns {columns} differ from its DDL; run `somsd db rebuild`"]
    return compare_rows(where, stored, fresh, table)


def compare_rows(
    where: str, stored: Connection, fresh: sqlite3.Connection, table: str
) -> list[str]:
    """The rows of `table` in the `stored` database against its replayed twin in `fresh`,
    as problems (both backends; the columns are compared by the caller)."""
    # The table name comes from projection code and is quoted; no value is spliced in.
    select = f"SELECT * FROM {quote(table)}"  # noqa: S608
    # Multisets, not sets: a projection table without a key may legitimately repeat a row.
    have = Counter(map(_plain_row, map(tuple, stored.execute(select).fetchall())))
    want = Counter(map(_plain_row, fresh.execute(select).fetchall()))
    if have == want:
        return []
    extra = list((have - want).elements())
    missing = list((want - have).elements())
    problems = [
        f"{where}: {len(extra)} rows not produced by replaying the log, "
        f"{len(missing)} rows missing that a replay produces; run `somsd db rebuild`"
    ]
    problems += [f"{where}: unexpected row {row!r}" for row in extra[:_MAX_ROWS_SHOWN]]
    problems += [f"{where}: missing row {row!r}" for row in missing[:_MAX_ROWS_SHOWN]]
    return problems


def _plain_row(row: tuple[object, ...]) -> tuple[object, ...]:
    """A row with deflated documents inflated: projections may store a JSON document packed
    (zlib) or plain (written by an older somsd); both hold the same facts."""
    return tuple(_plain(value) for value in row)


def _plain(value: object) -> object:
    if isinstance(value, bytes) and value[:1] == b"x":  # zlib's first byte; JSON never has it
        try:
            return zlib.decompress(value)
        except zlib.error:
            return value
    return value


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({quote(table)})").fetchall()]


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk, so the renamed backup survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
