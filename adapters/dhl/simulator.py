"""`DhlSimulator`: DHL Parcel DE Shipping v2 and unified tracking on loopback, with fault knobs.

Serve `sim` (an ASGI app) with `somsd.http.serve_asgi`. Paths as DHL has them, all on one host:
shipping under `/parcel/de/shipping/v2` (`SHIPPING_PREFIX`), the OAuth token at
`/parcel/de/account/auth/ropc/v1/token`, tracking at `/track/shipments`.

Server rules (reference `shared/reference/dhl-parcel-de.md`):
- `GET /` without auth: the version document;
- every other shipping call needs the API key in `dhl-api-key` and either HTTP Basic with the
  GKP user or a Bearer token from the ROPC token endpoint (401 `application/problem+json`);
- `POST /orders`: at most 30 shipments; each is checked (product known, billing number
  `\\w{10}\\d{2}\\w{2}` with the product's procedure digits, shipDate not in the past, weight
  1..31500 g, consignee name, a street with a house number, a DEU postcode of 5 digits, a city,
  and `knobs.undeliverable` postcodes DHL does not serve). `validate=true` stores nothing and
  answers per item; otherwise each valid shipment gets a shipment number and a label, PDF
  (reportlab, base64 in `b64`) or ZPL2 (text in `zpl2`) per `docFormat`. One shipment: 200 or
  400; several: 207 when they differ; all refused: 400;
- `GET /orders?shipment=...` reprints 1..30 shipments (400 otherwise), per item 400 for an
  unknown, deleted or closed one (SPEC: "Only documents and label for shipments that are not
  yet closed can be retrieved"); `DELETE /orders?shipment=...` cancels (per-item 400 for
  unknown, already deleted or closed);
- `GET /manifests?billingNumber=&date=YYYY-MM-DD` the daily manifest: `items` maps each
  shipment of that ship date (and billing number, if given) to its sheet; 400 for a date that
  is malformed, in the future or older than `knobs.manifest_days`. Open shipments are listed
  too (without `sheetNo`) unless `knobs.manifest_lists_open` is off: the SPEC does not say
  whether DHL lists them, see `adapters/dhl/PROTOCOL.md`;
- `POST /manifests[?all=true]` closes shipments (body `{profile, shipmentNumbers |
  billingNumber}`), 207 with a status per shipment; `close_out()` does the same for tests;
- `GET /track/shipments?trackingNumber=` with `DHL-API-Key`: `pre-transit` at creation,
  `transit` after `knobs.transit_after` seconds, `delivered` after `knobs.deliver_after` (or
  `failure` for numbers in `knobs.failing`), all on the simulator's own clock (`advance()`
  moves it for tests).

Faults (`DhlKnobs`, mutable while serving): `latency`, `fail_next` (statuses for the next
calls, 429 with `Retry-After: 1`), `lose_next` / `lost_response_rate` (a `POST /orders` buys
the label, then the connection is dropped before the answer), `garble_manifest_next` (the next
`GET /manifests` answers 200 with a body that is not a manifest).

Run standalone: `python -m adapters.dhl --port 0 --url-file FILE --credentials-dir DIR`
writes the API key and password files (0600) and the bound base URL.
"""

from __future__ import annotations

import argparse
import base64
import random
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs

import msgspec
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from adapters.dhl.wire import (
    API_KEY_HEADER,
    BillingNoToSheetNo,
    Document,
    LabelDataResponse,
    ManifestItem,
    ManifestRequest,
    MultipleManifestResponse,
    RequestStatus,
    ResponseItem,
    Shipment,
    ShipmentOrderRequest,
    ShortResponseItem,
    SingleManifestResponse,
    TrackingEvent,
    TrackingLocation,
    TrackingResponse,
    TrackingShipment,
    ValidationMessage,
)
from adapters.faults import DroppedResponse, start_simulator
from adapters.labels import parcel_label_pdf, parcel_label_zpl

__all__ = ["SHIPPING_PREFIX", "DhlKnobs", "DhlSimulator", "SimulatedShipment", "main"]

