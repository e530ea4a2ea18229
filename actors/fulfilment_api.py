"""HTTP routes for store and warehouse work: the pick list and one step per request.

`GET /v1/fulfillments?location=&state=` is a location's pick list: without `state`, the open
fulfilments (requested, accepted, picked, packed, ready_for_pickup). Fulfilments are sorted by
their first SKU, then oldest first, and each one's lines by SKU - a picker walks the shelves by
bin, then SKU, and there is no bin data yet, so SKU order is the nearest stand-in (and batches
single-line orders of one SKU together). Pages are `{"fulfillments": [...], "next_cursor"}`
like `GET /v1/orders`; the cursor is an offset, so a list changing between pages may repeat or
skip an entry - re-read from the start after working a page, as the store simulator does.

`POST /v1/fulfillments/{id}/{accept,pick,pack,ship,reject,ready,picked-up}` moves one step.
Bodies are those proposed in `adapters/storesim/wire.py`: ship takes `carrier` and
`tracking_number`, reject takes `lines` and a `reason`, picked-up takes the customer's
`pickup_code`; the others take none (or `{}`). A step may skip ahead (pick without accepting)
but never go back: an illegal step is 409 with the allowed steps in the message, as is a wrong
pickup code; an unknown fulfilment is 404. Every answer is the fulfilment as it now stands.

Reject reasons are the stock book's (`stock_missing`, `damaged`, `declined`); `out_of_stock`
and `other`, the names store staff and 3PL protocols use, are accepted as aliases of
`stock_missing` and `declined`. Missing and damaged units are written off at the location.
All routes need the admin token; `X-Somsd-User` names the person for the history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
import trio
from starlette.requests import Request
from starlette.responses import Response

from actors.fulfilment import FulfilmentDesk
from somsd.actor import ReplyError
from somsd.api import ApiError, ApiRoute, body_decoder, decode_body, json_response, query_int
from somsd.documents.model import PackingLine, PackingRequest, Seller
from somsd.documents.render import render_packing
from somsd.domain.atp import RejectionReason, StockLine
from somsd.domain.errors import Conflict, DomainError
from somsd.projections.fulfilments import (
    OPEN_STATES,
    FulfilmentNotFound,
    FulfilmentPage,
    FulfilmentState,
    FulfilmentStatus,
    FulfilmentView,
    Step,
    fetch_fulfilment,
    list_fulfilments,
)
from somsd.projections.orders import decode_state, fetch_state
from somsd.store import Connection, EventStore

__all__ = [
    "BackorderList",
    "FulfilmentRoutes",
    "PickupBody",
    "RejectBody",
    "ShipBody",
    "TransferList",
]

_STATES: Final = frozenset(get_args(FulfilmentStatus))
# Page size: a store's open work fits in one page; 500 bounds one answer's size.
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 500
MAX_ASKED_LIMIT: Final = 1_000_000
MAX_CURSOR: Final = 2**63 - 1  # an SQLite OFFSET is a 64-bit integer

ApiRejectReason = Literal["stock_missing", "damaged", "declined", "out_of_stock", "other"]
_REASON_ALIASES: Final[dict[str, RejectionReason]] = {
    "out_of_stock": "stock_missing",
    "other": "declined",
}
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class ShipBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    carrier: NonEmpty
    tracking_number: NonEmpty


class RejectLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sku: NonEmpty
    quantity: Quantity


class RejectBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    lines: Annotated[tuple[RejectLine, ...], msgspec.Meta(min_length=1)]
    reason: ApiRejectReason


class PickupBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pickup_code: Annotated[str, msgspec.Meta(pattern=r"^\s*\d{6}\s*$")]


class EmptyBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class Backorder(msgspec.Struct, frozen=True, kw_only=True):
    """One order's units waiting for stock, since the routing that left them unplaced."""

    order_id: str
    order_number: str
    channel: str
    since: datetime
    lines: tuple[StockLine, ...]


class BackorderList(msgspec.Struct, frozen=True):
    """`GET /v1/backorders`: the queue oldest first (the order stock is given out in)."""

    backorders: tuple[Backorder, ...]
    next_cursor: int | None  # the queue position to pass as `cursor`; null: no more


