"""`LeaseClient`: the lease table's connection, used from trio through one worker thread.

psycopg 3's sync API on `trio.to_thread` (no asyncio anywhere), one connection, one call at a
time (a `CapacityLimiter(1)`, as the SQLite writer does): the lease keeper makes a handful of
round trips per renewal interval, far too few to need a pool. A call is never abandoned on
cancellation, so the connection is never used by two threads; the statement timeout
(`postgres.STATEMENT_TIMEOUT_MS`) bounds how long that wait can be. A broken connection is
closed and opened again on the next call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg
import structlog
import trio

from somsd.cluster.postgres import Connection, connect, ensure_schema

__all__ = ["ClusterUnavailable", "LeaseClient"]

log = structlog.get_logger("somsd.cluster")

T = TypeVar("T")


class ClusterUnavailable(Exception):
    """The lease database cannot be reached or failed the statement; try again later."""


class LeaseClient:
    def __init__(self, dsn: str, *, connect_timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._conn: Connection | None = None
        self._limiter = trio.CapacityLimiter(1)

    async def call(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(connection)` on the worker thread; database failures are `ClusterUnavailable`."""
        async with self._limiter:
            return await trio.to_thread.run_sync(self._call, fn)

    def _call(self, fn: Callable[[Connection], T]) -> T:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self._dsn, connect_timeout=self._connect_timeout)
                ensure_schema(self._conn)
            return fn(self._conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._close()
            raise ClusterUnavailable(f"lease database: {exc}".strip()) from exc

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    async def aclose(self) -> None:
        async with self._limiter:
            await trio.to_thread.run_sync(self._close)
