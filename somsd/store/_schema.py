"""The database file: connections, schema migrations and projection tables.

The schema is versioned with `PRAGMA user_version`: `MIGRATIONS[i]` takes the file from version
i to i+1, and opening applies whatever is missing in one transaction, so a crash mid-upgrade
leaves the old schema, never half of the new one. A file from a newer somsd is refused rather
than written with assumptions it does not meet. Append new migrations at the end; never edit
one that has shipped.

Projection tables live in the same file (one transaction covers events and projections). They
are not part of the migrations: a projection whose tables are missing is created at open and
filled by replaying the log, so adding a projection needs no migration and no manual rebuild.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from somsd.store._errors import StoreError
from somsd.store._projection import Projection, projection_version
from somsd.store._queries import iter_events
from somsd.store._sql import Connection

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ProjectionInstall",
    "build_projections",
    "check_projections",
    "create_projection",
    "existing_tables",
    "immediate_transaction",
    "install_projections",
    "open_reader",
    "open_writer",
    "projection_install",
    "quote",
    "record_projection_versions",
    "replay",
    "stored_projection_versions",
]

log = structlog.get_logger("somsd.store")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the log, the idempotency index and the outbox.
    (
        # seq is the rowid: the global order, assigned by the single writer. No AUTOINCREMENT:
        # rows are never deleted, so max(seq)+1 never reuses a number and the extra
        # sqlite_sequence bookkeeping per insert buys nothing.
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            stream TEXT NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            type TEXT NOT NULL,
            payload BLOB NOT NULL,
            metadata BLOB NOT NULL,
            recorded_at TEXT NOT NULL,
            UNIQUE (stream, version)
        )""",
        # The log is append-only: a fix is a new event, never an edit.
        """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
           BEGIN SELECT RAISE(ABORT, 'events are append-only; append a correcting event'); END""",
        """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
           BEGIN SELECT RAISE(ABORT, 'events are append-only; append a correcting event'); END""",
        """CREATE TABLE idempotency (
            source TEXT NOT NULL,
            external_id TEXT NOT NULL,
            stream TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            recorded_at TEXT NOT NULL,
            PRIMARY KEY (source, external_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            target TEXT NOT NULL,
            payload BLOB NOT NULL,
            idempotency_key TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        # Delivered rows pile up forever; partial indexes keep the dispatcher's "what is due"
        # and the metrics' "how many per target" proportional to what is still open.
        "CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending'",
        "CREATE INDEX outbox_open ON outbox (state, target) WHERE state IN ('pending', 'dead')",
    ),
    # 2: what is due, per target (`list_due_outbox_per_target`).
    (
        "CREATE INDEX outbox_due_per_target ON outbox (target, next_attempt_at, id) "
        "WHERE state = 'pending'",
    ),
    # 3: documents events refer to by SHA-256 (carrier labels), written in the appending
    # transaction, so any reader of the database - another daemon on PostgreSQL - has them.
    # A rowid table, not WITHOUT ROWID: SQLite advises against that for rows of kilobytes.
    (
        """CREATE TABLE blobs (
            sha256 TEXT NOT NULL PRIMARY KEY CHECK (length(sha256) = 64),
            content BLOB NOT NULL,
            size INTEGER NOT NULL,
            created_at TEXT NOT NULL
        )""",
        # Content-addressed: a changed row would no longer be what its key says.
        """CREATE TRIGGER blobs_no_update BEFORE UPDATE ON blobs
           BEGIN SELECT RAISE(ABORT, 'blobs are content-addressed and immutable'); END""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
_STORE_TABLES = frozenset({"events", "idempotency", "outbox", "blobs"})

# With WAL the log file grows while readers pin old pages and is only reused, not shrunk, after
# a checkpoint. 64 MiB is ~16 checkpoint intervals (1,000 pages of 4 KiB each) of headroom;
# beyond it SQLite truncates the file after the next checkpoint so disk use stays bounded.
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


def quote(name: str) -> str:
    """Quote an identifier (projection table names come from code, but be exact anyway)."""
    return '"' + name.replace('"', '""') + '"'


