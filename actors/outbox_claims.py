"""`LeasedOutbox`: the outbox share of one cluster member, claimed and settled under leases.

With `[cluster]` on the PostgreSQL store every daemon runs an `OutboxDispatcher`, and all of
them see the one outbox table. This is what keeps each entry delivered once (the dispatcher's
`claims`, `actors.outbox.OutboxClaims`):

- **Who delivers what.** Every target belongs to the duty whose actor registers its deliverer
  (`duty_of_target`): `channel/<name>`, its stock pushes `channel/<name>/stock` and an EDIFACT
  channel's `edifact/<name>` to `channel/<name>`; `location/<name>`, `carrier/<name>`,
  `erp/<name>` (and its supplier invoices, `erp/<name>/supplier-invoices`) to the duty of that
  name; `notify/smtp` to `mailer`; `documents` to `documents`; `supplier_invoices`,
  `supplier_invoices.output` and `supplier_invoices.datev` to `supplier_invoices`. A member
  delivers a target only while it holds that duty's lease; a target no duty owns is delivered
  by nobody on a cluster (logged once; its entries wait, nothing is sent twice).
- **Claims and outcomes** go through `somsd.cluster.outbox` on a connection of their own (so
  they never queue behind the lease keeper's renewals): due rows are claimed `FOR UPDATE SKIP
  LOCKED` under the lease's token until the end of this member's belief in the lease, so the
  next owner finds them due the moment it is granted the lease; outcomes are written under the
  token, many per transaction (deliveries that end together share one round trip). A refused
  outcome (the lease was lost) leaves the entry pending for the next owner, who sends it again
  with the same idempotency key: the upstream's idempotency, or our look-before-create,
  absorbs the one request that may have gone out twice.
- **Wake-ups.** A second connection `LISTEN`s on `somsd_outbox`, which a trigger on the outbox
  notifies at each commit that adds entries (`ensure_outbox_notify`), naming their targets; the
  dispatcher scans when one is a target it delivers. Latency: the commit's NOTIFY, one thread
  hop and one claim, a few milliseconds on a LAN. While the listening connection is down, the
  dispatcher's poll (1 s) still finds everything, and each reconnect wakes it once.

A refused claim or outcome counts in the lease keeper's
`somsd_cluster_fenced_writes_refused_total{duty}` (both are fenced writes).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Final

import psycopg
import structlog
import trio

from actors.lease_keeper import LeaseKeeper
from actors.outbox import OutcomeNotRecorded
from somsd.actor import Reply
from somsd.cluster import postgres
from somsd.cluster.client import ClusterUnavailable, LeaseClient
from somsd.cluster.outbox import (
    OUTBOX_CHANNEL,
    ClaimRequest,
    Settled,
    Settlement,
    SettleOutcome,
    claim_outbox_batch,
    ensure_outbox_notify,
    payload_targets,
    settle_outbox_batch,
)
from somsd.cluster.postgres import Connection
from somsd.config import Config
from somsd.store import OutboxEntry

__all__ = ["LISTEN_WAIT", "LeasedOutbox", "duty_of_target", "leased_outbox_for"]

log = structlog.get_logger("actors.outbox_claims")

# One wait of the listening thread. It returns at once when a notification arrives; the bound
# only matters to how soon a dropped connection is noticed (psycopg raises on the next wait).
LISTEN_WAIT: Final = 5.0
# After the listening connection failed: try again this often (the poll covers the gap).
LISTEN_RECONNECT: Final = 2.0
# Outcomes written per transaction at most; more wait for the next one.
SETTLE_BATCH: Final = 256

# The targets of the core actors (actors/mailer.py TARGET, actors/documents.py DOCUMENTS_TARGET,
# actors/supplier_invoices*.py PROCESS_TARGET / OUTPUT_TARGET / DATEV_TARGET; tests hold them
# equal), spelled out so this module does not import those actors.
_CORE_TARGET_DUTIES: Final = {
    "notify/smtp": "mailer",
    "documents": "documents",
    "supplier_invoices": "supplier_invoices",
    "supplier_invoices.output": "supplier_invoices",
    "supplier_invoices.datev": "supplier_invoices",
}
_INTEGRATION_KINDS: Final = frozenset({"channel", "location", "carrier", "erp"})


def duty_of_target(target: str) -> str | None:
    """The duty whose lease holder delivers `target` (see the module docstring), or None."""
    core = _CORE_TARGET_DUTIES.get(target)
    if core is not None:
        return core
    kind, _, rest = target.partition("/")
    name = rest.split("/", 1)[0]
    if not name:
        return None
    if kind == "edifact":
        return f"channel/{name}"
    if kind in _INTEGRATION_KINDS:
        return f"{kind}/{name}"
    return None


@dataclass
class _Listening:
    """The listening connection and who may close it: the thread waiting on it, or trio."""

    conn: Connection
    lock: threading.Lock = field(default_factory=threading.Lock)
    waiting: bool = False  # a thread is in `notifies()` on it
    stopped: bool = False  # trio gave it up; whoever holds it last closes it

    def enter(self) -> bool:
        """A thread starts waiting on it; False when it was given up already."""
        with self.lock:
            self.waiting = not self.stopped
            return self.waiting

    def leave(self) -> None:
        """The thread is done with it; closes it if trio gave it up meanwhile."""
        with self.lock:
            self.waiting = False
            if self.stopped:
                self.conn.close()

    def give_up(self) -> None:
        """Trio is done with it; closes it now unless a thread still waits on it."""
        with self.lock:
            self.stopped = True
            if not self.waiting:
                self.conn.close()


class LeasedOutbox:
    """`OutboxClaims` for a cluster member; see the module docstring."""

    def __init__(
        self,
        keeper: LeaseKeeper,
        dsn: str,
        *,
        duty_of: Callable[[str], str | None] = duty_of_target,
        listen_wait: float = LISTEN_WAIT,
    ) -> None:
        self.keeper = keeper
        self._dsn = dsn
        self._duty_of = duty_of
        self._listen_wait = listen_wait
        # Claims and outcomes: a connection of their own, one statement at a time.
        self.client = LeaseClient(dsn)
        self._settles_in, self._settles_out = trio.open_memory_channel[
            tuple[Settlement, Reply[SettleOutcome]]
        ](math.inf)
        self._unowned: set[str] = set()  # targets logged as owned by no duty
        self._claims_failing = False
        self._wake: Callable[[Collection[str] | None], None] = lambda targets: None
        # A lease granted: what its duty owns may be waiting (claims of a dead owner lapse now).
        keeper.on_acquired(lambda duty: self._wake(None))

    # -- who delivers what ----------------------------------------------------------------

    def duty(self, target: str) -> str | None:
        duty = self._duty_of(target)
        if duty is None and target not in self._unowned:
            self._unowned.add(target)
            log.error(
                "outbox_target_has_no_duty",  # nobody on the cluster delivers it; it waits
                target=target,
            )
        return duty

    def owns(self, target: str) -> bool:
        duty = self.duty(target)
        return duty is not None and self.keeper.holds(duty)

    @contextmanager
    def bound(self, target: str, scope: trio.CancelScope) -> Iterator[None]:
        duty = self.duty(target)
        if duty is None:
            scope.cancel()
            yield
            return
        with self.keeper.bound(duty, scope):
            yield

    # -- claims -----------------------------------------------------------------------------

    async def claim(
        self, wanted: Mapping[str, int], *, now: datetime
    ) -> dict[str, list[OutboxEntry]]:
        requests: list[ClaimRequest] = []
        for target, limit in wanted.items():
            duty = self.duty(target)
            held = None if duty is None else self.keeper.grant(duty)
            if duty is None or held is None:
                continue
            grant, left = held
            # Until this member stops believing in the lease: the next owner, granted the
            # lease only after that, finds the rows due at once.
            until = now + timedelta(seconds=left)
            requests.append(ClaimRequest(target, duty, grant.token, limit, until))
        if not requests:
            return {}
        try:
            claimed, _ = await self.client.call(
                partial(_claim, requests=requests, now=now, on_refused=self.keeper.fence_refused)
            )
        except (ClusterUnavailable, psycopg.Error) as exc:
            if not self._claims_failing:
                self._claims_failing = True
                log.warning("outbox_claims_failing", error=str(exc))
            return {}
        if self._claims_failing:
            self._claims_failing = False
            log.info("outbox_claims_working_again")
        return claimed

    # -- outcomes ---------------------------------------------------------------------------

    async def delivered(self, entry: OutboxEntry) -> None:
        await self._settle(entry, Settled.DELIVERED)

    async def retry(self, entry: OutboxEntry, *, error: str, next_attempt_at: datetime) -> None:
        await self._settle(entry, Settled.RETRY, error=error, next_attempt_at=next_attempt_at)

    async def dead(self, entry: OutboxEntry, *, error: str) -> None:
        await self._settle(entry, Settled.DEAD, error=error)

    async def _settle(
        self,
        entry: OutboxEntry,
        outcome: Settled,
        *,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        duty = self.duty(entry.target)
        held = None if duty is None else self.keeper.grant(duty)
        if duty is None or held is None:
            raise OutcomeNotRecorded(
                f"{entry.target}: this member no longer holds the lease of {duty}; "
                "the next owner sends the entry again"
            )
        settlement = Settlement(entry.id, duty, held[0].token, outcome, error, next_attempt_at)
        reply: Reply[SettleOutcome] = Reply()
        self._settles_in.send_nowait((settlement, reply))
        try:
            result = await reply.wait()
        except (ClusterUnavailable, psycopg.Error) as exc:
            raise OutcomeNotRecorded(f"outcome not written: {exc}") from exc
        if result is SettleOutcome.STALE:
            raise OutcomeNotRecorded(
                f"{entry.target}: the lease of {duty} changed hands; the outcome was refused "
                "and the next owner sends the entry again"
            )
        if result is SettleOutcome.NOT_PENDING:
            log.warning(
                "outbox_entry_settled_elsewhere",  # a second delivery happened somewhere
                target=entry.target,
                entry_id=entry.id,
            )

    async def _write_outcomes(self) -> None:
        """Write queued outcomes, as many per transaction as are waiting (group commit)."""
        while True:
            batch = [await self._settles_out.receive()]
            while len(batch) < SETTLE_BATCH:
                try:
                    batch.append(self._settles_out.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                outcomes = await self.client.call(
                    partial(
                        _settle,
                        settlements=[s for s, _ in batch],
                        on_refused=self.keeper.fence_refused,
                    )
                )
            except (ClusterUnavailable, psycopg.Error) as exc:
                for _, reply in batch:
                    reply.fail(exc)
                continue
            except BaseException as exc:
                for _, reply in batch:
                    reply.fail(ClusterUnavailable(f"outcome writer stopped: {exc!r}"))
                raise
            for (_, reply), outcome in zip(batch, outcomes, strict=True):
                reply.set(outcome)

    # -- the tasks ----------------------------------------------------------------------------

    async def run(
        self,
        wake: Callable[[Collection[str] | None], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The outcome writer and the listener; a child of the dispatcher's run."""
        self._wake = wake
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_outcomes)
            nursery.start_soon(self._listen, wake)
            task_status.started()

    async def _listen(self, wake: Callable[[Collection[str] | None], None]) -> None:
        failing = False
        while True:
            try:
                listening = await trio.to_thread.run_sync(self._open_listener)
            except (psycopg.Error, OSError) as exc:
                if not failing:
                    failing = True
                    log.warning("outbox_listen_failing", error=str(exc))
                await trio.sleep(LISTEN_RECONNECT)
                continue
            if failing:
                failing = False
                log.info("outbox_listen_working_again")
            wake(None)  # whatever was committed while nobody listened
            try:
                while True:
                    payloads = await trio.to_thread.run_sync(
                        self._wait, listening, abandon_on_cancel=True
                    )
                    if payloads is None:
                        break  # no outbox table yet: install the trigger on the next round
                    for payload in payloads:
                        wake(payload_targets(payload))
            except (psycopg.Error, OSError) as exc:
                failing = True
                log.warning("outbox_listen_failing", error=str(exc))
            finally:
                listening.give_up()
            await trio.sleep(LISTEN_RECONNECT)

    def _open_listener(self) -> _Listening:
        conn = postgres.connect(self._dsn)
        try:
            conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
            installed = ensure_outbox_notify(conn)
        except BaseException:
            conn.close()
            raise
        listening = _Listening(conn)
        listening.stopped = not installed
        return listening

    def _wait(self, listening: _Listening) -> list[str] | None:
        """On a worker thread: the payloads of the next notifications (none after the wait);
        None when the triggers are not installed yet."""
        if not listening.enter():
            return None
        try:
            conn = listening.conn
            payloads = [n.payload for n in conn.notifies(timeout=self._listen_wait, stop_after=1)]
            if payloads:  # and whatever else has queued up meanwhile, without waiting
                payloads += [n.payload for n in conn.notifies(timeout=0)]
            return payloads
        finally:
            listening.leave()

    async def aclose(self) -> None:
        await self.client.aclose()


def leased_outbox_for(keeper: LeaseKeeper | None, config: Config) -> LeasedOutbox | None:
    """The dispatcher's `claims` for a cluster member on the PostgreSQL store, else None.

    The lease table and the outbox must be one database (a claim is fenced in the transaction
    that takes the rows): `[cluster] dsn_file` names it. On SQLite every daemon has an outbox of
    its own and the deliverers' leases alone decide who sends what."""
    if keeper is None or config.cluster is None or config.store.backend != "postgres":
        return None
    return LeasedOutbox(keeper, config.cluster.dsn_file.secret.reveal())


def _claim(
    conn: Connection,
    *,
    requests: list[ClaimRequest],
    now: datetime,
    on_refused: Callable[[postgres.StaleLeaseError], None],
) -> tuple[dict[str, list[OutboxEntry]], set[str]]:
    return claim_outbox_batch(conn, requests, now=now, on_refused=on_refused)


def _settle(
    conn: Connection,
    *,
    settlements: list[Settlement],
    on_refused: Callable[[postgres.StaleLeaseError], None],
) -> list[SettleOutcome]:
    return settle_outbox_batch(conn, settlements, on_refused=on_refused)
