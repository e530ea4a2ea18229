"""The event store: an append-only event log in SQLite with idempotency, outbox and projections.

One file in WAL mode with synchronous=FULL, written by one writer actor (`EventStore`) with
group commit: concurrent appends share a transaction and an fsync, and each is acknowledged
only after its COMMIT. See docs in `_store.py` (writer loop), `_writer.py` (one batch),
`_schema.py` (file and migrations) and `_admin.py` (backup, verify, rebuild).

Public names are re-exported here, grouped by layer; the modules behind them are private.
Nothing outside `somsd/` may depend on SQLite details: actors use `EventStore`'s methods and
these values, and queries are functions of a `Connection`, so the same code runs on the
PostgreSQL backend (`somsd.store.postgres`, `[store] backend = "postgres"`).
"""

from __future__ import annotations

from types import FunctionType as _FunctionType

# Admin operations for the CLI (`somsd db backup|verify|rebuild`).
from somsd.store._admin import backup_database, rebuild_projections, verify_database

# Errors (hierarchy drawn in _errors.py).
from somsd.store._errors import (
    OutboxTransitionError,
    RequestFailed,
    StoreDiskFull,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)

# Values in and out.
from somsd.store._models import (
    MAX_BLOB_BYTES,
    Appended,
    Duplicate,
    IdempotencyKey,
    NewEvent,
    OutboxCounts,
    OutboxEntry,
    OutboxItem,
    OutboxState,
    StoredEvent,
    blob_key,
)
from somsd.store._projection import (
    AppendProjection,
    BatchedProjection,
    EventStamper,
    Projection,
    RowBatch,
    Unbatchable,
)
from somsd.store._queries import payloads_containing as query_payloads_containing
from somsd.store._queries import read_blob as query_blob
from somsd.store._queries import read_stream as query_stream
from somsd.store._schema import SCHEMA_VERSION, open_reader

# The connection seam projections and queries are written against (SQLite or PostgreSQL; the
# PostgreSQL backend itself is `somsd.store.postgres`, imported only when configured).
from somsd.store._sql import Connection, Cursor, Dialect, dialect, lock_for_transaction

# The actor and its parts.
from somsd.store._store import (
    DEFAULT_BATCH_LIMIT,
    DEFAULT_DRAIN_DEADLINE,
    DEFAULT_LOCK_TIMEOUT,
    EventStore,
)
from somsd.store._time import Clock, utc_now

__all__ = [
    "DEFAULT_BATCH_LIMIT",
    "DEFAULT_DRAIN_DEADLINE",
    "DEFAULT_LOCK_TIMEOUT",
    "MAX_BLOB_BYTES",
    "SCHEMA_VERSION",
    "AppendProjection",
    "Appended",
    "BatchedProjection",
    "Clock",
    "Connection",
    "Cursor",
    "Dialect",
    "Duplicate",
    "EventStamper",
    "EventStore",
    "IdempotencyKey",
    "NewEvent",
    "OutboxCounts",
    "OutboxEntry",
    "OutboxItem",
    "OutboxState",
    "OutboxTransitionError",
    "Projection",
    "RequestFailed",
    "RowBatch",
    "StoreDiskFull",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "Unbatchable",
    "VersionConflict",
    "backup_database",
    "blob_key",
    "dialect",
    "lock_for_transaction",
    "open_reader",
    "query_blob",
    "query_payloads_containing",
    "query_stream",
    "rebuild_projections",
    "utc_now",
    "verify_database",
]

# Tracebacks and reprs name the public path (somsd.store.EventStore), not the private module.
for _value in list(globals().values()):
    if isinstance(_value, type | _FunctionType) and _value.__module__.startswith(__name__ + "._"):
        _value.__module__ = __name__
del _value