def check_projections(projections: Sequence[Projection]) -> tuple[Projection, ...]:
    """Refuse projections whose names or tables clash, before anything touches the file."""
    names: set[str] = set()
    tables: dict[str, str] = {}
    for projection in projections:
        if projection.name in names:
            raise ValueError(f"two projections are named {projection.name!r}; names are unique")
        names.add(projection.name)
        if not projection.tables:
            raise ValueError(f"projection {projection.name!r} lists no tables")
        for table in projection.tables:
            if table.lower() in _STORE_TABLES:
                raise ValueError(
                    f"projection {projection.name!r} uses table {table!r}, which belongs to the "
                    "event store; rename the table"
                )
            if (owner := tables.get(table.lower())) is not None:
                raise ValueError(
                    f"projections {owner!r} and {projection.name!r} both use table {table!r}"
                )
            tables[table.lower()] = projection.name
    return tuple(projections)


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT around the body; ROLLBACK if it raises.

    IMMEDIATE takes the write lock up front, so a busy database fails here, before any work,
    rather than at the first write. After SQLITE_FULL or SQLITE_IOERR SQLite may already have
    rolled back on its own; a second ROLLBACK would hide the real error behind "no transaction
    is active", hence the check.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def open_writer(path: Path, lock_timeout: float) -> sqlite3.Connection:
    """Open the writer connection: WAL, synchronous=FULL, schema migrated to the latest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN IMMEDIATE/COMMIT ourselves (the module's implicit
    # transactions would begin lazily and deferred). check_same_thread=False: trio's thread
    # cache may run consecutive batches on different threads; the writer's CapacityLimiter(1)
    # guarantees one thread at a time (sqlite3.threadsafety is 3, serialized, on our builds).
    conn = sqlite3.connect(
        path, timeout=lock_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        _enable_wal(conn, path)
        # FULL: the WAL is fsynced at every commit, so an acknowledged append survives power
        # loss, not only a process crash. Group commit is what makes that affordable.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def open_reader(path: Path) -> sqlite3.Connection:
    """Open a read-only connection; under WAL it reads a snapshot and never blocks the writer."""
    if not path.exists():
        raise StoreError(f"{path}: no event store here; start somsd once to create it")
    # mode=ro makes a stray write fail instead of taking the write lock from the writer.
    return sqlite3.connect(
        path.absolute().as_uri() + "?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        # WAL needs shared memory, which network file systems do not provide.
        raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r}); use a local disk")


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    current: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {current} is newer than this somsd knows "
            f"({SCHEMA_VERSION}); run the somsd version that wrote it, or a newer one"
        )
    return current


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    with immediate_transaction(conn):
        current = _schema_version(conn, path)
        for number in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            # PRAGMA takes no parameters; `number` is an int from our own range.
            conn.execute(f"PRAGMA user_version = {number}")
    if current != SCHEMA_VERSION:
        log.info("event_store_schema_migrated", path=str(path), old=current, new=SCHEMA_VERSION)


def existing_tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT lower(name) FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def create_projection(conn: Connection, projection: Projection) -> None:
    """Drop whatever exists of the projection's tables and run its DDL."""
    for table in projection.tables:
        conn.execute(f"DROP TABLE IF EXISTS {quote(table)}")
    for statement in projection.ddl:
        conn.execute(statement)


def replay(
    source: Connection,
    target: Connection,
    projections: Sequence[Projection],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Apply every event in `source` to `projections` on `target`; returns the event count.

    `progress` is called with the count so far every `PROGRESS_EVERY` events (a terminal's
    progress bar; `somsd db rebuild`)."""
    if not projections:
        return 0  # nothing to feed; do not read the whole log for it
    count = 0
    for event in iter_events(source):
        for projection in projections:
            projection.apply(target, event)
        count += 1
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(count)
    if progress is not None:
        progress(count)
    return count


# Often enough for a progress bar to move smoothly, rare enough to cost nothing per event.
PROGRESS_EVERY = 500


def stored_projection_versions(conn: sqlite3.Connection) -> dict[str, int]:
    """The format version each projection's tables were written in; absent: version 1."""
    if "projection_versions" not in existing_tables(conn):
        return {}
    rows = conn.execute("SELECT name, version FROM projection_versions").fetchall()
    return {name: version for name, version in rows}


def record_projection_versions(conn: Connection, projections: Sequence[Projection]) -> None:
    """Note the format version of freshly built projections (inside the caller's transaction)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS projection_versions "
        "(name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    conn.executemany(
        "INSERT INTO projection_versions (name, version) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET version = excluded.version",
        [(p.name, projection_version(p)) for p in projections],
    )


def build_projections(
    conn: Connection,
    projections: Sequence[Projection],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Create the projections' tables afresh, fill them from the log and note their format
    versions, inside the caller's transaction; returns the number of events replayed."""
    for projection in projections:
        create_projection(conn, projection)
    count = replay(conn, conn, projections, progress=progress)
    record_projection_versions(conn, projections)
    return count


@dataclass(frozen=True)
class ProjectionInstall:
    """What a start has to build: projections whose tables are missing, and projections whose
    stored format version (`stored`, absent: 1) is older than their `version`."""

    missing: list[Projection]
    outdated: list[Projection]
    stored: dict[str, int]

    @property
    def projections(self) -> list[Projection]:
        return self.missing + self.outdated

    def log_filled(self, replayed: int) -> None:
        log.info(
            "event_store_projections_filled_from_log",
            projections=[p.name for p in self.missing],
            upgraded={
                p.name: [self.stored.get(p.name, 1), projection_version(p)] for p in self.outdated
            },
            events=replayed,
        )


def projection_install(
    projections: Sequence[Projection], have: set[str], stored: dict[str, int]
) -> ProjectionInstall | None:
    """What to build, given the tables the database `have`s and the `stored` versions; None
    when every projection is there and current."""
    missing = [p for p in projections if not all(t.lower() in have for t in p.tables)]
    outdated = [
        p
        for p in projections
        if p not in missing and stored.get(p.name, 1) != projection_version(p)
    ]
    if not missing and not outdated:
        return None
    return ProjectionInstall(missing, outdated, stored)


def install_projections(conn: sqlite3.Connection, projections: Sequence[Projection]) -> None:
    """Build, from the log, projections whose tables are missing or in an older format.

    An upgrade that changes how a projection writes its rows bumps its `version`; the first
    start of the new somsd rebuilds just that projection (one transaction, like `somsd db
    rebuild`), so `somsd db verify` is clean without an operator step.
    """
    install = projection_install(
        projections, existing_tables(conn), stored_projection_versions(conn)
    )
    if install is None:
        return
    with immediate_transaction(conn):
        replayed = build_projections(conn, install.projections)
    install.log_filled(replayed)