SHIPPING_PREFIX: Final = "/parcel/de/shipping/v2"
TOKEN_PATH: Final = "/parcel/de/account/auth/ropc/v1/token"  # noqa: S105  # a path
PRODUCTS: Final = {"V01PAK": "01", "V53WPAK": "53", "V54EPAK": "54", "V62KP": "62", "V62WP": "62"}
_BILLING = re.compile(r"^\w{10}(\d{2})\w{2}$")
_HOUSE_NUMBER = re.compile(r"\d")
_ENCODER = msgspec.json.Encoder()
_ORDER_DECODER = msgspec.json.Decoder(ShipmentOrderRequest)
_MANIFEST_DECODER = msgspec.json.Decoder(ManifestRequest)
MAX_PER_CALL: Final = 30


@dataclass
class DhlKnobs:
    latency: float = 0.0
    fail_next: list[int] = field(default_factory=list)
    lose_next: int = 0
    lost_response_rate: float = 0.0
    transit_after: float = 1.0
    deliver_after: float = 3.0
    failing: set[str] = field(default_factory=set)  # shipment numbers whose delivery fails
    undeliverable: set[str] = field(default_factory=set)  # postcodes DHL refuses
    manifest_days: int = 30  # GET /manifests: older dates are "too old" (400)
    manifest_lists_open: bool = True  # the daily manifest lists shipments not yet closed
    garble_manifest_next: int = 0


@dataclass
class SimulatedShipment:
    number: str
    reference: str | None
    billing_number: str
    product: str
    created_at: float  # simulator clock
    label_pdf: bytes | None
    label_zpl: str | None
    consignee: str
    routing_code: str
    ship_date: date = field(default_factory=lambda: datetime.now(UTC).date())
    deleted: bool = False
    closed: bool = False  # manifested: immutable, no reprint, no cancel
    render_pdf: Callable[[], bytes] | None = None  # the PDF, drawn when first asked for


