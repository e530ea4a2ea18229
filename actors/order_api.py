"""HTTP routes for orders: webhook intake and the operator API.

Intake (`POST /v1/channels/{channel}/orders`) checks, in the order that costs least first: the
channel exists and takes webhooks (404), the body fits the limit (413), the signature and its
time window (401), the body decodes and validates (400 malformed JSON, 422 with the JSON path of
every problem). Only then does the order desk see it, and the answer (202, or 200 for a
redelivery) is sent after its events are committed. Nothing is stored for a refused request.

Operator routes need the admin bearer token; `X-Somsd-User` names the operator for the event
history (`user:<login>`), defaulting to `user:admin`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Annotated, Any, Final

import msgspec
from prometheus_client import CollectorRegistry, Histogram
from starlette.requests import Request
from starlette.responses import Response

from actors.order_desk import (
    ApproveReturn,
    CancelOrder,
    ChangeStatus,
    CopyOrder,
    CorrectAddress,
    IssueInvoice,
    OrderAction,
    OrderCommand,
    OrderDesk,
    OrderNotFound,
    Received,
    ReceiveReturn,
    RecordPayment,
    RecordShipment,
    RefundReturn,
    RejectReturn,
    ReleaseHold,
    RequestReturn,
    new_id,
)
from somsd.actor import ReplyError
from somsd.api import (
    ApiError,
    ApiRoute,
    FastRequest,
    body_decoder,
    decode_body,
    json_response,
    query_int,
    read_limited_body,
)
from somsd.config import ChannelConfig
from somsd.domain.errors import (
    Conflict,
    DomainError,
    InvalidCommand,
    InvalidOrder,
)
from somsd.domain.events import LineQuantity, OrderEvent, ReturnedLine, decode_event
from somsd.domain.order import Address, Order, decode_order
from somsd.domain.state import OrderState, fold
from somsd.metrics import LabelChildren
from somsd.projections.fulfilments import OrderDetail, OrderFulfilment, read_order_detail
from somsd.projections.orders import OrderSummary, list_orders, order_stream
from somsd.signing import SIGNATURE_HEADER, SignatureError, verify_signature
from somsd.store import EventStore

__all__ = ["OrderRoutes"]


class Accepted(msgspec.Struct, frozen=True):
    order_id: str
    duplicate: bool


class OrderPage(msgspec.Struct, frozen=True):
    orders: tuple[OrderSummary, ...]
    next_cursor: int | None  # null: no more orders


# A reason the domain requires (`require_reason`): stated in the schema so generated clients
# send one; the check and its `reason_required` error stay the domain's.
RequiredReason = Annotated[str, msgspec.Meta(extra_json_schema={"minLength": 1, "pattern": r"\S"})]


class StatusBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: Annotated[str, msgspec.Meta(extra_json_schema={"minLength": 1})]
    reason: RequiredReason


class ReasonBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: str = ""


class RequiredReasonBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: RequiredReason


# Money travels as a decimal string: a JSON float has no exact decimal value, and JSON numbers
# have no upper bound. Up to 10^9 (no single payment of a shop order comes near) with at most
# three decimals (the finest minor unit in ISO 4217); the currency's own precision is the
# domain's check (`require_amount`).
PAYMENT_AMOUNT_PATTERN: Final = r"^(?=.*[1-9])(0|[1-9][0-9]{0,8})(\.[0-9]{1,3})?$"  # > 0
PaymentAmount = Annotated[
    str,
    msgspec.Meta(
        pattern=PAYMENT_AMOUNT_PATTERN,
        description='a decimal string in the currency\'s minor units, e.g. "82.19"',
        examples=["82.19"],
    ),
]


class AddressBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: RequiredReason
    billing_address: Address | None = None
    shipping_address: Address | None = None


class PaymentBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    amount: PaymentAmount
    payment_id: str = ""
    reference: str = ""


# At least one line: the domain refuses an empty list (`no_lines`); schema only, as above.
Lines = Annotated[tuple[LineQuantity, ...], msgspec.Meta(extra_json_schema={"minItems": 1})]


class ShipmentBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    lines: Lines
    shipment_id: str = ""
    location: str = ""
    tracking_number: str = ""


class CancelBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: RequiredReason
    lines: Lines | None = None


class CopyBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: RequiredReason
    replacement: bool = False
    lines: Lines | None = None


class ReturnBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    lines: Lines
    reason: RequiredReason


class ReceivedLinesBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    lines: Annotated[tuple[ReturnedLine, ...], msgspec.Meta(extra_json_schema={"minItems": 1})]


class EventRecord(msgspec.Struct, frozen=True):
    seq: int
    version: int
    recorded_at: str
    event: OrderEvent


_encode_accepted = msgspec.json.Encoder().encode
_SIGNATURE_HEADER = SIGNATURE_HEADER.lower().encode("latin-1")
MAX_BODY_SETTING: Final = "api.max_body_bytes"


def _decode_body(raw: bytes, type_: type[Any]) -> Any:
    return decode_body(raw, body_decoder(type_))


# Cursors are event-store sequence numbers and SQLite integers are 64-bit: anything beyond
# cannot name an order and would overflow the query.
MAX_CURSOR: Final = 2**63 - 1
MAX_PAGE: Final = 500


# Refusals naming something in the URL that does not exist: 404, like an unknown order.
_NOT_FOUND_CODES = frozenset({"unknown_return"})


def _rfc3339(text: str, name: str) -> datetime:
    """An RFC 3339 timestamp with its offset (`Z` or `+01:00`), or 422 naming the parameter."""
    try:
        value = datetime.fromisoformat(text)
        # year 1 at +14:00 is before year 1 in UTC: not a moment somsd can have seen
        utc = value.astimezone(UTC) if value.tzinfo is not None else None
    except (ValueError, OverflowError):
        utc = None
    if utc is None:
        raise ApiError(
            422,
            "invalid_query",
            f"{name} must be an RFC 3339 time with offset, e.g. 2026-12-07T10:00:00Z",
            name,
        )
    return utc


def _domain_error(exc: DomainError) -> ApiError:
    if isinstance(exc, OrderNotFound):
        return ApiError(404, exc.code, exc.message)
    if exc.code in _NOT_FOUND_CODES:
        return ApiError(404, exc.code, exc.message, exc.path)
    if isinstance(exc, Conflict):  # IllegalTransition's message lists the allowed targets
        return ApiError(409, exc.code, exc.message, exc.path)
    if isinstance(exc, InvalidCommand | InvalidOrder):
        return ApiError(422, exc.code, exc.message, exc.path)
    return ApiError(422, exc.code, exc.message, exc.path)


class OrderRoutes:
    """Builds the order routes around the desk, the store and the live config."""

    def __init__(
        self,
        desk: OrderDesk,
        store: EventStore,
        *,
        channels: Callable[[], dict[str, ChannelConfig]],
        max_body_bytes: Callable[[], int],
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.desk = desk
        self.store = store
        self._channels = channels
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self.intake_seconds = Histogram(
            "somsd_intake_request_seconds",
            "Webhook intake requests from arrival to answer, by outcome.",
            ["outcome"],
            registry=registry,
            # From a commit-bound 1 ms to the 10 s a webhook sender typically waits.
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.intake_by_outcome = LabelChildren(self.intake_seconds)

    # -- intake --------------------------------------------------------------------------

    async def intake(self, request: Request) -> Response:
        status, body = await self._timed_intake(
            request.path_params["channel"],
            lambda: request.headers.get(SIGNATURE_HEADER),
            lambda limit: read_limited_body(request, limit, limit_name=MAX_BODY_SETTING),
        )
        return Response(body, status_code=status, media_type="application/json")

    async def intake_fast(self, request: FastRequest) -> tuple[int, bytes]:
        """`intake` straight from the ASGI app, without Starlette (see `FastRequest`)."""
        return await self._timed_intake(
            request.params["channel"],
            lambda: request.header(_SIGNATURE_HEADER),
            lambda limit: request.read_limited_body(limit, limit_name=MAX_BODY_SETTING),
        )

    async def _timed_intake(
        self,
        name: str,
        signature: Callable[[], str | None],
        read_body: Callable[[int], Awaitable[bytes]],
    ) -> tuple[int, bytes]:
        started = time.perf_counter()
        outcome = "rejected"
        try:
            received = await self._intake(name, signature, read_body)
            outcome = "duplicate" if received.duplicate else "accepted"
            body = _encode_accepted(Accepted(received.order_id, received.duplicate))
            return (200 if received.duplicate else 202), body
        finally:
            self.intake_by_outcome(outcome).observe(time.perf_counter() - started)

    async def _intake(
        self,
        name: str,
        signature: Callable[[], str | None],
        read_body: Callable[[int], Awaitable[bytes]],
    ) -> Received:
        channel = self._channels().get(name)
        if channel is None or channel.kind != "webhook" or channel.secret_file is None:
            raise ApiError(404, "unknown_channel", f"no webhook channel {name!r}")
        body = await read_body(self._max_body_bytes())
        try:
            verify_signature(
                signature(),
                body,
                channel.secret_file.secret.reveal().encode(),
                now=self._clock(),
            )
        except SignatureError as exc:
            raise ApiError(401, "bad_signature", str(exc)) from None
        try:
            order = decode_order(body, known_pickup_locations=self.desk.policy.pickup_locations)
        except InvalidOrder as exc:
            status = 400 if exc.code == "malformed_json" else 422
            raise ApiError(status, exc.code, exc.message, exc.path, problems=exc.problems) from None
        try:
            return await self.desk.receive(name, order, validated=True)
        except DomainError as exc:
            raise _domain_error(exc) from None

    async def _ask(self, make: Callable[[Any], Any]) -> Any:
        try:
            return await self.desk.ask(make)
        except DomainError as exc:
            raise _domain_error(exc) from None
        except ReplyError as exc:
            raise ApiError(503, "unavailable", str(exc)) from None

    # -- operator actions --------------------------------------------------------------

    async def _command(self, request: Request, action: OrderAction) -> Response:
        order_id = request.path_params["order_id"]
        user = "user:" + (request.headers.get("x-somsd-user") or "admin")
        state: OrderState = await self._ask(
            lambda reply: OrderCommand(order_id, action, user, reply)
        )
        return json_response(state)

    async def change_status(self, request: Request) -> Response:
        body: StatusBody = _decode_body(await request.body(), StatusBody)
        return await self._command(request, ChangeStatus(body.status, body.reason))

    async def release_hold(self, request: Request) -> Response:
        body: RequiredReasonBody = _decode_body(await request.body() or b"{}", RequiredReasonBody)
        return await self._command(request, ReleaseHold(body.reason))

    async def correct_address(self, request: Request) -> Response:
        body: AddressBody = _decode_body(await request.body(), AddressBody)
        action = CorrectAddress(body.billing_address, body.shipping_address, body.reason)
        return await self._command(request, action)

    async def record_payment(self, request: Request) -> Response:
        body: PaymentBody = _decode_body(await request.body(), PaymentBody)
        payment_id = body.payment_id or new_id("p")
        return await self._command(
            request, RecordPayment(Decimal(body.amount), payment_id, body.reference)
        )

    async def record_shipment(self, request: Request) -> Response:
        body: ShipmentBody = _decode_body(await request.body(), ShipmentBody)
        action = RecordShipment(
            body.lines, body.shipment_id or new_id("s"), body.location, body.tracking_number
        )
        return await self._command(request, action)

    async def issue_invoice(self, request: Request) -> Response:
        return await self._command(request, IssueInvoice())

    async def cancel(self, request: Request) -> Response:
        body: CancelBody = _decode_body(await request.body(), CancelBody)
        return await self._command(request, CancelOrder(body.reason, body.lines))

    async def copy(self, request: Request) -> Response:
        body: CopyBody = _decode_body(await request.body(), CopyBody)
        response = await self._command(
            request, CopyOrder(body.reason, body.replacement, body.lines)
        )
        response.status_code = 201
        return response

    async def request_return(self, request: Request) -> Response:
        body: ReturnBody = _decode_body(await request.body(), ReturnBody)
        response = await self._command(request, RequestReturn(body.lines, body.reason))
        response.status_code = 201
        return response

    async def approve_return(self, request: Request) -> Response:
        body: ReasonBody = _decode_body(await request.body() or b"{}", ReasonBody)
        return await self._command(
            request, ApproveReturn(request.path_params["rma_id"], body.reason)
        )

    async def reject_return(self, request: Request) -> Response:
        raw = await request.body() or b"{}"
        body: RequiredReasonBody = _decode_body(raw, RequiredReasonBody)
        return await self._command(
            request, RejectReturn(request.path_params["rma_id"], body.reason)
        )

    async def receive_return(self, request: Request) -> Response:
        body: ReceivedLinesBody = _decode_body(await request.body() or b"{}", ReceivedLinesBody)
        return await self._command(
            request, ReceiveReturn(request.path_params["rma_id"], body.lines)
        )

    async def refund_return(self, request: Request) -> Response:
        body: ReasonBody = _decode_body(await request.body() or b"{}", ReasonBody)
        return await self._command(
            request, RefundReturn(request.path_params["rma_id"], body.reason)
        )

    # -- queries -----------------------------------------------------------------------

    async def list_orders(self, request: Request) -> Response:
        params = request.query_params
        limit = query_int(params, "limit", 50, 1, MAX_PAGE)
        after = query_int(params, "cursor", 0, 0, MAX_CURSOR)
        orders = await self.store.read(
            partial(
                list_orders,
                # An empty parameter is what a blank form field sends: no filter.
                status=params.get("status") or None,
                channel=params.get("channel") or None,
                text=params.get("q") or None,
                after=after,
                limit=limit,
            )
        )
        next_cursor = orders[-1].cursor if len(orders) == limit else None
        return json_response(OrderPage(tuple(orders), next_cursor))

    async def show(self, request: Request) -> Response:
        order_id = request.path_params["order_id"]
        as_of_text = request.query_params.get("as_of")
        if as_of_text is not None:  # given but empty is a mistake too (422), not "now"
            return json_response(await self._as_of(order_id, _rfc3339(as_of_text, "as_of")))
        detail = await self.store.read(partial(read_order_detail, order_id=order_id))
        if detail is None:
            raise ApiError(404, "order_not_found", f"no order {order_id!r}")
        return json_response(detail)

    async def _as_of(self, order_id: str, as_of: datetime) -> OrderDetail:
        """The order as somsd knew it at `as_of`: its events committed by then, folded again.

        Commit time (`recorded_at`), not the event's own `at`, decides: the question is what
        the system showed at that moment. The routing decisions made by then come along;
        fulfilments are a separate stream and are left out (the present detail has them)."""
        stored = await self.store.read_stream(order_stream(order_id))
        if not stored:
            raise ApiError(404, "order_not_found", f"no order {order_id!r}")
        events = [decode_event(e.payload) for e in stored if e.recorded_at <= as_of]
        if not events:
            raise ApiError(
                404,
                "order_not_yet_received",
                f"order {order_id!r} was received after {as_of.isoformat()}",
                "as_of",
            )
        state = fold(events)
        now = await self.store.read(partial(read_order_detail, order_id=order_id))
        routing = tuple(r for r in now.fulfilment.routing if r.at <= as_of) if now else ()
        fields = {name: getattr(state, name) for name in state.__struct_fields__}
        return OrderDetail(**fields, fulfilment=OrderFulfilment(routing=routing))

    async def events(self, request: Request) -> Response:
        order_id = request.path_params["order_id"]
        stored = await self.store.read_stream(order_stream(order_id))
        if not stored:
            raise ApiError(404, "order_not_found", f"no order {order_id!r}")
        return json_response(
            [
                EventRecord(e.seq, e.version, e.recorded_at.isoformat(), decode_event(e.payload))
                for e in stored
            ]
        )

    # -- the route table ---------------------------------------------------------------

    def routes(self) -> list[ApiRoute]:
        order = "/v1/orders/{order_id}"
        errors = {400: None, 404: None, 409: None, 422: None}

        def action(path: str, handler: Any, summary: str, body: Any, ok: int = 200) -> ApiRoute:
            return ApiRoute(
                path,
                "POST",
                handler,
                summary,
                admin=True,
                request=body,
                responses={ok: OrderState, **errors},
                tags=("orders",),
            )

        return [
            ApiRoute(
                "/v1/channels/{channel}/orders",
                "POST",
                self.intake,
                "Webhook intake: a signed canonical order; 202 once durable, 200 for a redelivery",
                fast=self.intake_fast,
                request=Order,
                responses={
                    200: Accepted,
                    202: Accepted,
                    400: None,
                    401: None,
                    404: None,
                    413: None,
                    422: None,
                    503: None,
                },
                tags=("intake",),
            ),
            ApiRoute(
                "/v1/orders",
                "GET",
                self.list_orders,
                "Orders in arrival order; filters status, channel, q (number, name, e-mail); "
                "cursor pagination",
                admin=True,
                responses={200: OrderPage, 422: None},
                tags=("orders",),
                query=(
                    ("status", "string", "only orders in this status"),
                    ("channel", "string", "only orders from this channel"),
                    ("q", "string", "text in the order number, customer name or e-mail"),
                    (
                        "cursor",
                        {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR},
                        "next_cursor of the previous page",
                    ),
                    (
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                        f"page size, 1 to {MAX_PAGE} (default 50)",
                    ),
                ),
            ),
            ApiRoute(
                order,
                "GET",
                self.show,
                "One order: lines, status history, invoices, credit notes, returns, routing "
                "decisions with every candidate's score and rejection, fulfilments; with "
                "as_of, the order as it was then (its events up to that moment replayed)",
                admin=True,
                responses={200: OrderDetail, 404: None, 422: None},
                tags=("orders",),
                query=(
                    (
                        "as_of",
                        {"type": "string", "format": "date-time"},
                        "RFC 3339 time with offset: the order as it stood then",
                    ),
                ),
            ),
            ApiRoute(
                order + "/events",
                "GET",
                self.events,
                "The order's event history, oldest first",
                admin=True,
                responses={200: list[EventRecord], 404: None},
                tags=("orders",),
            ),
            action(order + "/status", self.change_status, "Change the status", StatusBody),
            action(order + "/release", self.release_hold, "Release a hold", RequiredReasonBody),
            action(
                order + "/address",
                self.correct_address,
                "Correct the billing and/or shipping address (validated like intake); an order "
                "held only for its address is released once the new one passes",
                AddressBody,
            ),
            action(order + "/payments", self.record_payment, "Record a payment", PaymentBody),
            action(
                order + "/shipments", self.record_shipment, "Record shipped units", ShipmentBody
            ),
            action(order + "/invoice", self.issue_invoice, "Issue the drafted invoice", None),
            action(order + "/cancel", self.cancel, "Cancel the order or some lines", CancelBody),
            action(order + "/copy", self.copy, "Copy as a repeat or replacement", CopyBody, 201),
            action(order + "/returns", self.request_return, "Request a return", ReturnBody, 201),
            action(
                order + "/returns/{rma_id}/approve",
                self.approve_return,
                "Approve a return",
                ReasonBody,
            ),
            action(
                order + "/returns/{rma_id}/reject",
                self.reject_return,
                "Reject a return",
                RequiredReasonBody,
            ),
            action(
                order + "/returns/{rma_id}/receive",
                self.receive_return,
                "Receive returned lines with their condition",
                ReceivedLinesBody,
            ),
            action(
                order + "/returns/{rma_id}/refund",
                self.refund_return,
                "Refund a return",
                ReasonBody,
            ),
        ]
