"""`StoreSimulator`: store staff working a location's pick list through somsd's API.

A store with `adapter = "manual"` has no system of its own: people pick, pack and ship (or hand
over at the counter) and record each step in somsd. For `somsd demo` this task plays those
people. Every `poll_interval` it lists the location's fulfilments; each one not final and not
already in hand is worked in its own task, one step every `step_delay` seconds:

```
requested/accepted -> pick -> pack -> ship                (kind ship or transfer)
                                   -> ready -> picked-up  (kind pickup; after collect_delay)
```
With `reject_rate`, a fulfilment has one line rejected (`reject_reason`) before picking, as
when the shelf turns out empty; somsd then re-routes those units.

Failures follow the shared kinds: a transient error (somsd restarting, a timeout) drops the
fulfilment from hand and the next poll picks it up again from whatever state it reached; a
permanent one (`StepRefused`: it moved on meanwhile) does the same, since the list is the truth.
Nothing is retried blindly, so two simulators on one location would at worst see 409s.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import structlog
import trio

from adapters.errors import UpstreamError
from adapters.storesim.client import StoreClient
from adapters.storesim.errors import FulfillmentGone, StepRefused
from adapters.storesim.wire import FINAL_STATES, Step, WorkItem, WorkLine
from somsd.domain.atp import RejectionReason

__all__ = ["StoreKnobs", "StoreSimulator", "next_step"]

log = structlog.get_logger("adapters.storesim")

_TRACKING_PREFIX: Final = "00340434"  # DHL Parcel DE shipment numbers: 20 digits, this prefix


@dataclass
class StoreKnobs:
    """How fast the staff are and how often a shelf is empty; mutable while running."""

    step_delay: float = 1.0
    collect_delay: float = 2.0  # ready_for_pickup -> the customer comes by
    poll_interval: float = 0.5
    reject_rate: float = 0.0
    reject_reason: RejectionReason = "stock_missing"
    # Packed parcels wait for the carrier's label (somsd buys it on pack and ships them) instead
    # of being shipped by hand with a typed-in tracking number.
    label_from_carrier: bool = False


def next_step(item: WorkItem) -> Step | None:
    """What the staff do next with `item`, or None when it is final (or waits for others)."""
    match item.state:
        case "requested" | "accepted":
            return "pick"
        case "picked":
            return "pack"
        case "packed" if item.kind == "pickup":
            # Goods still on their way from another location: nothing to do until they come.
            return None if item.awaiting else "ready"
        case "packed":
            return "ship"
        case "ready_for_pickup":
            return "picked-up"
        case _:
            return None


class StoreSimulator:
    """Works `location`'s fulfilments through `client` until cancelled."""

    def __init__(
        self,
        client: StoreClient,
        location: str,
        *,
        knobs: StoreKnobs | None = None,
        carrier: str = "dhl",
        seed: int = 0,
        customer_code: Callable[[WorkItem], Awaitable[str | None]] | None = None,
    ) -> None:
        self.client = client
        self.location = location
        # The customer at the counter: how they know their pickup code (somsd tells customers,
        # never the store's work list), e.g. read from the order's detail.
        self.customer_code = customer_code
        self.knobs = knobs or StoreKnobs()
        self.carrier = carrier
        self.steps: list[tuple[str, Step]] = []  # (fulfilment id, step) done, in order
        self.errors: list[str] = []  # messages of upstream errors met
        self._rng = random.Random(seed)
        self._in_hand: set[str] = set()
        self._rejected: set[str] = set()  # at most one rejection round per fulfilment

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                for item in await self._fetch():
                    if item.id not in self._in_hand and next_step(item) is not None:
                        self._in_hand.add(item.id)
                        nursery.start_soon(self._work, item)
                await trio.sleep(self.knobs.poll_interval)

    async def _fetch(self) -> tuple[WorkItem, ...]:
        try:
            items = await self.client.fetch_work(self.location)
        except UpstreamError as exc:
            self._note(exc)
            return ()
        return tuple(item for item in items if item.state not in FINAL_STATES)

    async def _work(self, item: WorkItem) -> None:
        try:
            while (step := next_step(item)) is not None:
                if step == "ship" and self.knobs.label_from_carrier:
                    break
                delay = self.knobs.collect_delay if step == "picked-up" else self.knobs.step_delay
                await trio.sleep(delay)
                if step == "pick" and item.id not in self._rejected:
                    self._rejected.add(item.id)
                    rejected = self._maybe_reject(item)
                    if rejected:
                        item = await self.client.reject(
                            item.id, rejected, reason=self.knobs.reject_reason
                        )
                        self.steps.append((item.id, "reject"))
                        continue
                item = await self._do(item, step)
                self.steps.append((item.id, step))
        except UpstreamError as exc:
            self._note(exc)  # the next poll takes it up again from its current state
        finally:
            self._in_hand.discard(item.id)

    def _maybe_reject(self, item: WorkItem) -> list[WorkLine]:
        if not item.lines or self._rng.random() >= self.knobs.reject_rate:
            return []
        return [self._rng.choice(item.lines)]

    async def _do(self, item: WorkItem, step: Step) -> WorkItem:
        match step:
            case "pick":
                return await self.client.pick(item.id)
            case "pack":
                return await self.client.pack(item.id)
            case "ship":
                tracking = _TRACKING_PREFIX + "".join(
                    str(self._rng.randrange(10)) for _ in range(12)
                )
                return await self.client.ship(
                    item.id, carrier=self.carrier, tracking_number=tracking
                )
            case "ready":
                return await self.client.mark_ready(item.id)
            case "picked-up":
                code = await self.customer_code(item) if self.customer_code else None
                if code is None:
                    raise ValueError(f"no pickup code for {item.id}; the customer can not collect")
                return await self.client.confirm_pickup(item.id, pickup_code=code)
            case "reject":
                raise ValueError("a rejection needs lines; it is not a plain step")

    def _note(self, exc: UpstreamError) -> None:
        self.errors.append(exc.message)
        if isinstance(exc, StepRefused | FulfillmentGone):
            # Expected: the fulfilment moved on meanwhile; the next poll goes on from the list.
            log.info("store_step_refused", location=self.location, error=exc.message)
        else:
            log.warning("store_step_failed", location=self.location, error=exc.message)
