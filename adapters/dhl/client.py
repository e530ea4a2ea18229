"""`DhlClient`: somsd's own client of DHL Parcel DE Shipping v2 and the unified tracking API.

One method per operation of `adapters.carrier.CarrierAdapter`, each one request, no retries
(the outbox dispatcher retries). Authentication as the SPEC has it (reference section 2): the
API key in `dhl-api-key` on every call, plus either HTTP Basic with the business-customer
(GKP) user or an OAuth2 password-flow token from `/parcel/de/account/auth/ropc/v1/token`,
fetched once and renewed shortly before it expires or when DHL answers 401.

Answers: 200 for one shipment, 207 when items differ (each `items[i].sstatus` is read), 400
with per-item `validationMessages` (-> `ShipmentRefused` with DHL's words), 401/403 permanent,
429 and 5xx transient with `Retry-After`. A timeout on `POST /orders` is transient too, but
the label may exist: the carrier actor asks `find_by_reference` before it buys again.

`find_by_reference` reads the daily manifest of the billing number and ship date and reprints
the shipments somsd does not know, matching `shipmentRefNo` (SPEC operations `getManifests`
and `getOrder`; the protocol, its spec lines and its limits are in `PROTOCOL.md`).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import date
from typing import Final

import httpx
import msgspec

from adapters.carrier import (
    Label,
    LabelFormat,
    LabelLookupInconclusive,
    ShipmentData,
    ShipmentRefused,
    TrackingStatus,
)
from adapters.dhl.mapping import (
    ReprintVerdict,
    UnknownCountry,
    batches,
    item_label,
    item_messages,
    manifest_candidates,
    match_reprint,
    order_request,
    query,
    tracking_status,
)
from adapters.dhl.wire import (
    API_KEY_HEADER,
    DEFAULT_PROFILE,
    MAX_SHIPMENTS_PER_CALL,
    LabelDataResponse,
    ManifestItem,
    RequestStatus,
    ResponseItem,
    SingleManifestResponse,
    TrackingResponse,
)
from adapters.errors import (
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamError,
    status_error,
    translate_http_error,
)
from somsd.secrets import Secret

__all__ = ["OAUTH_TOKEN_PATH", "DhlAuth", "DhlClient"]

OAUTH_TOKEN_PATH: Final = "/parcel/de/account/auth/ropc/v1/token"  # noqa: S105  # a path
# Renew an OAuth token this long before DHL says it expires: a request signed with a token
# that expires in flight is refused.
TOKEN_MARGIN: Final = 60.0
# One lookup reprints at most this many shipments it does not know (10 calls of 30): a
# manifest with more unknown shipments is a case for the operator, not for a loop.
MAX_LOOKUP_REPRINTS: Final = 300
# A daily manifest answer (without the PDF: includeDocs=URL) above this is not read.
MAX_MANIFEST_BYTES: Final = 8 * 1024 * 1024

_labels = msgspec.json.Decoder(LabelDataResponse)
_manifest = msgspec.json.Decoder(SingleManifestResponse)
_problem = msgspec.json.Decoder(RequestStatus)
_tracking = msgspec.json.Decoder(TrackingResponse)
_encoder = msgspec.json.Encoder()


class _Token(msgspec.Struct, frozen=True):
    access_token: str
    expires_in: float = 1800.0


class DhlAuth(msgspec.Struct, frozen=True, kw_only=True):
    """Credentials: `mode` basic (GKP user + password) or oauth (the same user through ROPC,
    with the API key as client id and `client_secret`)."""

    api_key: Secret
    mode: str = "basic"  # basic | oauth
    user: str = ""
    password: Secret | None = None
    client_secret: Secret | None = None
    token_url: str | None = None  # default: OAUTH_TOKEN_PATH on the shipping host


class DhlClient:
    """See the module docstring. `http` carries timeouts and limits; base URLs are explicit."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        system: str,
        shipping_url: str,
        tracking_url: str,
        auth: DhlAuth,
        profile: str = DEFAULT_PROFILE,
    ) -> None:
        self.system = system
        self._http = http
        self._shipping = shipping_url.rstrip("/")
        self._tracking = tracking_url.rstrip("/")
        self._auth = auth
        self._profile = profile
        self._token: str | None = None
        self._token_expires = 0.0

    # -- the carrier protocol --------------------------------------------------------------

    async def validate(self, shipment: ShipmentData) -> tuple[str, ...]:
        """DHL's dry run: the error messages of a shipment it would refuse, else ()."""
        response = await self._post_orders(shipment, validate=True)
        answer = self._decode_labels(response, "validate shipment")
        if response.status_code in (200, 207):
            return tuple(m for item in answer.items for m in _errors_of(item))
        if response.status_code == 400:
            messages = tuple(m for item in answer.items for m in item_messages(item))
            return messages or (answer.status.detail or "refused by DHL",)
        raise self._refusal(response, "validate shipment", answer)

    async def create_label(self, shipment: ShipmentData) -> Label:
        operation = "create label"
        response = await self._post_orders(shipment, validate=False)
        answer = self._decode_labels(response, operation)
        if response.status_code in (200, 207):
            if len(answer.items) != 1:
                raise PermanentUpstreamError(
                    self.system,
                    f"{self.system}: {operation}: {len(answer.items)} items for one shipment",
                    operation=operation,
                )
            [item] = answer.items
            if item.sstatus.status not in (None, 200) or not item.shipmentNo:
                raise ShipmentRefused(self.system, item_messages(item), operation=operation)
            return self._label(item, shipment.reference, shipment.label_format, operation)
        if response.status_code == 400:
            messages = tuple(m for item in answer.items for m in item_messages(item))
            raise ShipmentRefused(
                self.system, messages or (answer.status.detail or "",), operation=operation
            )
        raise self._refusal(response, operation, answer)

    async def find_by_reference(
        self, shipment: ShipmentData, *, known: Collection[str] = ()
    ) -> Label | None:
        """The label DHL holds under `shipment.reference`, found with the SPEC's own calls.

        The API has no lookup by reference (see PROTOCOL.md): the daily manifest
        (`GET /manifests?billingNumber=&date=`) lists the shipment numbers of the billing
        number and ship date, the ones somsd holds labels for (`known`) are dropped, the rest
        are reprinted (`GET /orders?shipment=...`, at most 30 a call) and matched on
        `shipmentRefNo`. None only when every listed shipment was read, none carries the
        reference, and the manifest is shown to list open shipments: one listed shipment
        still reprints (DHL reprints only open ones), an unknown one or else one of somsd's
        own. Without that proof the SPEC leaves open whether an open label is listed at all
        (PROTOCOL.md), so "nothing listed" is `LabelLookupInconclusive` (transient). An
        answer that proves nothing (malformed, cut short) is transient too; a listing too
        long to read or a shipment DHL will not reprint any more is permanent (the operator
        looks in DHL's portal). Never "not found" without proof.
        """
        operation = "find label by reference"
        listed = await self._manifest(shipment.billing_number, shipment.ship_date, operation)
        try:
            candidates = manifest_candidates(listed, known)
        except ValueError as exc:
            raise self._unreadable(operation, f"manifest: {exc}") from exc
        if len(candidates) > MAX_LOOKUP_REPRINTS:
            raise PermanentUpstreamError(
                self.system,
                f"{self.system}: {operation}: {len(candidates)} shipments on the "
                f"{shipment.ship_date} manifest of {shipment.billing_number} are unknown to "
                f"somsd, more than the {MAX_LOOKUP_REPRINTS} one lookup reprints; check DHL's "
                f"portal for reference {shipment.reference}",
                operation=operation,
            )
        unreadable: list[str] = []
        lists_open = False
        for chunk in batches(candidates, MAX_SHIPMENTS_PER_CALL):
            verdict = await self._reprint(chunk, shipment.reference, shipment.label_format)
            if verdict.found is not None:
                return self._label(
                    verdict.found, shipment.reference, shipment.label_format, operation
                )
            unreadable.extend(verdict.unreadable)
            lists_open = lists_open or verdict.reprinted
        if unreadable:
            raise PermanentUpstreamError(
                self.system,
                f"{self.system}: {operation}: DHL no longer reprints {len(unreadable)} "
                f"shipment(s) of the {shipment.ship_date} manifest ({', '.join(unreadable[:5])}"
                f"{'...' if len(unreadable) > 5 else ''}), so reference {shipment.reference} "
                "cannot be ruled out; check DHL's portal",
                operation=operation,
            )
        if not lists_open:
            witnesses = [item.shipmentNo for item in listed if item.shipmentNo in known]
            lists_open = await self._still_open(witnesses[:MAX_SHIPMENTS_PER_CALL])
        if not lists_open:
            raise LabelLookupInconclusive(
                self.system,
                f"{self.system}: {operation}: no label under reference {shipment.reference} "
                f"on the {shipment.ship_date} manifest of {shipment.billing_number}, but that "
                "manifest shows no shipment DHL still reprints, so it may list closed "
                "shipments only and an open label would not be on it; a later lookup proves "
                "it once the manifest shows an open shipment; check DHL's portal",
                operation=operation,
            )
        return None

    async def _still_open(self, numbers: Sequence[str | None]) -> bool:
        """Whether DHL still reprints one of `numbers` (somsd's own labels on the manifest):
        then the manifest lists open shipments and a lost open label would be on it."""
        asked = [number for number in numbers if number]
        if not asked:
            return False
        verdict = await self._reprint(asked, reference="", label_format="pdf", docs="URL")
        return verdict.reprinted

    async def _manifest(self, billing_number: str, day: date, operation: str) -> list[ManifestItem]:
        params = {"billingNumber": billing_number, "date": day.isoformat(), "includeDocs": "URL"}
        response = await self._request(
            "GET", f"{self._shipping}/manifests", operation, params=params
        )
        if response.status_code == 404:
            return []  # no manifest for that day: nothing listed under the billing number
        if response.status_code != 200:
            detail = ""
            if response.status_code == 400:
                detail = _problem_detail(response.content)
            raise status_error(response, system=self.system, operation=operation, detail=detail)
        if len(response.content) > MAX_MANIFEST_BYTES:
            raise self._unreadable(operation, f"manifest of {len(response.content)} bytes")
        try:
            answer = _manifest.decode(response.content)
        except msgspec.DecodeError as exc:
            raise self._unreadable(operation, f"manifest: {exc}") from exc
        if answer.manifestDate and answer.manifestDate[:10] != day.isoformat():
            raise self._unreadable(
                operation, f"manifest of {answer.manifestDate}, asked for {day.isoformat()}"
            )
        return list(answer.items)

    async def _reprint(
        self,
        numbers: Sequence[str],
        reference: str,
        label_format: LabelFormat,
        *,
        docs: str = "include",
    ) -> ReprintVerdict:
        operation = "reprint labels"
        params = httpx.QueryParams(
            [
                *(("shipment", number) for number in numbers),
                ("docFormat", "ZPL2" if label_format == "zpl" else "PDF"),
                ("includeDocs", docs),
            ]
        )
        response = await self._request("GET", f"{self._shipping}/orders", operation, params=params)
        if response.status_code not in (200, 207, 400):
            answer = self._decode_labels(response, operation)
            raise self._refusal(response, operation, answer)
        try:
            answer = _labels.decode(response.content)
            return match_reprint(numbers, answer.items, reference)
        except (msgspec.DecodeError, ValueError) as exc:
            raise self._unreadable(operation, str(exc)) from exc

    def _unreadable(self, operation: str, what: str) -> TransientUpstreamError:
        # An answer that proves nothing is no "not found": retry, do not buy.
        return TransientUpstreamError(
            self.system,
            f"{self.system}: {operation}: unreadable answer ({what})",
            operation=operation,
        )

    async def cancel(self, shipment_number: str) -> None:
        operation = "cancel shipment"
        params = {"profile": self._profile, "shipment": shipment_number}
        response = await self._request(
            "DELETE", f"{self._shipping}/orders", operation, params=params
        )
        answer = self._decode_labels(response, operation)
        if response.status_code in (200, 207) and all(
            item.sstatus.status in (None, 200) for item in answer.items
        ):
            return
        if response.status_code in (200, 207, 400):
            messages = tuple(m for item in answer.items for m in item_messages(item))
            raise ShipmentRefused(self.system, messages, operation=operation)
        raise self._refusal(response, operation, answer)

    async def track(self, shipment_number: str) -> TrackingStatus:
        operation = "track shipment"
        response = await self._request(
            "GET",
            f"{self._tracking}/shipments",
            operation,
            params={"trackingNumber": shipment_number},
            tracking=True,
        )
        if response.status_code == 404:
            return TrackingStatus(state="unknown", description="not known to DHL tracking yet")
        if response.status_code != 200:
            raise status_error(response, system=self.system, operation=operation)
        try:
            found = _tracking.decode(response.content)
        except msgspec.DecodeError as exc:
            raise PermanentUpstreamError(
                self.system,
                f"{self.system}: {operation}: not a tracking answer ({exc})",
                operation=operation,
            ) from exc
        for shipment in found.shipments:
            if shipment.id == shipment_number:
                return tracking_status(shipment)
        return TrackingStatus(state="unknown", description="not in DHL's answer")

    async def version(self) -> str:
        """`GET /` (no auth): the API's name and version, for `somsd doctor`."""
        response = await self._request("GET", f"{self._shipping}/", "version", auth=False)
        if response.status_code != 200:
            raise status_error(response, system=self.system, operation="version")
        body = msgspec.json.decode(response.content)
        amp = body.get("amp", {}) if isinstance(body, dict) else {}
        return f"{amp.get('name', '?')} {amp.get('version', '?')}"

    # -- plumbing ---------------------------------------------------------------------------

    async def _post_orders(self, shipment: ShipmentData, *, validate: bool) -> httpx.Response:
        operation = "validate shipment" if validate else "create label"
        try:
            body = _encoder.encode(order_request(shipment, profile=self._profile))
        except UnknownCountry as exc:
            raise ShipmentRefused(self.system, (str(exc),), operation=operation) from exc
        return await self._request(
            "POST",
            f"{self._shipping}/orders",
            operation,
            params=query(shipment, validate=validate),
            content=body,
        )

    async def _request(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        params: Mapping[str, str] | httpx.QueryParams | None = None,
        content: bytes | None = None,
        tracking: bool = False,
        auth: bool = True,
    ) -> httpx.Response:
        for attempt in range(2):
            headers = {"Accept": "application/json"}
            if content is not None:
                headers["Content-Type"] = "application/json"
            if tracking:
                headers["DHL-API-Key"] = self._auth.api_key.reveal()
            elif auth:
                headers.update(await self._auth_headers())
            try:
                response = await self._http.request(
                    method, url, params=params, content=content, headers=headers
                )
            except httpx.HTTPError as exc:
                raise translate_http_error(exc, system=self.system, operation=operation) from exc
            if response.status_code == 401 and self._auth.mode == "oauth" and attempt == 0:
                self._token = None  # revoked or expired early: one fresh token, once
                continue
            return response
        return response

    async def _auth_headers(self) -> dict[str, str]:
        headers = {API_KEY_HEADER: self._auth.api_key.reveal()}
        if self._auth.mode == "oauth":
            headers["Authorization"] = f"Bearer {await self._bearer()}"
        else:
            password = self._auth.password.reveal() if self._auth.password else ""
            pair = f"{self._auth.user}:{password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return headers

    async def _bearer(self) -> str:
        if self._token is not None and time.monotonic() < self._token_expires:
            return self._token
        url = self._auth.token_url or _host_of(self._shipping) + OAUTH_TOKEN_PATH
        form = {
            "grant_type": "password",
            "username": self._auth.user,
            "password": self._auth.password.reveal() if self._auth.password else "",
            "client_id": self._auth.api_key.reveal(),
            "client_secret": self._auth.client_secret.reveal() if self._auth.client_secret else "",
        }
        try:
            response = await self._http.post(url, data=form)
        except httpx.HTTPError as exc:
            raise translate_http_error(exc, system=self.system, operation="get token") from exc
        if response.status_code != 200:
            raise status_error(response, system=self.system, operation="get token")
        token = msgspec.json.decode(response.content, type=_Token)
        self._token = token.access_token
        self._token_expires = time.monotonic() + max(token.expires_in - TOKEN_MARGIN, 1.0)
        return self._token

    def _decode_labels(self, response: httpx.Response, operation: str) -> LabelDataResponse:
        if (
            not response.content
            or response.status_code in (401, 403, 404, 429)
            or (response.status_code >= 500)
        ):
            return LabelDataResponse()
        try:
            return _labels.decode(response.content)
        except msgspec.DecodeError as exc:
            raise PermanentUpstreamError(
                self.system,
                f"{self.system}: {operation}: {response.status_code} with a body that is not "
                f"DHL's label answer ({exc})",
                operation=operation,
            ) from exc

    def _label(
        self, item: ResponseItem, reference: str, label_format: LabelFormat, operation: str
    ) -> Label:
        try:
            return item_label(item, reference, label_format)
        except ValueError as exc:
            raise PermanentUpstreamError(
                self.system, f"{self.system}: {operation}: {exc}", operation=operation
            ) from exc

    def _refusal(
        self, response: httpx.Response, operation: str, answer: LabelDataResponse
    ) -> UpstreamError:
        detail = answer.status.detail or answer.status.title or ""
        return status_error(response, system=self.system, operation=operation, detail=detail)


def _errors_of(item: ResponseItem) -> tuple[str, ...]:
    if item.sstatus.status in (None, 200):
        return ()
    return item_messages(item)


def _problem_detail(content: bytes) -> str:
    try:
        status = _problem.decode(content)
    except msgspec.DecodeError:
        return ""
    return status.detail or status.title


def _host_of(url: str) -> str:
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"
