"""`EventStore`: the event-log actor, its writer loop and its read side.

Writes go through one task and one thread. Producers put requests into the store's bounded
mailbox (`submit`) and wait on a `Reply` (`append` does both). The writer task takes one
request, drains up to `batch_limit - 1` more without waiting, and hands the batch to its worker
thread, which writes it in one transaction (see `_writer.py`). Only after COMMIT returns are the
replies answered. Under load, batches grow by themselves: while one batch is being fsynced the
next one queues up, so one fsync acknowledges hundreds of appends.

Reads use separate read-only connections in worker threads with their own limiter; under WAL a
reader sees the last committed snapshot and neither waits for nor delays the writer.

The mailbox belongs to the store object, not to a run, so a supervisor can restart `run` after
a crash and the requests already queued are written by the next run.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, overload

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry

from somsd.actor import DEFAULT_MAILBOX_SIZE, Actor, Reply
from somsd.store._errors import StoreDiskFull, StoreError, StoreUnavailable, is_disk_full
from somsd.store._metrics import StoreMetrics
from somsd.store._models import (
    MAX_BLOB_BYTES,
    Appended,
    Duplicate,
    IdempotencyKey,
    NewEvent,
    OutboxCounts,
    OutboxEntry,
    OutboxItem,
    StoredEvent,
)
from somsd.store._projection import Projection
from somsd.store._queries import (
    count_outbox,
    list_dead_letters,
    list_due_outbox,
    list_due_outbox_per_target,
    read_blob,
    read_events,
    read_stream,
    stream_version,
)
from somsd.store._schema import check_projections, install_projections, open_reader, open_writer
from somsd.store._sql import Connection
from somsd.store._time import Clock, to_text, utc_now
from somsd.store._writer import (
    AppendRequest,
    BatchWriter,
    OutboxAction,
    OutboxChange,
    Outcome,
    WriteRequest,
)

__all__ = ["EventStore"]

T = TypeVar("T")

log = structlog.get_logger("somsd.store")

# 500 requests per transaction: the stack notes measured group commit at <=500 reaching
# 40-60k appends/s with synchronous=FULL while a batch still commits in a few milliseconds, so a
# producer never waits behind an unbounded transaction.
DEFAULT_BATCH_LIMIT = 500
# How long a batch waits for a write lock someone else holds (an operator's sqlite3 shell,
# `somsd db rebuild`) before it fails; SQLite's own default, long enough to ride out a short
# admin transaction, short enough that producers hear about a stuck lock.
DEFAULT_LOCK_TIMEOUT = 5.0
# Shutdown budget for committing what is already queued: a full mailbox (1,024 requests) is
# three batches, ~30 ms on a slow disk; 5 s leaves 100x headroom and stays well inside systemd's
# default TimeoutStopSec of 90 s.
DEFAULT_DRAIN_DEADLINE = 5.0
# Concurrent read connections. Reads release the GIL inside SQLite, but this box has 2 cores and
# the writer thread needs one; 4 lets a slow admin query not hold up the order desk's reads.
DEFAULT_READERS = 4

_check_json = msgspec.json.Decoder(msgspec.Raw).decode


class EventStore(Actor[WriteRequest]):
    """The event log: append events (with outbox entries and idempotency), read them back.

    `run` opens the file and serves until cancelled; see the module docstring for the design.
    """

    def __init__(
        self,
        path: Path,
        projections: Sequence[Projection] = (),
        *,
        batch_limit: int = DEFAULT_BATCH_LIMIT,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        registry: CollectorRegistry | None = None,
        now: Clock = utc_now,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        drain_deadline: float = DEFAULT_DRAIN_DEADLINE,
        readers: int = DEFAULT_READERS,
    ) -> None:
        if batch_limit < 1:
            raise ValueError(f"batch_limit is {batch_limit}; it must be at least 1")
        super().__init__("event-store", mailbox_size=mailbox_size)
        self.path = path
        self._projections = check_projections(projections)
        self._batch_limit = batch_limit
        self._now = now
        self._lock_timeout = lock_timeout
        self._drain_deadline = drain_deadline
        self._metrics = StoreMetrics(registry)
        # One token: the writer connection is used by one thread at a time, in order.
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(readers)
        self._idle_readers: list[sqlite3.Connection] = []
        self._running = False
        self.disk_full = False  # see _enter_disk_full; read by the daemon's readiness

    # -- the writer ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, report started, write batches until cancelled, then drain and close.

        On cancellation everything already in the mailbox is still committed and answered,
        within `drain_deadline`; whatever is left stays queued for the next run.
        """
        if self._running:
            raise RuntimeError("EventStore.run is already running; start it once")
        self._running = True
        try:
            # Shielded: a cancelled open would otherwise leave the thread's connection unclosed.
            with trio.CancelScope(shield=True):
                conn = await trio.to_thread.run_sync(self._open, limiter=self._write_limiter)
            writer = self._batch_writer(conn)
            try:
                log.info("event_store_open", path=str(self.path), queued=self.mailbox.depth)
                task_status.started()
                await self._serve(writer)
            finally:
                with trio.move_on_after(self._drain_deadline, shield=True) as drain:
                    await self._drain(writer)
                # Readers first: the last connection to close checkpoints and removes the WAL,
                # and only the writer can.
                self._close_idle_readers()
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(conn.close, limiter=self._write_limiter)
                if self.mailbox.depth:
                    log.warning(
                        "event_store_closed_with_requests_queued",  # the next run writes them
                        left_queued=self.mailbox.depth,
                        drain_timed_out=drain.cancelled_caught,
                    )
                else:
                    log.info("event_store_closed", path=str(self.path))
        finally:
            self._running = False

    def _open(self) -> sqlite3.Connection:
        try:
            conn = open_writer(self.path, self._lock_timeout)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the event store: {exc}") from exc
        try:
            install_projections(conn, self._projections)
        except BaseException:
            conn.close()
            raise
        return conn

    def _batch_writer(self, conn: sqlite3.Connection) -> BatchWriter:
        return BatchWriter(conn, self._projections)

    def _open_reader(self) -> sqlite3.Connection:
        return open_reader(self.path)

    async def _serve(self, writer: BatchWriter) -> None:
        limit = self._batch_limit - 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_disk_space)
            while True:
                batch = [await self.mailbox.receive()]
                batch += self.mailbox.drain_nowait(limit)
                await self._commit(writer, batch)

    async def _drain(self, writer: BatchWriter) -> None:
        if writer.conn.in_transaction:
            return  # the connection is broken (see _commit); leave the queue to the next run
        # Only what was queued when the drain began: producers still running (a supervisor
        # restart, not a shutdown) must not keep this run alive; the next run takes the rest.
        left = self.mailbox.depth
        while left > 0 and (batch := self.mailbox.drain_nowait(min(left, self._batch_limit))):
            left -= len(batch)
            await self._commit(writer, batch)

    async def _commit(self, writer: BatchWriter, batch: list[WriteRequest]) -> None:
        # Shielded: once the batch is handed to the thread it will commit (abandon_on_cancel is
        # False), and a committed request must be answered, so cancellation waits for both.
        with trio.CancelScope(shield=True):
            try:
                now = self._now()
                outcomes = await trio.to_thread.run_sync(
                    writer.write, batch, now, limiter=self._write_limiter, abandon_on_cancel=False
                )
            except Exception as exc:
                if is_disk_full(exc):
                    self._enter_disk_full(exc)
                self._fail_batch(batch, exc)
                if writer.conn.in_transaction:
                    # The rollback failed too; this connection can not be trusted. Crash so
                    # the supervisor restarts run(), which opens a fresh one.
                    raise StoreError("event store connection stuck in a transaction") from exc
                return
        if self.disk_full:
            self._leave_disk_full("a write succeeded")
        self._answer(batch, outcomes)

    # -- a full disk ----------------------------------------------------------------------------

    # Free space that counts as "space is back": SQLite needs room for a batch's WAL frames
    # (a few pages per request) and the checkpoint; 1 MiB holds hundreds of orders.
    DISK_SPACE_BACK_BYTES = 1024 * 1024
    DISK_CHECK_INTERVAL = 1.0

    @property
    def disk_full_reason(self) -> str:
        return (
            f"the disk holding the event store ({self.path.parent}) is full; "
            "free space there, somsd resumes by itself"
        )

    def _enter_disk_full(self, exc: Exception) -> None:
        """A full disk is a state: every write fails at once with the reason until space is
        back, and nothing crashes (a restart would not free a byte)."""
        if not self.disk_full:
            self.disk_full = True
            self._metrics.disk_full.set(1)
            log.error("event_store_disk_full", path=str(self.path), error=str(exc))

    def _leave_disk_full(self, why: str) -> None:
        self.disk_full = False
        self._metrics.disk_full.set(0)
        log.info("event_store_disk_space_back", path=str(self.path), why=why)

    def _free_bytes(self) -> int:
        stats = os.statvfs(self.path.parent)
        return stats.f_bavail * stats.f_frsize

    async def _watch_disk_space(self) -> None:
        """While the disk is full, look once a second whether space came back, so readiness
        recovers without waiting for a write to try."""
        while True:
            await trio.sleep(self.DISK_CHECK_INTERVAL)
            if self.disk_full:
                try:
                    free = await trio.to_thread.run_sync(self._free_bytes)
                except OSError:
                    continue
                if free >= self.DISK_SPACE_BACK_BYTES:
                    self._leave_disk_full(f"{free} bytes free")

    def _answer(self, batch: list[WriteRequest], outcomes: list[Outcome]) -> None:
        acked = time.perf_counter()
        observe = self._metrics.append_seconds.observe
        for request, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, StoreError):
                request.reply.fail(outcome)
            elif isinstance(request, AppendRequest):
                assert isinstance(outcome, Appended | Duplicate)
                request.reply.set(outcome)
            else:
                request.reply.set(None)
            if isinstance(request, AppendRequest):
                observe(acked - request.submitted_at)
        self._metrics.batch_size.observe(len(batch))

    def _fail_batch(self, batch: list[WriteRequest], exc: Exception) -> None:
        self._metrics.failed_batches.inc()
        log.error(
            "event_store_batch_failed",  # rolled back: nothing of it was committed
            requests=len(batch),
            error=f"{type(exc).__name__}: {exc}",
        )
        for request in batch:
            # One exception object per reply: each waiter raises it with its own traceback.
            failure: StoreUnavailable
            if self.disk_full:
                failure = StoreDiskFull(f"nothing was written: {self.disk_full_reason}")
                failure.__cause__ = exc
                request.reply.fail(failure)
                continue
            failure = StoreUnavailable(
                f"event store {self.path}: the batch holding this request failed and was "
                f"rolled back ({type(exc).__name__}: {exc}); nothing was written, retry later"
            )
            failure.__cause__ = exc
            request.reply.fail(failure)

    # -- appending ----------------------------------------------------------------------------

    # Overloads: only an append with an idempotency key can come back as `Duplicate`, so the
    # common case needs no isinstance check.
    @overload
    async def submit(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        outbox: Sequence[OutboxItem] = (),
        idempotency: None = None,
        blobs: Sequence[bytes] = (),
    ) -> Reply[Appended]: ...

    @overload
    async def submit(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        outbox: Sequence[OutboxItem] = (),
        idempotency: IdempotencyKey,
        blobs: Sequence[bytes] = (),
    ) -> Reply[Appended | Duplicate]: ...

    async def submit(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        outbox: Sequence[OutboxItem] = (),
        idempotency: IdempotencyKey | None = None,
        blobs: Sequence[bytes] = (),
    ) -> Reply[Any]:
        """Queue an append and return its `Reply` without waiting for the commit.

        Waits only for mailbox space (back-pressure), so a caller can pipeline many appends and
        await each `reply.wait()` later; while the mailbox has room it returns without
        yielding. Arguments are as for `append`; bad ones raise `ValueError` here, before
        anything is queued.
        """
        _check_append(stream, events, expected_version, outbox, blobs)
        reply: Reply[Appended | Duplicate] = Reply()
        request = AppendRequest(
            stream,
            events,
            expected_version,
            outbox,
            idempotency,
            reply,
            time.perf_counter(),
            tuple(blobs),
        )
        # A cancelled caller queues nothing. Then queue without yielding when there is room:
        # `Mailbox.send` always yields to the scheduler, and that round trip per append cost
        # ~12 % of throughput at 256 producers (bench/eventlog.py). A full mailbox still waits.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.mailbox.send_nowait(request)
        except trio.WouldBlock:
            await self.mailbox.send(request)
        return reply

    @overload
    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        outbox: Sequence[OutboxItem] = (),
        idempotency: None = None,
        blobs: Sequence[bytes] = (),
    ) -> Appended: ...

    @overload
    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        outbox: Sequence[OutboxItem] = (),
        idempotency: IdempotencyKey,
        blobs: Sequence[bytes] = (),
    ) -> Appended | Duplicate: ...

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: int | None = None,
        outbox: Sequence[OutboxItem] = (),
        idempotency: IdempotencyKey | None = None,
        blobs: Sequence[bytes] = (),
    ) -> Appended | Duplicate:
        """Append events to one stream, with outbox entries, in one transaction; wait for it.

        `expected_version=None` appends at the stream's end; an int is optimistic concurrency
        (0 = the stream must be new) and raises `VersionConflict` if the stream moved on. If
        `idempotency` was seen before, nothing is written and `Duplicate` is returned.
        `blobs` are documents the events refer to by `blob_key` (SHA-256), stored with them in
        the same transaction (each at most `MAX_BLOB_BYTES`) and read back with `blob`.
        Returns only after COMMIT. Raises `RequestFailed` if a projection or constraint
        rejected this append, `StoreUnavailable` if its whole batch failed. A caller cancelled
        while waiting does not learn the outcome, but the append may still commit: retry with
        the same idempotency key to find out.
        """
        reply = await self.submit(
            stream,
            events,
            expected_version=expected_version,
            outbox=outbox,
            idempotency=idempotency,
            blobs=blobs,
        )
        return await reply.wait()

    # -- outbox changes (written by the writer, batched with appends) -------------------------

    async def mark_delivered(self, entry_id: int) -> None:
        await self._change_outbox(entry_id, OutboxAction.DELIVERED)

    async def schedule_retry(self, entry_id: int, *, error: str, next_attempt_at: datetime) -> None:
        """Count a failed attempt, keep the error and make the entry due again at the time."""
        await self._change_outbox(
            entry_id, OutboxAction.RETRY, error=error, next_attempt_at=to_text(next_attempt_at)
        )

    async def mark_dead(self, entry_id: int, *, error: str) -> None:
        """Count the final failed attempt and park the entry in the dead letters."""
        await self._change_outbox(entry_id, OutboxAction.DEAD, error=error)

    async def requeue(self, entry_id: int) -> None:
        """Move a dead letter back to pending, due now, with a fresh attempt budget."""
        await self._change_outbox(entry_id, OutboxAction.REQUEUE)

    async def _change_outbox(
        self,
        entry_id: int,
        action: OutboxAction,
        *,
        error: str | None = None,
        next_attempt_at: str | None = None,
    ) -> None:
        reply: Reply[None] = Reply()
        await self.mailbox.send(OutboxChange(entry_id, action, reply, next_attempt_at, error))
        await reply.wait()

    # -- reads --------------------------------------------------------------------------------

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` on a read-only connection in a worker thread, inside one read transaction.

        `fn` sees one committed snapshot (events and projections consistent with each other)
        and must not keep the connection.
        """
        async with self._read_limiter:
            if self._idle_readers:
                conn = self._idle_readers.pop()
            else:
                # Shielded so a cancelled open can not leak the connection it made.
                with trio.CancelScope(shield=True):
                    conn = await trio.to_thread.run_sync(self._open_reader)
            try:
                return await trio.to_thread.run_sync(_read_snapshot, conn, fn)
            finally:
                if self._running:
                    self._idle_readers.append(conn)
                else:
                    conn.close()

    async def read_stream(self, stream: str, *, after_version: int = 0) -> list[StoredEvent]:
        """The stream's events after `after_version`, in version order."""
        return await self.read(partial(read_stream, stream=stream, after_version=after_version))

    async def read_all(self, *, after_seq: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Up to `limit` events of all streams after `after_seq`, in seq order."""
        return await self.read(partial(read_events, after_seq=after_seq, limit=limit))

    async def blob(self, sha256: str) -> bytes | None:
        """The blob appended under this SHA-256 (hex, see `blob_key`); None if there is none."""
        return await self.read(partial(read_blob, sha256=sha256))

    async def stream_version(self, stream: str) -> int:
        """The stream's current version; 0 if it has no events."""
        return await self.read(partial(stream_version, stream=stream))

    async def due_outbox(
        self, *, limit: int = 100, now: datetime | None = None
    ) -> list[OutboxEntry]:
        """Pending entries whose next attempt is due, oldest first."""
        at = to_text(self._now() if now is None else now)
        return await self.read(partial(list_due_outbox, now=at, limit=limit))

    async def due_outbox_per_target(
        self, *, per_target: int = 100, now: datetime | None = None
    ) -> dict[str, list[OutboxEntry]]:
        """Pending entries whose next attempt is due, up to `per_target` of each target."""
        at = to_text(self._now() if now is None else now)
        return await self.read(partial(list_due_outbox_per_target, now=at, per_target=per_target))

    async def dead_letters(
        self, *, target: str | None = None, limit: int = 100
    ) -> list[OutboxEntry]:
        """Dead outbox entries, all or one target's, oldest first."""
        return await self.read(partial(list_dead_letters, target=target, limit=limit))

    async def outbox_counts(self) -> OutboxCounts:
        """Pending and dead entries per target, for `somsd_outbox_pending{target}` and
        `somsd_dead_letters{target}`; awaited before a metrics scrape."""
        return await self.read(count_outbox)

    def _close_idle_readers(self) -> None:
        while self._idle_readers:
            self._idle_readers.pop().close()


def _read_snapshot(conn: sqlite3.Connection, fn: Callable[[Connection], T]) -> T:
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        # Nothing to undo on a read-only connection; this ends the snapshot so the WAL can be
        # checkpointed past it.
        conn.execute("ROLLBACK")


def _check_append(
    stream: str,
    events: Sequence[NewEvent],
    expected_version: int | None,
    outbox: Iterable[OutboxItem],
    blobs: Iterable[bytes] = (),
) -> None:
    if not stream:
        raise ValueError("stream is empty; name the stream, e.g. 'order-1042'")
    if not events:
        raise ValueError(f"append to {stream!r} has no events; an append writes at least one")
    if expected_version is not None and expected_version < 0:
        raise ValueError(f"expected_version is {expected_version}; use 0 for a new stream")
    for index, event in enumerate(events):
        if not event.type:
            raise ValueError(f"{stream!r} event {index}: type is empty")
        try:
            _check_json(event.payload)
        except msgspec.DecodeError as exc:
            raise ValueError(
                f"{stream!r} event {index} ({event.type}): payload is not JSON ({exc}); "
                "encode it with msgspec.json.encode"
            ) from exc
    for item in outbox:
        if not item.target or not item.idempotency_key:
            raise ValueError(f"{stream!r}: outbox item {item!r} needs a target and a key")
    for index, blob in enumerate(blobs):
        if len(blob) > MAX_BLOB_BYTES:
            raise ValueError(
                f"{stream!r} blob {index}: {len(blob)} bytes, more than the "
                f"{MAX_BLOB_BYTES} a blob may hold"
            )
