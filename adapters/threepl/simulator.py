"""`ThreePLSimulator`: the reference server of the `rest` protocol, with knobs for trouble.

Shipped with the product: `somsd demo` runs the real `ThreePLClient` against it, and the tests
do too, over a real socket (somsd.http on 127.0.0.1:0), so timeouts, dropped connections and
idempotent retries are exercised the way they happen in production.

Two halves:
- the ASGI app (`sim` itself, or `sim.app`) answers the protocol's routes. It records every
  request it saw (`requests`, `idempotency_keys`), which is what tests assert on;
- the work loop (`await nursery.start(sim.run)`) moves each fulfilment one status further every
  `knobs.step_delay` seconds (accepted -> picked -> packed -> shipped, or -> ready_for_pickup
  -> picked_up), rejects lines while picking, and posts signed status callbacks when a webhook
  is configured. Without the loop fulfilments stay `accepted`, which some tests want.
Time comes from trio (`trio.current_time()` for the schedule), so the loop runs on an autojump
clock as well as on the real one; wall-clock readings (`updated_at`, `as_of`, callback
signatures) come from the injected `clock`.

Knobs (`ThreePLKnobs`, mutable while serving):
- `latency`: seconds every answer is delayed (provokes client read timeouts);
- `error_rate`: share of requests answered `500` before anything happens (nothing is created);
- `lost_response_rate`: share of successful `POST /fulfillments` whose answer is lost *after*
  the fulfilment was created: the connection is dropped mid-response. This is the failure the
  `Idempotency-Key` exists for; the retry must get the same fulfilment, not a second one;
- `outage`: `"unavailable"` answers `503` with `Retry-After: 1` to everything (a load balancer
  in front of a dead WMS); `"drop"` drops every connection after the request (a crashing
  server). A refused connection cannot be produced from inside an ASGI app; for that, stop
  the listener (`HttpListener.stop()`) and the port is closed;
- `step_delay`, `collect_delay`: seconds per status step, and from ready_for_pickup to
  picked_up (the customer coming by); `None` means `step_delay`;
- `reject_rate`, `reject_skus`: lines rejected at random, or always for given SKUs, with a
  reason. Independently of the knobs, when the simulator tracks stock (`stock=` given), a line
  whose SKU lacks units is rejected `out_of_stock` for the missing units only.

Dropping a connection: the app sends response headers announcing a body and ends without it,
so the server closes the connection and the client sees "peer closed connection without sending
complete message body" (`httpx.RemoteProtocolError`) without any error logged by the server.
"""

from __future__ import annotations

import heapq
import hmac
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

import httpx
import msgspec
import structlog
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from adapters.faults import DroppedResponse
from adapters.threepl.callback import SIGNATURE_HEADER, encode_callback
from adapters.threepl.wire import (
    FINAL_STATUSES,
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    ErrorBody,
    ErrorDetail,
    Fulfillment,
    FulfillmentLine,
    FulfillmentRequest,
    FulfillmentStatus,
    RejectReason,
    StatusCallback,
    StockItem,
    StockSnapshot,
    UpdatesPage,
)

__all__ = ["RecordedRequest", "ThreePLKnobs", "ThreePLSimulator", "WebhookTarget"]

log = structlog.get_logger("adapters.threepl.simulator")

Outage = Literal["off", "unavailable", "drop"]

DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 500
MAX_KEY_LENGTH: Final = 255
# Callbacks: a few quick attempts, then give up (the receiver polls for what it missed). Three
# attempts over 0.1 + 0.2 s ride out a receiver restart in a test or the demo without holding
# later callbacks back for long.
CALLBACK_ATTEMPTS: Final = 3
CALLBACK_BACKOFF_SECONDS: Final = 0.1
# Undelivered callbacks waiting for the sender; beyond this they are dropped and counted, as a
# real WMS's bounded queue would. A thousand is minutes of demo traffic.
CALLBACK_QUEUE_SIZE: Final = 1000
# DHL Parcel DE shipment numbers are 20 digits starting 00340434 (a GS1 SSCC-style prefix).
_TRACKING_PREFIX: Final = "00340434"

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(FulfillmentRequest)
_REJECT_REASONS: Final[tuple[RejectReason, ...]] = ("out_of_stock", "damaged")
_NEXT_STATUS: Final[dict[tuple[str, FulfillmentStatus], FulfillmentStatus]] = {
    ("ship", "accepted"): "picked",
    ("ship", "picked"): "packed",
    ("ship", "packed"): "shipped",
    ("pickup", "accepted"): "picked",
    ("pickup", "picked"): "packed",
    ("pickup", "packed"): "ready_for_pickup",
    ("pickup", "ready_for_pickup"): "picked_up",
}