class TransferList(msgspec.Struct, frozen=True):
    """`GET /v1/locations/{location}/transfers-in`: transfers on their way to a location."""

    location: str
    transfers: tuple[FulfilmentView, ...]


# A transfer is "coming in" from its request until it has arrived (delivered) or was refused.
INBOUND_TRANSFER_STATES: Final = ("requested", "accepted", "picked", "packed", "shipped")
# Transfers are found by scanning these states' fulfilments (the destination is inside the
# state document, not a column): bounded, and a store's inbound transfers are few.
TRANSFER_SCAN_PAGE: Final = 500
TRANSFER_SCAN_PAGES: Final = 20
_backorder_lines: Final = msgspec.json.Decoder(tuple[StockLine, ...])


def _backorders(
    conn: Connection, *, sku: str | None, after: int, limit: int
) -> list[tuple[int, Backorder]]:
    """(queue position, backorder) of orders waiting for stock (with `sku`), oldest first."""
    rows = conn.execute(
        "SELECT r.backorder_seq, r.order_id, o.number, o.channel, r.backorder_since, r.backorder "
        "FROM routing_orders r JOIN orders o ON o.order_id = r.order_id "
        "WHERE r.backorder_seq IS NOT NULL AND r.backorder_seq > ? AND r.closed = 0 "
        "AND (? IS NULL OR EXISTS (SELECT 1 FROM backorder_skus b "
        "WHERE b.order_id = r.order_id AND b.sku = ?)) "
        "ORDER BY r.backorder_seq LIMIT ?",
        (after, sku, sku, limit),
    ).fetchall()
    return [
        (
            seq,
            Backorder(
                order_id=order_id,
                order_number=number,
                channel=channel,
                since=datetime.fromisoformat(since),
                lines=_backorder_lines.decode(lines),
            ),
        )
        for seq, order_id, number, channel, since, lines in rows
    ]


def _inbound_transfers(conn: Connection, location: str) -> list[FulfilmentState]:
    found: list[FulfilmentState] = []
    for page in range(TRANSFER_SCAN_PAGES):
        batch = list_fulfilments(
            conn,
            location=None,
            states=INBOUND_TRANSFER_STATES,
            offset=page * TRANSFER_SCAN_PAGE,
            limit=TRANSFER_SCAN_PAGE,
        )
        found.extend(f for f in batch if f.kind == "transfer" and f.deliver_to == location)
        if len(batch) < TRANSFER_SCAN_PAGE:
            break
    return sorted(found, key=lambda f: f.created_at)


def _decode(raw: bytes, type_: type[Any]) -> Any:
    return decode_body(raw or b"{}", body_decoder(type_))


def _api_error(exc: DomainError) -> ApiError:
    if isinstance(exc, FulfilmentNotFound):
        return ApiError(404, exc.code, exc.message)
    if isinstance(exc, Conflict):
        return ApiError(409, exc.code, exc.message, exc.path)
    return ApiError(422, exc.code, exc.message, exc.path)


