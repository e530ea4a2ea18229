"""`ThreePLClient`: somsd's side of the `rest` fulfilment protocol (see `PROTOCOL.md`).

The client is deliberately thin: one method per protocol operation, each one request, no
retries and no state. Retrying is the outbox dispatcher's job (it owns backoff, attempt budgets
and dead letters, and httpx's transport retries only connection failures anyway), and the
cursor for `fetch_updates_since` belongs to the location actor, which stores it only after
recording the items. What the client owns is the boundary: the httpx client it is given (base
URL, bearer token, `Timeout`, `Limits`, all built by the composition root), request encoding,
answer decoding, and translating every failure once into the two kinds of `adapters.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from adapters.errors import (
    PermanentUpstreamError,
    UpstreamError,
    decode_answer,
    somsd_error_detail,
    status_error,
    translate_http_error,
)
from adapters.threepl.errors import FulfillmentConflict, FulfillmentNotFound, ProtocolViolation
from adapters.threepl.wire import (
    IDEMPOTENCY_HEADER,
    Fulfillment,
    FulfillmentRequest,
    StockSnapshot,
    UpdatesPage,
)

__all__ = ["MAX_PAGE_SIZE", "ThreePLClient"]

MAX_PAGE_SIZE: Final = 500  # the protocol's ceiling for `limit`

_encoder = msgspec.json.Encoder()
_fulfillment = msgspec.json.Decoder(Fulfillment)
_updates = msgspec.json.Decoder(UpdatesPage)
_stock = msgspec.json.Decoder(StockSnapshot)

T = TypeVar("T")
# A status with its own error class in this protocol, and the operator hint that goes with it.
_Specific = tuple[type[PermanentUpstreamError], str]


class ThreePLClient:
    """Talks `rest` to one location; `system` is its configured name, used in every error."""

    def __init__(self, http: httpx.AsyncClient, *, system: str) -> None:
        self._http = http
        self.system = system

    async def send_fulfillment(
        self, request: FulfillmentRequest, *, idempotency_key: str
    ) -> Fulfillment:
        """Hand over a fulfilment. Safe to repeat with the same key: the WMS creates it once.

        Raises `FulfillmentConflict` if the id exists under another key.
        """
        operation = "POST /fulfillments"
        response = await self._send(
            "POST",
            "/fulfillments",
            operation,
            content=_encoder.encode(request),
            headers={IDEMPOTENCY_HEADER: idempotency_key, "Content-Type": "application/json"},
            specific={409: (FulfillmentConflict, "the id is taken by another request (a bug)")},
        )
        return self._decode(_fulfillment, response, operation)

    async def fetch_fulfillment(self, fulfillment_id: str) -> Fulfillment:
        """The fulfilment at its current status; `FulfillmentNotFound` if the WMS lacks it."""
        operation = "GET /fulfillments/{id}"
        response = await self._send(
            "GET",
            f"/fulfillments/{quote(fulfillment_id, safe='')}",
            operation,
            specific={404: (FulfillmentNotFound, "the WMS does not know it; send it again")},
        )
        return self._decode(_fulfillment, response, operation)

    async def fetch_updates_since(self, cursor: str | None, *, limit: int = 100) -> UpdatesPage:
        """One page of fulfilments changed after `cursor` (None: from the beginning).

        Store `page.next_cursor` only once the items are recorded; call again at once while
        `page.has_more`.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be from 1 to {MAX_PAGE_SIZE}, not {limit}")
        operation = "GET /fulfillments?updated_since="
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["updated_since"] = cursor
        response = await self._send("GET", "/fulfillments", operation, params=params)
        return self._decode(_updates, response, operation)

    async def fetch_stock(self) -> StockSnapshot:
        """Absolute on-hand counts of every SKU the location holds."""
        operation = "GET /stock"
        response = await self._send("GET", "/stock", operation)
        return self._decode(_stock, response, operation)

    # -- the boundary: one request, one translation ---------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        specific: Mapping[int, _Specific] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method, url, content=content, params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise translate_http_error(exc, system=self.system, operation=operation) from exc
        if response.is_success:
            return response
        raise self._refusal(response, operation, specific or {})

    def _refusal(
        self,
        response: httpx.Response,
        operation: str,
        specific: Mapping[int, _Specific],
    ) -> UpstreamError:
        """The error for a non-2xx answer: a protocol-specific class first, else by status."""
        detail = somsd_error_detail(response.content)
        status = response.status_code
        if status in specific:
            kind, hint = specific[status]
            suffix = f": {detail}" if detail else ""
            return kind(
                self.system,
                f"{self.system}: {status} on {operation}{suffix}; {hint}",
                operation=operation,
                status_code=status,
            )
        return status_error(response, system=self.system, operation=operation, detail=detail)

    def _decode(
        self, decoder: msgspec.json.Decoder[T], response: httpx.Response, operation: str
    ) -> T:
        return decode_answer(
            decoder,
            response,
            system=self.system,
            operation=operation,
            protocol="the rest protocol's",
            error=ProtocolViolation,
        )