class DhlSimulator:
    """The ASGI app plus its state; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str = "sim-dhl-api-key",
        user: str = "user-valid",
        password: str = "SandboxPasswort2023!",  # noqa: S107  # DHL's published sandbox password
        knobs: DhlKnobs | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
    ) -> None:
        self.api_key = api_key
        self.user = user
        self.password = password
        self.knobs = knobs or DhlKnobs()
        self._clock = clock
        self._offset = 0.0
        self._rng = random.Random(seed)
        self._tokens: set[str] = set()
        self.shipments: dict[str, SimulatedShipment] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every call
        self.created = 0  # labels bought, ever
        self._next = 1
        self.app = Starlette(
            routes=[
                Route(f"{SHIPPING_PREFIX}/", self.version, methods=["GET"]),
                Route(f"{SHIPPING_PREFIX}/orders", self.orders, methods=["POST", "GET", "DELETE"]),
                Route(f"{SHIPPING_PREFIX}/manifests", self.manifests, methods=["GET", "POST"]),
                Route(TOKEN_PATH, self.token, methods=["POST"]),
                Route("/track/shipments", self.track, methods=["GET"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # -- the clock ----------------------------------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward (tracking events follow it)."""
        self._offset += seconds

    @property
    def live_shipments(self) -> list[SimulatedShipment]:
        return [s for s in self.shipments.values() if not s.deleted]

    # -- helpers ------------------------------------------------------------------------

    def _problem(self, status: int, title: str, detail: str = "") -> Response:
        body = {"title": title, "status": status, "statusCode": status, "detail": detail}
        return Response(_ENCODER.encode(body), status, media_type="application/problem+json")

    def _answer(self, status: int, answer: LabelDataResponse) -> Response:
        media = "application/problem+json" if status >= 400 else "application/json"
        return Response(_ENCODER.encode(answer), status, media_type=media)

    def _authorized(self, request: Request) -> bool:
        if request.headers.get(API_KEY_HEADER) != self.api_key:
            return False
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value in self._tokens
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return False
            return secrets.compare_digest(user, self.user) and secrets.compare_digest(
                password, self.password
            )
        return False

    async def _admit(self, request: Request, path: str) -> Response | None:
        """Record the request; the answer when it is refused (credentials) or faulted."""
        self.requests.append((request.method, path))
        if not self._authorized(request):
            return self._problem(401, "Unauthorized", "api key or credentials wrong")
        return await self._faults()

    async def _faults(self) -> Response | None:
        if self.knobs.latency:
            await trio.sleep(self.knobs.latency)
        if self.knobs.fail_next:
            status = self.knobs.fail_next.pop(0)
            response = self._problem(status, "Too Many Requests" if status == 429 else "Error")
            if status == 429:
                response.headers["Retry-After"] = "1"
            return response
        return None

    # -- routes -------------------------------------------------------------------------

    async def version(self, request: Request) -> Response:
        self.requests.append(("GET", "/"))
        body = {
            "amp": {"name": "pp-parcel-shipping-sim", "env": "sandbox", "version": "v2.1.13"},
            "backend": {"env": "sim", "version": "somsd"},
        }
        return Response(_ENCODER.encode(body), media_type="application/json")

    async def token(self, request: Request) -> Response:
        # A urlencoded form, parsed here: Starlette's form parser needs python-multipart.
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if (
            form.get("grant_type") != "password"
            or form.get("username") != self.user
            or form.get("password") != self.password
            or form.get("client_id") != self.api_key
        ):
            return self._problem(401, "Unauthorized", "invalid credentials")
        token = secrets.token_urlsafe(24)
        self._tokens.add(token)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": 1799}
        return Response(_ENCODER.encode(body), media_type="application/json")

    async def orders(self, request: Request) -> Response:
        refused = await self._admit(request, "/orders")
        if refused is not None:
            return refused
        if request.method == "POST":
            return await self._create(request)
        if request.method == "GET":
            return await self._reprint(request)
        return self._delete(request)

    async def _create(self, request: Request) -> Response:
        try:
            order = _ORDER_DECODER.decode(await request.body())
        except msgspec.DecodeError as exc:
            return self._problem(400, "Bad Request", f"JSON schema: {exc}")
        if not 1 <= len(order.shipments) <= 30:
            return self._problem(400, "Bad Request", "1 to 30 shipments per request")
        params = request.query_params
        validate = params.get("validate") == "true"
        zpl = params.get("docFormat") == "ZPL2"
        print_format = params.get("printFormat")
        items: list[ResponseItem] = []
        for shipment in order.shipments:
            messages = self._check(shipment)
            if messages:
                items.append(
                    ResponseItem(
                        sstatus=RequestStatus(title="Bad Request", statusCode=400, status=400),
                        shipmentRefNo=shipment.refNo,
                        validationMessages=tuple(messages),
                    )
                )
            elif validate:
                items.append(
                    ResponseItem(
                        sstatus=RequestStatus(title="OK", statusCode=200, status=200),
                        shipmentRefNo=shipment.refNo,
                    )
                )
            else:
                created = await self._buy(shipment, pdf=not zpl)
                items.append(self._item(created, zpl=zpl, print_format=print_format))
        failed = sum(1 for item in items if item.sstatus.status != 200)
        if failed == len(items):
            status = 400
        elif failed:
            status = 207
        else:
            status = 200
        title = {200: "OK", 207: "Multi-status", 400: "Bad Request"}[status]
        answer = LabelDataResponse(
            status=RequestStatus(title=title, statusCode=status, status=status), items=tuple(items)
        )
        if not validate and status != 400:
            if self.knobs.lose_next > 0:
                self.knobs.lose_next -= 1
                return DroppedResponse()
            if self.knobs.lost_response_rate and self._rng.random() < self.knobs.lost_response_rate:
                return DroppedResponse()
        return self._answer(status, answer)

    def _check(self, shipment: Shipment) -> list[ValidationMessage]:
        problems: list[tuple[str, str]] = []
        procedure = PRODUCTS.get(shipment.product)
        if procedure is None:
            problems.append(("product", f"Unknown product {shipment.product}."))
        billing = _BILLING.match(shipment.billingNumber)
        if billing is None or (procedure is not None and billing[1] != procedure):
            problems.append(
                ("billingNumber", "The billing number does not fit the product or is invalid.")
            )
        if shipment.shipDate is not None:
            try:
                when = date.fromisoformat(shipment.shipDate)
            except ValueError:
                problems.append(("shipDate", "Expected format yyyy-mm-dd."))
            else:
                if when < datetime.now(UTC).date() - timedelta(days=1):
                    problems.append(("shipDate", "The shipping date must not be in the past."))
        weight = shipment.details.weight
        grams = weight.value * (1000 if weight.uom == "kg" else 1)
        if not 0 < grams <= 31500:
            problems.append(("details.weight", "The weight must be between 0 and 31.5 kg."))
        consignee = shipment.consignee
        if not consignee.name1.strip():
            problems.append(("consignee.name1", "Please enter a name."))
        if not _HOUSE_NUMBER.search(consignee.addressStreet):
            problems.append(
                ("consignee.addressStreet", "Please enter a house number for the street.")
            )
        postcode = (consignee.postalCode or "").strip()
        if consignee.country == "DEU" and not re.fullmatch(r"\d{5}", postcode):
            problems.append(("consignee.postalCode", "The postcode is not a German postcode."))
        elif postcode in self.knobs.undeliverable:
            problems.append(
                (
                    "consignee.postalCode",
                    f"The address could not be found: no delivery to postcode {postcode}.",
                )
            )
        if not consignee.city.strip():
            problems.append(("consignee.city", "Please enter a city."))
        return [
            ValidationMessage(property=prop, validationMessage=text, validationState="Error")
            for prop, text in problems
        ]

    async def _buy(self, shipment: Shipment, *, pdf: bool) -> SimulatedShipment:
        number = f"00340434{self._next:012d}"
        self._next += 1
        consignee = shipment.consignee
        receiver = [
            consignee.name1,
            *([consignee.name2] if consignee.name2 else []),
            consignee.addressStreet,
            f"{consignee.postalCode or ''} {consignee.city}".strip(),
            consignee.country,
        ]
        shipper = shipment.shipper
        sender = [
            shipper.name1,
            shipper.addressStreet,
            f"{shipper.postalCode or ''} {shipper.city}",
        ]
        routing = f"{(consignee.postalCode or '0').rjust(5, '0')}.{number[-3:]}.{number[-6:-3]}"
        grams = int(
            shipment.details.weight.value * (1000 if shipment.details.weight.uom == "kg" else 1)
        )
        zpl = parcel_label_zpl(
            carrier="DHL Paket",
            tracking_number=number,
            sender=sender,
            receiver=receiver,
            reference=shipment.refNo or "",
            weight_grams=grams,
            routing_code=routing,
        )
        render = partial(
            parcel_label_pdf,
            carrier="DHL Paket",
            tracking_number=number,
            sender=sender,
            receiver=receiver,
            reference=shipment.refNo or "",
            weight_grams=grams,
        )
        created = SimulatedShipment(
            number=number,
            reference=shipment.refNo,
            billing_number=shipment.billingNumber,
            product=shipment.product,
            created_at=self.now(),
            label_pdf=None,
            label_zpl=zpl,
            consignee=consignee.name1,
            routing_code=routing,
            ship_date=_ship_date(shipment.shipDate),
            render_pdf=render,
        )
        if pdf:
            await self._ensure_pdf(created)
        self.shipments[number] = created
        self.created += 1
        return created

    async def _ensure_pdf(self, shipment: SimulatedShipment) -> None:
        if shipment.label_pdf is None and shipment.render_pdf is not None:
            shipment.label_pdf = await trio.to_thread.run_sync(shipment.render_pdf)

    def _item(
        self, shipment: SimulatedShipment, *, zpl: bool, print_format: str | None
    ) -> ResponseItem:
        if zpl:
            document = Document(
                zpl2=shipment.label_zpl, fileFormat="ZPL2", printFormat=print_format
            )
        else:
            assert shipment.label_pdf is not None
            document = Document(
                b64=base64.b64encode(shipment.label_pdf).decode(),
                fileFormat="PDF",
                printFormat=print_format or "A4",
            )
        return ResponseItem(
            sstatus=RequestStatus(title="OK", statusCode=200, status=200),
            shipmentNo=shipment.number,
            routingCode=shipment.routing_code,
            shipmentRefNo=shipment.reference,
            label=document,
        )

    async def _reprint(self, request: Request) -> Response:
        params = request.query_params
        zpl = params.get("docFormat") == "ZPL2"
        numbers = params.getlist("shipment")
        if not 1 <= len(numbers) <= MAX_PER_CALL:
            return self._problem(400, "Bad Request", "shipment: 1 to 30 shipment numbers")
        items = []
        for number in numbers:
            found = self.shipments.get(number)
            if found is None or found.deleted or found.closed:
                why = "Shipment is closed." if found and found.closed else "Unknown shipment."
                items.append(_item_error(number, why))
            else:
                if not zpl:
                    await self._ensure_pdf(found)
                items.append(self._item(found, zpl=zpl, print_format=params.get("printFormat")))
        failed = sum(1 for item in items if item.sstatus.status != 200)
        status = 400 if failed == len(items) else 207 if failed else 200
        return self._answer(
            status,
            LabelDataResponse(
                status=RequestStatus(title="", statusCode=status), items=tuple(items)
            ),
        )

    def _delete(self, request: Request) -> Response:
        items = []
        for number in request.query_params.getlist("shipment"):
            found = self.shipments.get(number)
            if found is None or found.deleted or found.closed:
                why = (
                    "Shipment is closed and can no longer be deleted."
                    if found and found.closed
                    else "Unknown or already deleted shipment."
                )
                items.append(_item_error(number, why))
            else:
                found.deleted = True
                items.append(
                    ResponseItem(
                        sstatus=RequestStatus(title="OK", statusCode=200, status=200),
                        shipmentNo=number,
                    )
                )
        failed = sum(1 for item in items if item.sstatus.status != 200)
        status = 400 if items and failed == len(items) else 207 if failed else 200
        return self._answer(
            status,
            LabelDataResponse(
                status=RequestStatus(title="", statusCode=status), items=tuple(items)
            ),
        )

    # -- manifests ----------------------------------------------------------------------

    def close_out(self, billing_number: str | None = None) -> list[str]:
        """DHL's end of day ("Tagesabschluss"): close every open shipment (of one billing
        number); returns the numbers closed."""
        closed = []
        for shipment in self.live_shipments:
            if not shipment.closed and billing_number in (None, shipment.billing_number):
                shipment.closed = True
                closed.append(shipment.number)
        return closed

    async def manifests(self, request: Request) -> Response:
        refused = await self._admit(request, "/manifests")
        if refused is not None:
            return refused
        if request.method == "POST":
            return await self._close(request)
        params = request.query_params
        today = datetime.now(UTC).date()
        try:
            day = date.fromisoformat(params["date"]) if "date" in params else today
        except ValueError:
            return self._problem(400, "Bad Request", "date: expected YYYY-MM-DD")
        if day > today or day < today - timedelta(days=self.knobs.manifest_days):
            return self._problem(400, "Bad Request", "date: too old or in the future")
        if self.knobs.garble_manifest_next > 0:
            self.knobs.garble_manifest_next -= 1
            return Response(b'{"items": [{"sheetNo": 1}', media_type="application/json")
        billing = params.get("billingNumber")
        listed = [
            s
            for s in self.live_shipments
            if s.ship_date == day
            and billing in (None, s.billing_number)
            and (s.closed or self.knobs.manifest_lists_open)
        ]
        sheets = {s.billing_number: str(i + 1) for i, s in enumerate(_first_per_billing(listed))}
        ok = RequestStatus(title="OK", statusCode=200, status=200)
        if params.get("includeDocs") == "URL":
            document = Document(url=f"{SHIPPING_PREFIX}/labels?token=manifest-{day}")
        else:
            document = Document(b64=base64.b64encode(b"%PDF-1.4\n%manifest\n").decode())
        body = SingleManifestResponse(
            status=ok,
            manifestDate=day.isoformat(),
            manifest=(document,),
            sheetNo=tuple(
                BillingNoToSheetNo(billingNumber=number, sheetNo=sheet)
                for number, sheet in sheets.items()
            ),
            items=tuple(
                ManifestItem(
                    shipmentNo=s.number,
                    sheetNo=sheets[s.billing_number] if s.closed else None,
                    sstatus=ok,
                )
                for s in listed
            ),
        )
        return Response(_ENCODER.encode(body), media_type="application/json")

    async def _close(self, request: Request) -> Response:
        try:
            order = _MANIFEST_DECODER.decode(await request.body())
        except msgspec.DecodeError as exc:
            return self._problem(400, "Bad Request", f"JSON schema: {exc}")
        if len(order.shipmentNumbers) > MAX_PER_CALL:
            return self._problem(400, "Bad Request", "shipmentNumbers: at most 30")
        if request.query_params.get("all") == "true":
            chosen = [s.number for s in self.live_shipments]
        elif order.shipmentNumbers:
            chosen = list(order.shipmentNumbers)
        elif order.billingNumber:
            chosen = [
                s.number for s in self.live_shipments if s.billing_number == order.billingNumber
            ]
        else:
            return self._problem(400, "Bad Request", "shipmentNumbers, billingNumber or all")
        items = []
        for number in chosen:
            found = self.shipments.get(number)
            if found is None or found.deleted:
                status = RequestStatus(title="Bad Request", statusCode=400, status=400)
            elif found.closed:
                status = RequestStatus(
                    title="Warning", statusCode=200, status=200, detail="already closed"
                )
            else:
                found.closed = True
                status = RequestStatus(title="OK", statusCode=200, status=200)
            items.append(ShortResponseItem(shipmentNo=number, sstatus=status))
        body = MultipleManifestResponse(
            status=RequestStatus(title="Multi-status", statusCode=207, status=207),
            items=tuple(items),
        )
        return Response(_ENCODER.encode(body), 207, media_type="application/json")

    async def track(self, request: Request) -> Response:
        self.requests.append(("GET", "/track/shipments"))
        if request.headers.get("dhl-api-key") != self.api_key:
            return self._problem(401, "Unauthorized", "DHL-API-Key missing or wrong")
        fault = await self._faults()
        if fault is not None:
            return fault
        number = request.query_params.get("trackingNumber", "")
        found = self.shipments.get(number)
        if found is None or found.deleted:
            return self._problem(404, "No result found", f"no shipment {number}")
        events = self._events(found)
        body = TrackingResponse(
            shipments=(
                TrackingShipment(
                    id=number,
                    service="parcel-de",
                    status=events[-1],
                    events=tuple(reversed(events)),
                ),
            )
        )
        return Response(_ENCODER.encode(body), media_type="application/json")

    def _events(self, shipment: SimulatedShipment) -> list[TrackingEvent]:
        age = self.now() - shipment.created_at
        wall = datetime.now(UTC)

        def event(code: str, text: str, place: str) -> TrackingEvent:
            return TrackingEvent(
                timestamp=wall.isoformat(),
                statusCode=code,
                status=code,
                description=text,
                location=TrackingLocation(address={"addressLocality": place}),
            )

        events = [event("pre-transit", "The shipment data has been transmitted.", "Bonn")]
        if age >= self.knobs.transit_after:
            events.append(event("transit", "The shipment is being transported.", "Hub Köln"))
        if age >= self.knobs.deliver_after:
            if shipment.number in self.knobs.failing:
                events.append(
                    event("failure", "The recipient could not be found; returned to sender.", "")
                )
            else:
                events.append(event("delivered", "The shipment has been delivered.", ""))
        return events


