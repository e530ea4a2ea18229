"""Projections: query tables kept up to date by the writer, in the same transaction as events.

A projection is any object with a `name`, the DDL that creates its tables, the names of those
tables, and an `apply(conn, event)` that updates them for one event. The writer calls `apply`
inside the appending request's savepoint, so a query never sees an event without its projection
change, and a projection that raises rolls back only that request.

Because `somsd db rebuild` and `somsd db verify` replay every event into fresh tables, `apply`
must be a pure function of the tables and the event: no clock, no randomness, no reads of other
databases. The DDL is only run on tables that do not exist yet, so it needs no `IF NOT EXISTS`.

A projection may have an integer `version` (1 when it has none): the format of its rows. Bump
it when `apply` starts writing rows differently; the store rebuilds that projection from the log
at the next start (see `install_projections`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

from somsd.store._models import NewEvent, StoredEvent
from somsd.store._sql import Connection

__all__ = [
    "AppendProjection",
    "BatchedProjection",
    "EventStamper",
    "Projection",
    "RowBatch",
    "Unbatchable",
    "projection_version",
]


class Projection(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def ddl(self) -> Sequence[str]:
        """Statements creating the projection's tables and indexes."""
        ...

    @property
    def tables(self) -> Sequence[str]:
        """Every table the DDL creates; dropped and recreated by a rebuild."""
        ...

    def apply(self, conn: Connection, event: StoredEvent) -> None:
        """Update the tables for one event. Runs inside the writer's transaction: never
        BEGIN, COMMIT or ROLLBACK here; raise to reject the append instead."""
        ...


@runtime_checkable
class AppendProjection(Protocol):
    """A projection that can take all events of one append at once.

    An order's intake appends several events to one stream; a projection that keeps one row
    per stream then reads, folds and writes that row once instead of once per event. The writer
    prefers `apply_append` when a projection has it; replays (rebuild, verify) still call
    `apply` per event, so both must produce the same tables.
    """

    def apply_append(self, conn: Connection, events: Sequence[StoredEvent]) -> None: ...


class Unbatchable(Exception):
    """A row can not wait for the end of the batch (it depends on a row still queued).

    Raised by a `BatchedProjection` (or by the writer when the batch's rows fail to insert):
    the writer rolls the whole batch back and writes it again with every row inserted inside
    its own request's savepoint, so a bad row fails only its own request.
    """


class RowBatch:
    """INSERT rows queued while the writer runs one batch, written with one `executemany` per
    statement before COMMIT.

    Rows are keyed (by the row's primary key) so a projection can tell a row it queued earlier
    in the batch; queuing the same key twice is `Unbatchable`. The writer keeps a request's
    rows only if the request succeeds (`end_request`), like its savepoint.
    """

    def __init__(self) -> None:
        self._kept: dict[str, dict[Hashable, tuple[Any, ...]]] = {}
        self._request: dict[str, dict[Hashable, tuple[Any, ...]]] = {}

    def queue(self, sql: str, key: Hashable, params: tuple[Any, ...]) -> None:
        if self.is_queued(sql, key):
            raise Unbatchable(f"{key!r} queued twice in one batch")
        self._request.setdefault(sql, {})[key] = params

    def is_queued(self, sql: str, key: Hashable) -> bool:
        return key in self._request.get(sql, ()) or key in self._kept.get(sql, ())

    def end_request(self, *, kept: bool) -> None:
        if kept:
            for sql, rows in self._request.items():
                self._kept.setdefault(sql, {}).update(rows)
        self._request.clear()

    def flush(self, conn: Connection) -> None:
        """Insert every kept row (the writer calls it once, before COMMIT)."""
        kept, self._kept = self._kept, {}
        for sql, rows in kept.items():
            conn.executemany(sql, list(rows.values()))

    def clear(self) -> None:
        self._kept.clear()
        self._request.clear()


@runtime_checkable
class BatchedProjection(Protocol):
    """An `AppendProjection` that can queue its new rows in the writer's `RowBatch`.

    Inserting a batch's rows with one `executemany` saves a statement round per row; replays
    (rebuild, verify) and `apply_append` still write each row at once (`rows` None).
    """

    def apply_rows(
        self, conn: Connection, events: Sequence[StoredEvent], rows: RowBatch | None
    ) -> None: ...


@runtime_checkable
class EventStamper(Protocol):
    """A projection that also fills in facts only the log's order can decide.

    Gapless invoice numbers are the example: the next number depends on every invoice committed
    before, so it is taken inside the appending transaction, from the projection's own counter
    table, just before the events are inserted. A rolled-back request takes its numbers back
    with it, so numbers have no gaps. `stamp` sees all events of one append (so two documents
    in one append get consecutive numbers) and returns the events to store.
    """

    def stamp(
        self, conn: Connection, stream: str, events: Sequence[NewEvent]
    ) -> Sequence[NewEvent]: ...


def projection_version(projection: Projection) -> int:
    """The format version of a projection's rows: its `version`, or 1 when it declares none."""
    version = getattr(projection, "version", 1)
    if not isinstance(version, int) or version < 1:
        raise TypeError(f"projection {projection.name!r}: version must be an int >= 1")
    return version