class FulfilmentRoutes:
    """Builds the fulfilment routes around the fulfilment desk and the store."""

    def __init__(
        self,
        fulfilments: FulfilmentDesk,
        store: EventStore,
        seller: Callable[[str], Seller | None] = lambda channel: None,
    ) -> None:
        self.fulfilments = fulfilments
        self.store = store
        # channel -> the seller on its documents; None while `[documents]` is off
        self.seller = seller

    # -- queries ---------------------------------------------------------------------------

    async def list_work(self, request: Request) -> Response:
        params = request.query_params
        state = params.get("state") or None
        if state is not None and state not in _STATES:
            raise ApiError(
                422,
                "invalid_query",
                f"unknown state {state!r}; use one of {', '.join(sorted(_STATES))}",
            )
        # A larger page is served as the largest (the demo asks for 1000), not refused.
        limit = min(query_int(params, "limit", DEFAULT_LIMIT, 1, MAX_ASKED_LIMIT), MAX_LIMIT)
        offset = query_int(params, "cursor", 0, 0, MAX_CURSOR)
        states = (state,) if state is not None else tuple(OPEN_STATES)
        found = await self.store.read(
            partial(
                list_fulfilments,
                location=params.get("location") or None,
                states=states,
                offset=offset,
                limit=limit,
            )
        )
        next_cursor = offset + limit if len(found) == limit else None
        return json_response(
            FulfilmentPage(tuple(FulfilmentView.of(item) for item in found), next_cursor)
        )

    async def show(self, request: Request) -> Response:
        fulfilment_id = request.path_params["fulfilment_id"]
        state = await self.store.read(partial(fetch_fulfilment, fulfilment_id=fulfilment_id))
        if state is None:
            raise ApiError(404, "fulfillment_not_found", f"no fulfilment {fulfilment_id!r}")
        return json_response(FulfilmentView.of(state))

    async def backorders(self, request: Request) -> Response:
        params = request.query_params
        limit = min(query_int(params, "limit", DEFAULT_LIMIT, 1, MAX_ASKED_LIMIT), MAX_LIMIT)
        after = query_int(params, "cursor", 0, 0, MAX_CURSOR)
        sku = params.get("sku") or None
        found = await self.store.read(partial(_backorders, sku=sku, after=after, limit=limit))
        next_cursor = found[-1][0] if len(found) == limit else None
        return json_response(BackorderList(tuple(b for _, b in found), next_cursor))

    async def transfers_in(self, request: Request) -> Response:
        location = request.path_params["location"]
        found = await self.store.read(partial(_inbound_transfers, location=location))
        return json_response(TransferList(location, tuple(FulfilmentView.of(f) for f in found)))

    async def delivery_note(self, request: Request) -> Response:
        """The parcel's delivery note, drawn from the fulfilment as it stands: not archived
        (it is not a tax document), so the same state always gives the same note."""
        fulfilment_id = request.path_params["fulfilment_id"]
        state = await self.store.read(partial(fetch_fulfilment, fulfilment_id=fulfilment_id))
        if state is None:
            raise ApiError(404, "fulfillment_not_found", f"no fulfilment {fulfilment_id!r}")
        blob = await self.store.read(partial(fetch_state, order_id=state.order_id))
        if blob is None:
            raise ApiError(404, "order_not_found", f"no order {state.order_id!r}")
        order = decode_state(blob)
        seller = await trio.to_thread.run_sync(self.seller, order.channel)  # may read a logo
        if seller is None:
            raise ApiError(404, "documents_off", "delivery notes need [documents] enabled")
        names = {line.sku: line.name for line in order.order.lines}
        note = PackingRequest(
            kind="delivery_note",
            number=state.fulfilment_id,
            order_number=state.order_number,
            issue_date=state.updated_at.date(),
            address=(
                order.order.billing_address
                if state.kind == "pickup"
                else order.order.shipping_address
            ),
            lines=tuple(
                PackingLine(sku=line.sku, name=names.get(line.sku, ""), quantity=line.quantity)
                for line in sorted(state.lines, key=lambda line: line.sku)
            ),
        )
        pdf = await trio.to_thread.run_sync(render_packing, note, seller)
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{state.fulfilment_id}.pdf"'},
        )

    # -- steps -----------------------------------------------------------------------------

    async def _answer(self, work: Callable[[], Awaitable[FulfilmentView]]) -> Response:
        try:
            return json_response(await work())
        except DomainError as exc:
            raise _api_error(exc) from None
        except ReplyError as exc:
            raise ApiError(503, "unavailable", str(exc)) from None

    def _plain_step(self, step: Step) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            _decode(await request.body(), EmptyBody)
            return await self._answer(
                partial(
                    self.fulfilments.step,
                    request.path_params["fulfilment_id"],
                    step,
                    actor=_user(request),
                )
            )

        return handler

    async def ship(self, request: Request) -> Response:
        body: ShipBody = _decode(await request.body(), ShipBody)
        return await self._answer(
            partial(
                self.fulfilments.step,
                request.path_params["fulfilment_id"],
                "ship",
                actor=_user(request),
                carrier=body.carrier,
                tracking_number=body.tracking_number,
            )
        )

    async def picked_up(self, request: Request) -> Response:
        body: PickupBody = _decode(await request.body(), PickupBody)
        return await self._answer(
            partial(
                self.fulfilments.step,
                request.path_params["fulfilment_id"],
                "picked-up",
                actor=_user(request),
                pickup_code=body.pickup_code.strip(),
            )
        )

    async def reject(self, request: Request) -> Response:
        body: RejectBody = _decode(await request.body(), RejectBody)
        reason: RejectionReason = _REASON_ALIASES.get(body.reason) or body.reason  # type: ignore[assignment]  # the aliases are exactly the Literal's extra values
        lines = tuple(StockLine(line.sku, line.quantity) for line in body.lines)
        return await self._answer(
            partial(
                self.fulfilments.reject,
                request.path_params["fulfilment_id"],
                lines,
                reason,
                actor=_user(request),
            )
        )

    # -- the route table -------------------------------------------------------------------

    def routes(self) -> list[ApiRoute]:
        base = "/v1/fulfillments/{fulfilment_id}"
        errors: dict[int, Any] = {400: None, 404: None, 409: None, 422: None, 503: None}

        def step(name: str, handler: Any, summary: str, body: Any = None) -> ApiRoute:
            return ApiRoute(
                f"{base}/{name}",
                "POST",
                handler,
                summary,
                admin=True,
                request=body,
                responses={200: FulfilmentView, **errors},
                tags=("fulfillments",),
            )

        return [
            ApiRoute(
                "/v1/fulfillments",
                "GET",
                self.list_work,
                "A location's pick list: open fulfilments (or those in `state`), by SKU",
                admin=True,
                responses={200: FulfilmentPage, 422: None},
                tags=("fulfillments",),
                query=(
                    ("location", "string", "only this location's fulfilments"),
                    (
                        "state",
                        {"type": "string", "enum": ["", *sorted(_STATES)]},
                        "only fulfilments in this state (default, or empty: open ones)",
                    ),
                    (
                        "cursor",
                        {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR},
                        "next_cursor of the previous page",
                    ),
                    (
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_ASKED_LIMIT},
                        f"page size (default {DEFAULT_LIMIT}); more than {MAX_LIMIT} is served "
                        f"as {MAX_LIMIT}",
                    ),
                ),
            ),
            ApiRoute(
                "/v1/backorders",
                "GET",
                self.backorders,
                "Orders waiting for stock, oldest first: which units, since when",
                admin=True,
                responses={200: BackorderList, 422: None},
                tags=("fulfillments",),
                query=(
                    ("sku", "string", "only backorders waiting for this SKU"),
                    (
                        "cursor",
                        {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR},
                        "next_cursor of the previous page",
                    ),
                    (
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_ASKED_LIMIT},
                        f"page size (default {DEFAULT_LIMIT}, at most {MAX_LIMIT} served)",
                    ),
                ),
            ),
            ApiRoute(
                "/v1/locations/{location}/transfers-in",
                "GET",
                self.transfers_in,
                "Transfers on their way to a location (requested to shipped), oldest first",
                admin=True,
                responses={200: TransferList},
                tags=("fulfillments",),
            ),
            ApiRoute(
                base,
                "GET",
                self.show,
                "One fulfilment with its lines, history and allowed steps",
                admin=True,
                responses={200: FulfilmentView, 404: None},
                tags=("fulfillments",),
            ),
            ApiRoute(
                f"{base}/delivery-note",
                "GET",
                self.delivery_note,
                "The fulfilment's delivery note (PDF), drawn from its lines as they stand",
                admin=True,
                responses={200: None, 404: None},
                tags=("fulfillments",),
            ),
            step("accept", self._plain_step("accept"), "The location takes the fulfilment on"),
            step("pick", self._plain_step("pick"), "Picked from the shelves"),
            step("pack", self._plain_step("pack"), "Packed"),
            step("ship", self.ship, "Handed to the carrier (ship and transfer)", ShipBody),
            step(
                "reject",
                self.reject,
                "Refuse units; they are written off if missing or damaged and routed elsewhere",
                RejectBody,
            ),
            step("ready", self._plain_step("ready"), "Click & collect: waiting at the counter"),
            step(
                "picked-up",
                self.picked_up,
                "Click & collect: handed over against the customer's pickup code",
                PickupBody,
            ),
        ]


def _user(request: Request) -> str:
    return "user:" + (request.headers.get("x-somsd-user") or "admin")
