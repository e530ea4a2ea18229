"""The event store: an append-only event log in SQLite with idempotency, outbox and projections.

One file in WAL mode with synchronous=FULL, written by one writer actor (`EventStore`) with
group commit: concurrent appends share a transaction and an fsync, and each is acknowledged
only after its COMMIT. See docs in `_store.py` (writer loop), `_writer.py` (one batch),
`_schema.py` (file and migrations) and `_admin.py` (backup, verify, rebuild).

Public names are re-exported here, grouped by layer; the modules behind them are private.
Nothing outside `somsd/` may depend on SQLite details: actors use `EventStore`'s methods and
these values, so the store can later be backed by PostgreSQL.
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
    Appended,
    Duplicate,
    IdempotencyKey,
    NewEvent,
    OutboxCounts,
    OutboxEntry,
    OutboxItem,
    OutboxState,
    StoredEvent,
)
from somsd.store._projection import AppendProjection, EventStamper, Projection
from somsd.store._queries import read_stream as query_stream
from somsd.store._schema import SCHEMA_VERSION, open_reader

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
    "SCHEMA_VERSION",
    "AppendProjection",
    "Appended",
    "Clock",
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
    "StoreDiskFull",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "VersionConflict",
    "backup_database",
    "open_reader",
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
