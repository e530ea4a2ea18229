"""`StoreClient`: the store's side of somsd's manual fulfilment API (a stand-in's client).

A store without a WMS works its pick list in somsd itself: staff (or this simulator) list the
location's fulfilments and move each one step at a time — pick, pack, then ship, or make it
ready for the customer and hand it over. One method per route, one request each, errors
translated once into the shared kinds: a `409` (someone else already moved it, or the step is
not allowed from its state) is `StepRefused`, a `404` is `FulfillmentGone`; both permanent,
and both mean "fetch the list again", not "retry this step".

Authentication is the admin bearer token, set on the injected `httpx.AsyncClient` by whoever
builds it; the client never sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar
from urllib.parse import quote

import httpx
import msgspec

from adapters.errors import decode_answer, somsd_error_detail, status_error, translate_http_error
from adapters.storesim.errors import FulfillmentGone, StepRefused
from adapters.storesim.wire import (
    FulfillmentState,
    PickupBody,
    RejectBody,
    ShipBody,
    Step,
    WorkItem,
    WorkLine,
    WorkPage,
)
from somsd.domain.atp import RejectionReason

__all__ = ["StoreClient"]

_encoder = msgspec.json.Encoder()
_item = msgspec.json.Decoder(WorkItem)
_page = msgspec.json.Decoder(WorkPage)
T = TypeVar("T")


class StoreClient:
    """Works one somsd's fulfilment routes; `system` names it in errors (e.g. "store-essen")."""

    def __init__(self, http: httpx.AsyncClient, *, system: str) -> None:
        self._http = http
        self.system = system

    async def fetch_work(
        self, location: str, *, state: FulfillmentState | None = None
    ) -> tuple[WorkItem, ...]:
        """The location's fulfilments (first page), optionally only those in `state`."""
        params = {"location": location}
        if state is not None:
            params["state"] = state
        operation = "GET /v1/fulfillments"
        response = await self._send("GET", "/v1/fulfillments", operation, params=params)
        return self._decode(_page, response, operation).fulfillments

    async def pick(self, fulfillment_id: str) -> WorkItem:
        return await self._step(fulfillment_id, "pick")

    async def pack(self, fulfillment_id: str) -> WorkItem:
        return await self._step(fulfillment_id, "pack")

    async def ship(self, fulfillment_id: str, *, carrier: str, tracking_number: str) -> WorkItem:
        return await self._step(
            fulfillment_id, "ship", ShipBody(carrier=carrier, tracking_number=tracking_number)
        )

    async def reject(
        self, fulfillment_id: str, lines: Sequence[WorkLine], *, reason: RejectionReason
    ) -> WorkItem:
        """Refuse units (a line's whole quantity or part of it); somsd re-routes them."""
        return await self._step(
            fulfillment_id, "reject", RejectBody(lines=tuple(lines), reason=reason)
        )

    async def mark_ready(self, fulfillment_id: str) -> WorkItem:
        """Click & collect: the parcel waits at the counter."""
        return await self._step(fulfillment_id, "ready")

    async def confirm_pickup(self, fulfillment_id: str, *, pickup_code: str) -> WorkItem:
        """Click & collect: the customer showed `pickup_code` and took the parcel."""
        return await self._step(fulfillment_id, "picked-up", PickupBody(pickup_code=pickup_code))

    async def _step(
        self, fulfillment_id: str, step: Step, body: msgspec.Struct | None = None
    ) -> WorkItem:
        operation = f"POST /v1/fulfillments/{{id}}/{step}"
        response = await self._send(
            "POST",
            f"/v1/fulfillments/{quote(fulfillment_id, safe='')}/{step}",
            operation,
            content=_encoder.encode(body) if body is not None else b"{}",
        )
        return self._decode(_item, response, operation)

    async def _send(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = await self._http.request(
                method, url, content=content, params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise translate_http_error(exc, system=self.system, operation=operation) from exc
        if response.is_success:
            return response
        detail = somsd_error_detail(response.content)
        suffix = f": {detail}" if detail else ""
        if response.status_code == 409:
            raise StepRefused(
                self.system,
                f"{self.system}: 409 on {operation}{suffix}; fetch the work list again",
                operation=operation,
                status_code=409,
            )
        if response.status_code == 404 and method == "POST":
            raise FulfillmentGone(
                self.system,
                f"{self.system}: 404 on {operation}{suffix}; it is no longer on the list",
                operation=operation,
                status_code=404,
            )
        raise status_error(response, system=self.system, operation=operation, detail=detail)

    def _decode(
        self, decoder: msgspec.json.Decoder[T], response: httpx.Response, operation: str
    ) -> T:
        return decode_answer(
            decoder,
            response,
            system=self.system,
            operation=operation,
            protocol="somsd's fulfilment API",
        )
