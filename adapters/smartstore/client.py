"""`SmartstoreClient`: somsd's side of the Smartstore Web API (OData v4), one shop per client.

What the client owns is the boundary: query building (filters, keyset continuation, paging
within `Smartstore-Api-MaxTop`), answer decoding with bounds, remembering the headers every
answer carries (`max_top`, `server_date`, versions, customer id) and translating each failure
once into a typed error (see `errors`).

Retries: reads (GET) are retried here, a few times with short backoff (honouring `Retry-After`
up to `MAX_RETRY_WAIT`), because a read is harmless to repeat and a poll that fails on one 502
would only come back a poll interval later. Actions and PATCHes are *not* retried here: whether
repeating them is safe depends on what the caller knows (an `AddShipment` repeated blindly
creates a second shipment; look at `shipments(order_id)` first), so they go through the outbox.

Credentials live in the `httpx.AsyncClient` that `smartstore_http_client` builds (Basic auth);
no error message repeats them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import httpx
import msgspec
import trio

from adapters.errors import (
    TransientUpstreamError,
    UpstreamError,
    decode_answer,
    status_error,
    translate_http_error,
)
from adapters.smartstore.errors import (
    AUTH_FIXES,
    AccessDeniedReason,
    SmartstoreAuthError,
    SmartstoreConflict,
    SmartstoreHttpsRequired,
    SmartstoreNotFound,
    SmartstorePermissionDenied,
    SmartstoreProtocolViolation,
    SmartstoreRejected,
)
from adapters.smartstore.wire import (
    ENCODER,
    CombinationsPage,
    CombinationsPageBody,
    ODataErrorBody,
    OrderNotesPage,
    OrdersPage,
    ProductsPage,
    ProductsPageBody,
    RawPageBody,
    RejectedRow,
    RowKey,
    ShipmentInfo,
    ShipmentsPage,
    SsCombination,
    SsOrder,
    SsOrderNote,
    SsProduct,
    SsShipment,
)

__all__ = [
    "COMBINATION_SELECT",
    "DEFAULT_MAX_TOP",
    "DEFAULT_TIMEOUT",
    "ORDER_EXPAND",
    "PRODUCT_SELECT",
    "Observer",
    "ProbeResult",
    "SmartstoreClient",
    "odata_datetime",
    "odata_string",
    "smartstore_http_client",
]

DEFAULT_MAX_TOP: Final = 120  # WebApiSettings.DefaultMaxTop, until a header says otherwise
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=10.0)
ORDER_EXPAND: Final = (
    "OrderItems($expand=Product($select=Name)),"
    "BillingAddress($expand=Country),ShippingAddress($expand=Country)"
)
PRODUCT_SELECT: Final = (
    "Id,Sku,Gtin,Name,StockQuantity,ManageInventoryMethodId,Published,Visibility,DisableBuyButton"
)
COMBINATION_SELECT: Final = "Id,ProductId,Sku,Gtin,StockQuantity,IsActive,AllowOutOfStockOrders"

# GET retries inside the client: 3 tries, 0.2 s then 0.4 s (+ jitter). A Retry-After above
# MAX_RETRY_WAIT is not waited out here: the caller's schedule (poll interval, outbox backoff)
# is the better place for long waits.
READ_ATTEMPTS: Final = 3
READ_BACKOFF: Final = 0.2
MAX_RETRY_WAIT: Final = 5.0
_DETAIL_LIMIT: Final = 300

H_MAX_TOP: Final = "Smartstore-Api-MaxTop"
H_DATE: Final = "Smartstore-Api-Date"
H_APP_VERSION: Final = "Smartstore-Api-AppVersion"
H_VERSION: Final = "Smartstore-Api-Version"
H_CUSTOMER_ID: Final = "Smartstore-Api-CustomerId"
H_AUTH_ID: Final = "Smartstore-Api-AuthResultId"
H_AUTH_DESC: Final = "Smartstore-Api-AuthResultDesc"

T = TypeVar("T")
# (operation, HTTP status or None when no answer came, seconds)
Observer = Callable[[str, int | None, float], None]

_raw_page = msgspec.json.Decoder(RawPageBody)
_row_key = msgspec.json.Decoder(RowKey)
_products_page = msgspec.json.Decoder(ProductsPageBody)
_combinations_page = msgspec.json.Decoder(CombinationsPageBody)
_shipments_page = msgspec.json.Decoder(ShipmentsPage)
_notes_page = msgspec.json.Decoder(OrderNotesPage)
_order = msgspec.json.Decoder(SsOrder)
_shipment = msgspec.json.Decoder(SsShipment)
_product = msgspec.json.Decoder(SsProduct)
_combination = msgspec.json.Decoder(SsCombination)
_note = msgspec.json.Decoder(SsOrderNote)
_shipment_info = msgspec.json.Decoder(ShipmentInfo)
_error_body = msgspec.json.Decoder(ODataErrorBody)


def smartstore_http_client(
    url: str,
    public_key: str,
    secret_key: str,
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    max_connections: int = 8,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The httpx client for one shop: base `<url>/odata/v1/`, Basic auth, the required headers.

    Eight connections per shop: enough for a poll, a stock burst and a reconciliation at
    once, few enough that somsd never looks like a load test to a small shop's server.
    """
    return httpx.AsyncClient(
        base_url=url.rstrip("/") + "/odata/v1/",
        auth=httpx.BasicAuth(public_key, secret_key),
        headers={"Accept": "application/json", "Accept-Charset": "UTF-8"},
        timeout=timeout,
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        ),
        transport=transport,
    )