@dataclass
class ThreePLKnobs:
    """What can go wrong, and how fast things happen; see the module docstring."""

    latency: float = 0.0
    error_rate: float = 0.0
    lost_response_rate: float = 0.0
    outage: Outage = "off"
    step_delay: float = 1.0
    collect_delay: float | None = None
    reject_rate: float = 0.0
    reject_skus: dict[str, RejectReason] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookTarget:
    """Where status callbacks go and the HMAC key that signs them (never shown in a repr)."""

    url: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulator saw it; `status` None means the connection was dropped."""

    method: str
    path: str
    query: str
    idempotency_key: str | None
    status: int | None


@dataclass
class _Job:
    """One fulfilment inside the simulator; `change` is its latest position in the poll feed."""

    request: FulfillmentRequest
    status: FulfillmentStatus
    lines: list[FulfillmentLine]
    updated_at: datetime
    change: int
    carrier: str | None = None
    tracking_number: str | None = None

    def snapshot(self) -> Fulfillment:
        return Fulfillment(
            id=self.request.id,
            order_ref=self.request.order_ref,
            mode=self.request.mode,
            status=self.status,
            lines=tuple(self.lines),
            updated_at=self.updated_at,
            carrier=self.carrier,
            tracking_number=self.tracking_number,
        )

    def kept(self) -> dict[str, int]:
        """Units per SKU still going out (quantity minus rejections)."""
        kept: dict[str, int] = {}
        for line in self.lines:
            kept[line.sku] = kept.get(line.sku, 0) + line.quantity - line.rejected_quantity
        return kept


@dataclass(frozen=True)
class _Replay:
    """The first answer to an idempotency key, and the request it answered."""

    request: FulfillmentRequest
    body: bytes


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = _encoder.encode(ErrorBody(error=ErrorDetail(code=code, message=message)))
    return Response(body, status, headers=headers, media_type="application/json")


def _json(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body, status, headers=headers, media_type="application/json")


Handler = Callable[[Request], Awaitable[Response]]


class ThreePLSimulator:
    """A warehouse speaking `rest`; serve `sim` (an ASGI app) and run `sim.run` beside it."""

    def __init__(
        self,
        *,
        knobs: ThreePLKnobs | None = None,
        stock: Mapping[str, int] | None = None,
        api_token: str | None = None,
        webhook: WebhookTarget | None = None,
        carrier: str = "dhl",
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        first_change: int = 0,
    ) -> None:
        self.knobs = knobs or ThreePLKnobs()
        # None: stock is not tracked (every SKU is accepted and always there; `/stock` is empty).
        self.stock: dict[str, int] | None = dict(stock) if stock is not None else None
        self.webhook = webhook
        self.carrier = carrier
        self.requests: list[RecordedRequest] = []
        self.callbacks_delivered: list[str] = []  # event ids, in delivery order
        self.callbacks_failed: list[str] = []  # event ids given up on or dropped
        self._api_token = api_token
        self._clock = clock
        self._rng = random.Random(seed)
        self._jobs: dict[str, _Job] = {}
        self._replays: dict[str, _Replay] = {}
        self._committed: dict[str, int] = {}  # picked units per SKU not yet shipped/collected
        # The update cursor counts up from here. A client keeps the last cursor it saw across
        # restarts, as with a real 3PL whose cursors only grow; a simulator started again for
        # the same client must start above it (`somsd demo` starts from the clock's ms).
        self._change = first_change
        self._planned = 0
        self._schedule: list[tuple[float, int, str]] = []  # (due, tie-breaker, fulfilment id)
        self._wakeup = trio.Event()
        self._callbacks: trio.MemorySendChannel[StatusCallback] | None = None
        self.app = Starlette(
            routes=[
                Route("/fulfillments", self._endpoint(self._create), methods=["POST"]),
                Route("/fulfillments", self._endpoint(self._list), methods=["GET"]),
                Route(
                    "/fulfillments/{fulfillment_id}", self._endpoint(self._show), methods=["GET"]
                ),
                Route("/stock", self._endpoint(self._stock), methods=["GET"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # -- what tests look at ----------------------------------------------------------------

    @property
    def idempotency_keys(self) -> list[str]:
        """The `Idempotency-Key` of every `POST /fulfillments` received, repeats included."""
        return [
            r.idempotency_key
            for r in self.requests
            if r.method == "POST" and r.idempotency_key is not None
        ]

    @property
    def fulfillment_ids(self) -> list[str]:
        """Fulfilments created, in creation order (each once, however often it was sent)."""
        return list(self._jobs)

    def fulfillment(self, fulfillment_id: str) -> Fulfillment:
        """The fulfilment at its current status (`KeyError` if it was never created)."""
        return self._jobs[fulfillment_id].snapshot()

    # -- the work loop -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Advance fulfilments on schedule and deliver callbacks, until cancelled."""
        send, receive = trio.open_memory_channel[StatusCallback](CALLBACK_QUEUE_SIZE)
        async with trio.open_nursery() as nursery:
            if self.webhook is not None:
                nursery.start_soon(self._deliver_callbacks, self.webhook, receive)
                self._callbacks = send
            task_status.started()
            try:
                while True:
                    # A fresh event before looking at the schedule: a POST arriving while we
                    # process (there is no await in between) sets this one and wakes us.
                    self._wakeup = trio.Event()
                    self._advance_due(trio.current_time())
                    due = self._schedule[0][0] if self._schedule else math.inf
                    with trio.move_on_at(due):
                        await self._wakeup.wait()
            finally:
                self._callbacks = None

    def _advance_due(self, now: float) -> None:
        while self._schedule and self._schedule[0][0] <= now:
            due, _, fulfillment_id = heapq.heappop(self._schedule)
            job = self._jobs[fulfillment_id]
            self._advance(job)
            if job.status not in FINAL_STATUSES:
                # From when the step was due, not when the loop got to it: no drift per step.
                self._plan_next_step(job, due)

    def _plan_next_step(self, job: _Job, since: float) -> None:
        delay = self.knobs.step_delay
        if job.status == "ready_for_pickup" and self.knobs.collect_delay is not None:
            delay = self.knobs.collect_delay
        self._planned += 1  # tie-breaker: equal due times run in the order they were planned
        heapq.heappush(self._schedule, (since + delay, self._planned, job.request.id))

    def _advance(self, job: _Job) -> None:
        """One status step; picking decides rejections, shipping/collecting takes the stock."""
        next_status = _NEXT_STATUS.get((job.request.mode, job.status))
        if next_status is None:
            return
        if next_status == "picked":
            job.lines = [self._pick(line) for line in job.lines]
            if all(line.rejected_quantity == line.quantity for line in job.lines):
                next_status = "rejected"
            else:
                for sku, quantity in job.kept().items():
                    self._committed[sku] = self._committed.get(sku, 0) + quantity
        elif next_status in ("shipped", "picked_up"):
            self._take_stock(job.kept())
            if next_status == "shipped":
                job.carrier = self.carrier
                job.tracking_number = _TRACKING_PREFIX + "".join(
                    str(self._rng.randrange(10)) for _ in range(12)
                )
        job.status = next_status
        self._touch(job)

    def _pick(self, line: FulfillmentLine) -> FulfillmentLine:
        """Pick one line: short stock first, then the rejection knobs on what is left."""
        rejected, reason = 0, line.reject_reason
        if self.stock is not None:
            available = self.stock.get(line.sku, 0) - self._committed.get(line.sku, 0)
            rejected = min(line.quantity, max(0, line.quantity - max(0, available)))
            reason = "out_of_stock" if rejected else None
        forced = self.knobs.reject_skus.get(line.sku)
        if rejected < line.quantity and forced is not None:
            rejected, reason = line.quantity, forced
        elif rejected < line.quantity and self._rng.random() < self.knobs.reject_rate:
            rejected = line.quantity
            reason = self._rng.choice(_REJECT_REASONS)
        if not rejected:
            return line
        return msgspec.structs.replace(line, rejected_quantity=rejected, reject_reason=reason)

    def _take_stock(self, kept: Mapping[str, int]) -> None:
        for sku, quantity in kept.items():
            self._committed[sku] = max(0, self._committed.get(sku, 0) - quantity)
            if self.stock is not None:
                self.stock[sku] = self.stock.get(sku, 0) - quantity

    def _touch(self, job: _Job) -> None:
        """Record a change: new position in the poll feed, time stamp, callback."""
        self._change += 1
        job.change = self._change
        job.updated_at = datetime.fromtimestamp(self._clock(), UTC)
        if self._callbacks is not None:
            callback = StatusCallback(
                event_id=f"{job.request.id}:{job.change}",
                cursor=str(job.change),
                fulfillment=job.snapshot(),
            )
            try:
                self._callbacks.send_nowait(callback)
            except trio.WouldBlock:
                self.callbacks_failed.append(callback.event_id)

    async def _deliver_callbacks(
        self, target: WebhookTarget, receive: trio.MemoryReceiveChannel[StatusCallback]
    ) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as http:
            async for callback in receive:
                await self._deliver(http, target, callback)

    async def _deliver(
        self, http: httpx.AsyncClient, target: WebhookTarget, callback: StatusCallback
    ) -> None:
        """POST one callback, retrying a few times; in order, one at a time."""
        outcome = "no attempt"
        for attempt in range(CALLBACK_ATTEMPTS):
            if attempt:
                await trio.sleep(CALLBACK_BACKOFF_SECONDS * 2 ** (attempt - 1))
            body, signature = encode_callback(callback, target.secret, timestamp=int(self._clock()))
            try:
                response = await http.post(
                    target.url,
                    content=body,
                    headers={SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
                )
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
                continue
            if response.is_success:
                self.callbacks_delivered.append(callback.event_id)
                return
            outcome = str(response.status_code)
        self.callbacks_failed.append(callback.event_id)
        log.warning("callback_given_up", event_id=callback.event_id, last_outcome=outcome)

    # -- the HTTP side -------------------------------------------------------------------------

    def _endpoint(self, handler: Handler) -> Handler:
        """Wrap a route: knobs and auth before it, recording after it."""

        async def endpoint(request: Request) -> Response:
            response = await self._answer(request, handler)
            status = None if isinstance(response, DroppedResponse) else response.status_code
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    query=request.url.query,
                    idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
                    status=status,
                )
            )
            return response

        return endpoint

    async def _answer(self, request: Request, handler: Handler) -> Response:
        knobs = self.knobs
        if knobs.latency > 0:
            await trio.sleep(knobs.latency)
        if knobs.outage == "unavailable":
            return _error(503, "unavailable", "simulated outage", headers={"Retry-After": "1"})
        if knobs.outage == "drop":
            return DroppedResponse()
        if knobs.error_rate and self._rng.random() < knobs.error_rate:
            return _error(500, "internal", "simulated failure")
        if not self._authorized(request):
            return _error(401, "unauthorized", "missing or wrong bearer token")
        response = await handler(request)
        if (
            request.method == "POST"
            and response.status_code == 201
            and knobs.lost_response_rate
            and self._rng.random() < knobs.lost_response_rate
        ):
            return DroppedResponse()  # created, but the client never hears about it
        return response

    def _authorized(self, request: Request) -> bool:
        if self._api_token is None:
            return True
        expected = f"Bearer {self._api_token}".encode()
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(expected, given)

    async def _create(self, request: Request) -> Response:
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
            return _error(
                400,
                "missing_idempotency_key",
                f"send an {IDEMPOTENCY_HEADER} header of 1 to {MAX_KEY_LENGTH} printable "
                "ASCII characters",
            )
        try:
            body = _request_decoder.decode(await request.body())
        except msgspec.ValidationError as exc:
            return _error(422, "invalid_body", str(exc))
        except msgspec.DecodeError as exc:
            return _error(400, "malformed_json", str(exc))
        replay = self._replays.get(key)
        if replay is not None:
            if replay.request != body:
                return _error(
                    422,
                    "idempotency_key_reused",
                    f"{IDEMPOTENCY_HEADER} was used for a different request",
                )
            return _json(replay.body, 201, headers={REPLAYED_HEADER: "true"})
        if body.id in self._jobs:
            return _error(
                409, "fulfillment_exists", f"fulfillment {body.id!r} exists under another key"
            )
        if self.stock is not None:
            unknown = sorted({line.sku for line in body.lines} - self.stock.keys())
            if unknown:
                return _error(422, "unknown_sku", f"not stocked here: {', '.join(unknown)}")
        job = _Job(
            request=body,
            status="accepted",
            lines=[FulfillmentLine(sku=line.sku, quantity=line.quantity) for line in body.lines],
            updated_at=datetime.fromtimestamp(self._clock(), UTC),
            change=0,
        )
        self._jobs[body.id] = job
        self._touch(job)
        self._plan_next_step(job, trio.current_time())
        self._wakeup.set()  # the work loop may be asleep until a later step, or forever
        encoded = _encoder.encode(job.snapshot())
        self._replays[key] = _Replay(body, encoded)
        return _json(encoded, 201)

    async def _show(self, request: Request) -> Response:
        fulfillment_id = request.path_params["fulfillment_id"]
        job = self._jobs.get(fulfillment_id)
        if job is None:
            return _error(404, "fulfillment_not_found", f"no fulfillment {fulfillment_id!r}")
        return _json(_encoder.encode(job.snapshot()))

    async def _list(self, request: Request) -> Response:
        since_text = request.query_params.get("updated_since", "0")
        limit_text = request.query_params.get("limit", str(DEFAULT_PAGE_SIZE))
        if not since_text.isdigit():
            return _error(400, "invalid_cursor", "updated_since takes a next_cursor value")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE_SIZE:
            return _error(400, "invalid_limit", f"limit is from 1 to {MAX_PAGE_SIZE}")
        since, limit = int(since_text), int(limit_text)
        changed = sorted(
            (job for job in self._jobs.values() if job.change > since), key=lambda j: j.change
        )
        page = changed[:limit]
        next_cursor = str(page[-1].change) if page else str(since)
        body = UpdatesPage(
            items=tuple(job.snapshot() for job in page),
            next_cursor=next_cursor,
            has_more=len(changed) > limit,
        )
        return _json(_encoder.encode(body))

    async def _stock(self, request: Request) -> Response:
        items = tuple(
            StockItem(sku=sku, on_hand=on_hand)
            for sku, on_hand in sorted((self.stock or {}).items())
        )
        snapshot = StockSnapshot(as_of=datetime.fromtimestamp(self._clock(), UTC), items=items)
        return _json(_encoder.encode(snapshot))
