"""What can go wrong with a write, as exceptions a caller can act on.

```
StoreError
├── VersionConflict        the stream moved on; reload it and decide again
├── OutboxTransitionError  the outbox entry is missing or not in a state allowing that change
├── RequestFailed          this request's writes failed and were rolled back; the rest of its
│                          batch committed (a projection raised, a constraint was violated)
└── StoreUnavailable       the whole batch failed (disk error, lock held elsewhere) or the
    │                      store is not open; nothing of it was committed, retrying is safe
    └── StoreDiskFull      the disk holding the store is full: a state, not a crash; somsd
                           resumes by itself when space is freed
```

`Duplicate` is not an error: a redelivered order is an expected, successful outcome.
"""

from __future__ import annotations

import errno
import sqlite3

__all__ = [
    "OutboxTransitionError",
    "RequestFailed",
    "StoreDiskFull",
    "StoreError",
    "StoreUnavailable",
    "VersionConflict",
    "is_disk_full",
]


class StoreError(Exception):
    """Base of every error the event store reports."""


class VersionConflict(StoreError):
    """An append expected the stream at one version and found it at another."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream!r} is at version {actual}, the append expected {expected}; "
            "read the stream again and retry the decision"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class OutboxTransitionError(StoreError):
    """An outbox change named an entry that does not exist or is in the wrong state."""

    def __init__(self, entry_id: int, action: str, state: str | None) -> None:
        where = "does not exist" if state is None else f"is {state}"
        super().__init__(f"outbox entry {entry_id} {where}; cannot {action} it")
        self.entry_id = entry_id
        self.action = action
        self.state = state


class RequestFailed(StoreError):
    """One request's writes raised and were rolled back; the cause is chained."""


class StoreUnavailable(StoreError):
    """Nothing of the request was committed because the store or its batch failed."""


class StoreDiskFull(StoreUnavailable):
    """The disk holding the store is full (SQLITE_FULL, ENOSPC); nothing was written."""


def is_disk_full(exc: BaseException) -> bool:
    """True for SQLite's "database or disk is full", PostgreSQL's disk_full and the OS's
    ENOSPC / EDQUOT."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    if getattr(exc, "sqlstate", None) == _PG_DISK_FULL:
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


# PostgreSQL's SQLSTATE disk_full (class 53, insufficient resources), on psycopg's errors.
_PG_DISK_FULL = "53100"