def odata_datetime(moment: datetime) -> str:
    """An OData DateTimeOffset literal in UTC (unquoted), e.g. `2024-05-01T00:00:00.5Z`."""
    if moment.utcoffset() is None:
        raise ValueError("odata_datetime needs a timezone-aware datetime")
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def odata_string(value: str) -> str:
    """An OData string literal: single quotes, embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)


class ProbeResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `somsd doctor` reports about a shop connection."""

    https: bool
    server_date: datetime | None
    clock_skew: timedelta | None  # server clock minus ours (positive: the shop is ahead)
    app_version: str | None
    api_version: str | None
    max_top: int | None
    customer_id: str | None


class SmartstoreClient:
    """Talks to one shop's Web API; `system` (the channel name) appears in every error."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        system: str,
        read_attempts: int = READ_ATTEMPTS,
        read_backoff: float = READ_BACKOFF,
        observe: Observer | None = None,
    ) -> None:
        """`observe(operation, status, seconds)` is called after every HTTP attempt (status
        None: no answer), for the caller's metrics; it must not block."""
        self._http = http
        self._observe = observe
        self.system = system
        self._read_attempts = max(1, read_attempts)
        self._read_backoff = read_backoff
        self._rng = random.Random()
        # From the headers of the latest answer (any status): what the shop told us last.
        self.max_top: int = DEFAULT_MAX_TOP
        self.server_date: datetime | None = None
        self.app_version: str | None = None
        self.api_version: str | None = None
        self.customer_id: str | None = None

    @property
    def supports_carrier(self) -> bool:
        """AddShipment takes `carrier` from 6.0 on; unknown version (no answer yet): assume so."""
        if not self.app_version:
            return True
        major = self.app_version.split(".", 1)[0]
        return not major.isdigit() or int(major) >= 6

    # -- orders ------------------------------------------------------------------------

    async def orders_since(
        self,
        updated_from: datetime,
        *,
        after: tuple[datetime, int] | None = None,
        top: int | None = None,
        expand: str = ORDER_EXPAND,
    ) -> OrdersPage:
        """Orders with `UpdatedOnUtc >= updated_from`, ordered by (UpdatedOnUtc, Id).

        `after` continues a window after the last row of the previous page (keyset, not
        `$skip`: rows updated meanwhile move to the end instead of shifting every page).
        """
        filter_ = f"UpdatedOnUtc ge {odata_datetime(updated_from)}"
        if after is not None:
            moment, order_id = after
            literal = odata_datetime(moment)
            filter_ += (
                f" and ((UpdatedOnUtc gt {literal}) or "
                f"(UpdatedOnUtc eq {literal} and Id gt {int(order_id)}))"
            )
        size = self._page_size(top)
        params = {
            "$filter": filter_,
            "$orderby": "UpdatedOnUtc,Id",
            "$top": str(size),
            "$expand": expand,
        }
        response, size = await self._read_page("Orders", "GET Orders", params)
        body = self._decode(_raw_page, response, "GET Orders")
        orders: list[SsOrder] = []
        rejected: list[RejectedRow] = []
        last_key: tuple[datetime, int] | None = None
        for raw in body.value:
            try:
                order = _order.decode(raw)
            except msgspec.DecodeError as exc:
                key = _lenient_key(raw)
                rejected.append(
                    RejectedRow(
                        id=key.id,
                        updated_on_utc=key.updated_on_utc,
                        reason=f"not a readable Smartstore order: {str(exc)[:_DETAIL_LIMIT]}",
                    )
                )
                if key.id is not None and key.updated_on_utc is not None:
                    last_key = (key.updated_on_utc, key.id)
                continue
            orders.append(order)
            last_key = (order.updated_on_utc, order.id)
        return OrdersPage(
            orders=tuple(orders),
            server_date=_parse_date(response.headers.get(H_DATE)),
            max_top=self.max_top,
            has_more=body.next_link is not None or len(body.value) >= size,
            rejected=tuple(rejected),
            last_key=last_key,
        )

    async def order(self, order_id: int, *, expand: str = ORDER_EXPAND) -> SsOrder:
        operation = "GET Orders(id)"
        params = {"$expand": expand} if expand else None
        response = await self._read(f"Orders({int(order_id)})", operation, params)
        return self._decode(_order, response, operation)

    async def shipments(self, order_id: int) -> list[SsShipment]:
        operation = "GET Orders(id)/Shipments"
        response = await self._read(f"Orders({int(order_id)})/Shipments", operation, None)
        return list(self._decode(_shipments_page, response, operation).value)

    async def order_notes(self, order_id: int) -> list[SsOrderNote]:
        operation = "GET Orders(id)/OrderNotes"
        response = await self._read(f"Orders({int(order_id)})/OrderNotes", operation, None)
        return list(self._decode(_notes_page, response, operation).value)

    async def shipment_info(self, order_id: int) -> ShipmentInfo:
        operation = "GET Orders/GetShipmentInfo"
        response = await self._read(f"Orders/GetShipmentInfo(id={int(order_id)})", operation, None)
        return self._decode(_shipment_info, response, operation)

    # -- order actions (never retried here) -----------------------------------------------

    async def payment_paid(
        self, order_id: int, *, payment_method_name: str | None = None
    ) -> SsOrder:
        """Mark paid. A not-allowed call answers 200 with the order unchanged: check the status."""
        body: dict[str, Any] = {}
        if payment_method_name:
            body["paymentMethodName"] = payment_method_name
        return await self._order_action(order_id, "PaymentPaid", body)

    async def cancel(self, order_id: int, notify_customer: bool = False) -> SsOrder:
        return await self._order_action(order_id, "Cancel", {"notifyCustomer": notify_customer})

    async def complete_order(self, order_id: int) -> SsOrder:
        return await self._order_action(order_id, "CompleteOrder", {})

    async def add_shipment(
        self,
        order_id: int,
        tracking_number: str | None,
        tracking_url: str | None,
        carrier: str | None,
        is_shipped: bool = True,
        *,
        notify_customer: bool = False,
    ) -> SsShipment | None:
        """A shipment of every remaining item; None when nothing is left to ship.

        Never repeat this blindly after a lost answer: the shop creates a shipment per call
        while items remain. `carrier` is a 6.x parameter; pass None for 5.x shops.
        """
        body: dict[str, Any] = {
            "trackingNumber": tracking_number or "",
            "trackingUrl": tracking_url or "",
            "isShipped": is_shipped,
            "notifyCustomer": notify_customer,
        }
        if carrier is not None:
            body["carrier"] = carrier
        operation = "POST Orders(id)/AddShipment"
        response = await self._write(
            "POST", f"Orders({int(order_id)})/AddShipment", operation, body
        )
        if response.status_code == 204 or response.content.strip() in (b"", b"null"):
            return None
        return self._decode(_shipment, response, operation)

    async def ship(self, shipment_id: int, *, notify_customer: bool = False) -> SsShipment:
        return await self._shipment_action(shipment_id, "Ship", {"notifyCustomer": notify_customer})

    async def deliver(self, shipment_id: int, *, notify_customer: bool = False) -> SsShipment:
        return await self._shipment_action(
            shipment_id, "Deliver", {"notifyCustomer": notify_customer}
        )

    async def add_order_note(
        self,
        order_id: int,
        note: str,
        display_to_customer: bool = False,
        *,
        notify_customer: bool = False,
    ) -> SsOrderNote:
        operation = "POST OrderNotes"
        response = await self._write(
            "POST",
            "OrderNotes",
            operation,
            {"OrderId": int(order_id), "Note": note, "DisplayToCustomer": display_to_customer},
            params={"notifyCustomer": "true" if notify_customer else "false"},
        )
        return self._decode(_note, response, operation)

    # -- catalogue -----------------------------------------------------------------------

    def _keyset_params(self, after_id: int, top: int | None, select: str) -> dict[str, str]:
        """One catalogue page after `after_id` by Id: keyset paging instead of a deep $skip."""
        return {
            "$filter": f"Id gt {int(after_id)}",
            "$orderby": "Id",
            "$top": str(self._page_size(top)),
            "$select": select,
        }

    async def products(
        self, *, after_id: int = 0, top: int | None = None, select: str = PRODUCT_SELECT
    ) -> ProductsPage:
        """Products with `Id > after_id` by Id (keyset paging through the whole catalogue)."""
        params = self._keyset_params(after_id, top, select)
        response, size = await self._read_page("Products", "GET Products", params)
        body = self._decode(_products_page, response, "GET Products")
        last = body.value[-1].id if body.value else after_id
        return ProductsPage(
            products=body.value,
            has_more=body.next_link is not None or len(body.value) >= size,
            last_id=last,
        )

    async def products_by_sku(self, sku: str, *, select: str = PRODUCT_SELECT) -> list[SsProduct]:
        params = {
            "$filter": f"Sku eq {odata_string(sku)}",
            "$select": select,
            "$top": str(min(10, self.max_top)),
        }
        response = await self._read("Products", "GET Products?Sku", params)
        return list(self._decode(_products_page, response, "GET Products?Sku").value)

    async def combinations(
        self, *, after_id: int = 0, top: int | None = None, select: str = COMBINATION_SELECT
    ) -> CombinationsPage:
        params = self._keyset_params(after_id, top, select)
        operation = "GET ProductVariantAttributeCombinations"
        response, size = await self._read_page(
            "ProductVariantAttributeCombinations", operation, params
        )
        body = self._decode(_combinations_page, response, operation)
        last = body.value[-1].id if body.value else after_id
        return CombinationsPage(
            combinations=body.value,
            has_more=body.next_link is not None or len(body.value) >= size,
            last_id=last,
        )

    async def combinations_by_sku(
        self, sku: str, *, select: str = COMBINATION_SELECT
    ) -> list[SsCombination]:
        params = {
            "$filter": f"Sku eq {odata_string(sku)}",
            "$select": select,
            "$top": str(min(10, self.max_top)),
        }
        operation = "GET ProductVariantAttributeCombinations?Sku"
        response = await self._read("ProductVariantAttributeCombinations", operation, params)
        return list(self._decode(_combinations_page, response, operation).value)

    async def patch_product(
        self, product_id: int, fields: Mapping[str, object], *, return_representation: bool = True
    ) -> SsProduct | None:
        """PATCH `Products(id)`; with `return_representation` the shop answers the product
        as it is after its hooks ran (it may have unpublished it for low stock)."""
        operation = "PATCH Products(id)"
        response = await self._write(
            "PATCH",
            f"Products({int(product_id)})",
            operation,
            dict(fields),
            prefer=return_representation,
        )
        if response.status_code == 204 or not response.content:
            return None
        return self._decode(_product, response, operation)

    async def patch_combination(
        self,
        combination_id: int,
        fields: Mapping[str, object],
        *,
        return_representation: bool = True,
    ) -> SsCombination | None:
        operation = "PATCH ProductVariantAttributeCombinations(id)"
        response = await self._write(
            "PATCH",
            f"ProductVariantAttributeCombinations({int(combination_id)})",
            operation,
            dict(fields),
            prefer=return_representation,
        )
        if response.status_code == 204 or not response.content:
            return None
        return self._decode(_combination, response, operation)

    # -- doctor ----------------------------------------------------------------------------

    async def probe(self, *, now: datetime | None = None) -> ProbeResult:
        """One cheap authenticated read; raises the typed auth/https errors like any call."""
        await self._read("Orders", "GET Orders", {"$top": "1", "$select": "Id"})
        local = now or datetime.now(UTC)
        skew = self.server_date - local if self.server_date is not None else None
        return ProbeResult(
            https=self._http.base_url.scheme == "https",
            server_date=self.server_date,
            clock_skew=skew,
            app_version=self.app_version,
            api_version=self.api_version,
            max_top=self.max_top,
            customer_id=self.customer_id,
        )

    # -- the boundary ----------------------------------------------------------------------

    def _page_size(self, top: int | None) -> int:
        size = self.max_top if top is None else top
        if size < 1:
            raise ValueError(f"top must be at least 1, not {size}")
        return min(size, self.max_top)

    async def _order_action(self, order_id: int, action: str, body: Mapping[str, Any]) -> SsOrder:
        operation = f"POST Orders(id)/{action}"
        response = await self._write("POST", f"Orders({int(order_id)})/{action}", operation, body)
        return self._decode(_order, response, operation)

    async def _shipment_action(
        self, shipment_id: int, action: str, body: Mapping[str, Any]
    ) -> SsShipment:
        operation = f"POST Shipments(id)/{action}"
        response = await self._write(
            "POST", f"Shipments({int(shipment_id)})/{action}", operation, body
        )
        return self._decode(_shipment, response, operation)

    async def _read_page(
        self, path: str, operation: str, params: dict[str, str]
    ) -> tuple[httpx.Response, int]:
        """A paged GET; when the shop refuses `$top` for a MaxTop lower than we assumed (its
        header on the refusal tells), once more within the limit. Returns the page size used."""
        size = int(params["$top"])
        try:
            return await self._read(path, operation, params), size
        except SmartstoreRejected as exc:
            if exc.status_code != 400 or size <= self.max_top:
                raise
        params = params | {"$top": str(self.max_top)}
        return await self._read(path, operation, params), self.max_top

    async def _read(
        self, path: str, operation: str, params: Mapping[str, str] | None
    ) -> httpx.Response:
        """GET with bounded retries on transient failures."""
        for attempt in range(self._read_attempts):
            try:
                return await self._send("GET", path, operation, params=params)
            except TransientUpstreamError as exc:
                if attempt + 1 >= self._read_attempts:
                    raise
                wait = self._read_backoff * 2**attempt * (1 + self._rng.random() / 2)
                if exc.retry_after is not None:
                    if exc.retry_after > MAX_RETRY_WAIT:
                        raise
                    wait = max(wait, exc.retry_after)
                await trio.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _write(
        self,
        method: str,
        path: str,
        operation: str,
        body: Mapping[str, Any],
        *,
        params: Mapping[str, str] | None = None,
        prefer: bool = False,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if prefer:
            headers["Prefer"] = "return=representation"
        return await self._send(
            method, path, operation, params=params, content=ENCODER.encode(body), headers=headers
        )

    async def _send(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            if self._observe is not None:
                self._observe(operation, None, time.perf_counter() - started)
            raise translate_http_error(exc, system=self.system, operation=operation) from exc
        if self._observe is not None:
            self._observe(operation, response.status_code, time.perf_counter() - started)
        self._remember(response.headers)
        if response.is_success:
            return response
        raise self._refusal(response, operation)

    def _remember(self, headers: httpx.Headers) -> None:
        max_top = headers.get(H_MAX_TOP, "").strip()
        if max_top.isdigit() and int(max_top) > 0:
            self.max_top = int(max_top)
        date = _parse_date(headers.get(H_DATE))
        if date is not None:
            self.server_date = date
        self.app_version = headers.get(H_APP_VERSION, self.app_version)
        self.api_version = headers.get(H_VERSION, self.api_version)
        self.customer_id = headers.get(H_CUSTOMER_ID, self.customer_id)

    def _refusal(self, response: httpx.Response, operation: str) -> UpstreamError:
        status = response.status_code
        odata_message = _odata_message(response.content)
        suffix = f": {odata_message}" if odata_message else ""
        where = f"{self.system}: {status} on {operation}"
        if status in (401, 421):
            return self._auth_error(response, operation)
        if status == 403:
            return SmartstorePermissionDenied(
                self.system,
                f"{where}{suffix}; the API user lacks a permission (order.read, order.update, "
                "order.editshipment, catalog.product.read/update/editvariant); grant it to the "
                "role of the API customer account",
                operation=operation,
                status_code=status,
            )
        if status == 404:
            return SmartstoreNotFound(
                self.system, f"{where}{suffix}", operation=operation, status_code=status
            )
        if status == 409:
            return SmartstoreConflict(
                self.system,
                f"{where}{suffix}; the record changed in the shop meanwhile; will retry",
                operation=operation,
                status_code=status,
            )
        if status in (400, 422):
            return SmartstoreRejected(
                self.system,
                f"{where}{suffix}",
                odata_message=odata_message,
                operation=operation,
                status_code=status,
            )
        error = status_error(
            response, system=self.system, operation=operation, detail=odata_message
        )
        if error.retry_after is None:
            error.retry_after = _retry_after_seconds(response.headers.get("retry-after"))
        return error

    def _auth_error(self, response: httpx.Response, operation: str) -> SmartstoreAuthError:
        reason_text = response.headers.get(H_AUTH_ID, "").strip()
        reason_id = int(reason_text) if reason_text.isdigit() else None
        desc = response.headers.get(H_AUTH_DESC, "").strip()[:_DETAIL_LIMIT]
        if response.status_code == 421 and reason_id is None:
            reason_id = AccessDeniedReason.SSL_REQUIRED  # 421 means exactly this
        try:
            known = AccessDeniedReason(reason_id) if reason_id is not None else None
        except ValueError:
            known = None
        if known is not None:
            fix = AUTH_FIXES[known]
            name = desc or known.name
        else:
            fix = "check public_key and secret_key_file against the shop's Web API configuration"
            name = desc or "no reason given"
        kind = (
            SmartstoreHttpsRequired
            if response.status_code == 421 or known is AccessDeniedReason.SSL_REQUIRED
            else SmartstoreAuthError
        )
        message = (
            f"{self.system}: {response.status_code} on {operation}: access to the Web API "
            f"denied ({name}); {fix}"
        )
        return kind(
            self.system,
            message,
            reason_id=reason_id,
            reason=name,
            operation=operation,
            status_code=response.status_code,
        )

    def _decode(
        self, decoder: msgspec.json.Decoder[T], response: httpx.Response, operation: str
    ) -> T:
        return decode_answer(
            decoder,
            response,
            system=self.system,
            operation=operation,
            protocol="the Smartstore Web API's",
            error=SmartstoreProtocolViolation,
        )


def _lenient_key(raw: bytes) -> RowKey:
    try:
        return _row_key.decode(raw)
    except msgspec.DecodeError:
        return RowKey()


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds, fractions allowed (the shared helper reads whole seconds only)."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86_400 else None


def _odata_message(body: bytes) -> str:
    try:
        error = _error_body.decode(body).error
    except msgspec.DecodeError:
        return ""
    return error.message[:_DETAIL_LIMIT]