def _item_error(number: str, message: str) -> ResponseItem:
    return ResponseItem(
        sstatus=RequestStatus(title="Bad Request", statusCode=400, status=400),
        shipmentNo=number,
        validationMessages=(
            ValidationMessage(
                property="shipment", validationMessage=message, validationState="Error"
            ),
        ),
    )


def _ship_date(text: str | None) -> date:
    try:
        return date.fromisoformat(text) if text else datetime.now(UTC).date()
    except ValueError:  # refused by _check before a label is bought
        return datetime.now(UTC).date()


def _first_per_billing(shipments: Sequence[SimulatedShipment]) -> list[SimulatedShipment]:
    seen: dict[str, SimulatedShipment] = {}
    for shipment in shipments:
        seen.setdefault(shipment.billing_number, shipment)
    return list(seen.values())


def write_credentials(directory: Path, sim: DhlSimulator) -> tuple[Path, Path]:
    """`dhl_api_key` and `dhl_password` files (0600) for a config to point at."""
    directory.mkdir(parents=True, exist_ok=True)
    key, password = directory / "dhl_api_key", directory / "dhl_password"
    for path, value in ((key, sim.api_key), (password, sim.password)):
        path.touch(mode=0o600)
        path.write_text(value + "\n")
    return key, password


async def _main(args: argparse.Namespace) -> None:

    sim = DhlSimulator(
        knobs=DhlKnobs(
            latency=args.latency,
            lost_response_rate=args.lost_response_rate,
            transit_after=args.transit_after,
            deliver_after=args.deliver_after,
        ),
        seed=args.seed,
    )
    if args.credentials_dir:
        write_credentials(Path(args.credentials_dir), sim)
    async with trio.open_nursery() as nursery:
        url = await start_simulator(
            nursery, sim, port=args.port, name="dhl-sim", url_file=args.url_file
        )
        print(f"serving {url}{SHIPPING_PREFIX}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DHL Parcel DE v2 + tracking simulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--lost-response-rate", type=float, default=0.0)
    parser.add_argument("--transit-after", type=float, default=5.0)
    parser.add_argument("--deliver-after", type=float, default=20.0)
    parser.add_argument("--credentials-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url-file", default=None, help="write the bound base url here")
    trio.run(_main, parser.parse_args(argv))


if __name__ == "__main__":
    main()
