"""`CarrierActor`: one per `[[carrier]]`, buying labels, printing them and tracking parcels.

Everything it does to the carrier goes through the outbox (target `carrier/<name>`), planned
by the two pure planners below in the same transaction as the change that causes it:

- **Address check at intake** (`carrier_order_effects`): a received order that is shipped, and
  every corrected shipping address, is validated with DHL's dry run (`validate=true`) using
  the sender and billing number of the first location shipping with this carrier. Refused ->
  the order goes on hold (`address_incomplete`, DHL's message), before anyone packs; the
  operator's address correction (`POST /v1/orders/{id}/address`) releases such a hold and is
  itself validated again.
- **Label on pack** (`carrier_fulfilment_effects`): a ship or transfer fulfilment packed at a
  `manual` location that names carriers buys its label (`POST /v1/fulfillments/{id}/pack`).
  Once the label is stored the fulfilment ships with the tracking number, and a location with
  `label_printer` gets a `print_label` item: the ZPL goes raw over TCP to the printer.
- **Tracking**: every shipped fulfilment of this carrier is tracked every `tracking_interval`,
  each one backing off while nothing changes: delivered -> the fulfilment is delivered (and the
  order completes when paid, by the fulfilment desk's own rules); failure -> the order is held
  with the carrier's words, once per shipment.

**Never two labels for one parcel.** DHL has no idempotency key, so before every purchase the
attempt is appended (`label_attempted`, stream `label-<fulfilment_id>`, with the reference the
label is bought under: the fulfilment id, sent as DHL's `refNo`). A delivery that finds an
attempt without an outcome - the answer was lost, timed out, or somsd died waiting - first asks
the carrier for a label under that reference (`find_by_reference`: for DHL the daily manifest
of the billing number, minus the shipments somsd knows, reprinted and matched on
`shipmentRefNo`, on each day an attempt was made; see adapters/dhl/PROTOCOL.md) and buys
again only when there is none. The label bytes are stored in the event store's database with
the `label_stored` event that references them by SHA-256 (a blob, one transaction), so every
daemon sharing a PostgreSQL store serves them at `GET /v1/fulfillments/{id}/label` and they
outlive the daemon that bought them. Labels stored before that (a `file` under the data dir)
are still read from there.

Printing is at least once: a raw printer confirms nothing, so a crash between sending and
recording prints the label again (a duplicate sticker, never a second purchase).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from functools import partial
from itertools import takewhile
from pathlib import Path
from typing import Final, Literal, Protocol

import httpx
import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import Response

from actors.blobs import stored_bytes
from actors.effects import FulfilmentEffects, OrderEffects
from actors.integration import Describe, IntegrationStatus
from actors.order_desk import HoldOrder, OrderCommand, OrderDesk
from actors.outbox import OutboxDispatcher
from adapters.carrier import (
    CarrierAdapter,
    Label,
    LabelFormat,
    LabelLookupInconclusive,
    Party,
    ShipmentData,
    ShipmentRefused,
    TrackingStatus,
    parcel_weight_grams,
)
from adapters.dhl import DhlAuth, DhlClient
from adapters.errors import PermanentUpstreamError, TransientUpstreamError, UpstreamError
from adapters.labels import PrinterAddress, pickup_slip_pdf, send_raw
from adapters.ownfleet import OwnFleetCarrier
from somsd.actor import Actor, ReplyError
from somsd.api import ApiError, ApiRoute, body_decoder, decode_body, json_response
from somsd.config import CarrierConfig, LocationConfig
from somsd.domain.errors import DomainError
from somsd.domain.events import AddressCorrected, OrderEvent, OrderReceived
from somsd.domain.holds import HoldReason
from somsd.domain.order import Address, Order
from somsd.domain.state import OrderState
from somsd.domain.status import ON_HOLD
from somsd.projections.fulfilments import (
    FulfilmentEvent,
    FulfilmentProgressed,
    FulfilmentState,
    fetch_fulfilment,
    list_fulfilments,
)
from somsd.projections.orders import decode_state, fetch_state
from somsd.store import (
    MAX_BLOB_BYTES,
    EventStore,
    NewEvent,
    OutboxEntry,
    OutboxItem,
    StoredEvent,
    VersionConflict,
    blob_key,
)

__all__ = [
    "DHL_PRODUCTION",
    "BuyLabel",
    "CarrierActor",
    "CarrierMetrics",
    "CarrierRoutes",
    "LabelAttempted",
    "LabelStored",
    "PrintLabel",
    "ValidateAddress",
    "carrier_fulfilment_effects",
    "carrier_order_effects",
    "carrier_target",
    "check_carrier",
    "dhl_client",
    "label_stream",
    "shipment_data",
]

log = structlog.get_logger("actors.carrier")

DHL_PRODUCTION: Final = "https://api-eu.dhl.com/parcel/de/shipping/v2"
DHL_TRACKING: Final = "https://api-eu.dhl.com/track"
# A label purchase answers in well under a second; 30 s of read budget covers a slow DHL day.
# Beyond it the attempt counts as unknown and is reconciled before any retry.
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=10.0)
# A shipment whose status did not change is asked again after twice the wait, up to this many
# intervals: a parcel sitting in a depot over the weekend costs a few requests, not hundreds.
MAX_TRACKING_BACKOFF: Final = 8
# Deliveries to one carrier at once. Each label costs a few fsyncs on our side (the attempt, the
# stored event with the label's bytes, the ship step) around one DHL call; with 4 at once (the
# dispatcher's default) those waits, not DHL, bound the rate. 16 lets group commit batch them;
# a 429 from DHL still backs off every delivery (bench/shipping.py has the figures).
LABEL_CONCURRENCY: Final = 16
# Shipped fulfilments read per page, and pages per round: 100,000 parcels in transit at once is
# far beyond one daemon's day; parcels beyond it are tracked once earlier ones are delivered.
TRACKING_BATCH: Final = 1000
MAX_TRACKING_PAGES: Final = 100
LABEL_MEDIA: Final[dict[str, str]] = {"pdf": "application/pdf", "zpl": "application/zpl"}
LABEL_SUFFIX: Final[dict[str, str]] = {"pdf": "pdf", "zpl": "zpl"}


def carrier_target(carrier: str) -> str:
    return f"carrier/{carrier}"


def label_stream(fulfilment_id: str) -> str:
    return f"label-{fulfilment_id}"


# -- outbox payloads (target carrier/<name>) -------------------------------------------------


class ValidateAddress(msgspec.Struct, frozen=True, kw_only=True, tag="validate_address"):
    order_id: str
    location: str  # whose sender and billing number the dry run uses
    address: Address


class BuyLabel(msgspec.Struct, frozen=True, kw_only=True, tag="buy_label"):
    fulfilment_id: str


class PrintLabel(msgspec.Struct, frozen=True, kw_only=True, tag="print_label"):
    fulfilment_id: str
    printer: str


CarrierWork = ValidateAddress | BuyLabel | PrintLabel
_work_decoder = msgspec.json.Decoder(CarrierWork)
_encoder = msgspec.json.Encoder()


# -- events (stream label-<fulfilment_id>) ----------------------------------------------------


class LabelAttempted(msgspec.Struct, frozen=True, kw_only=True, tag="label_attempted"):
    at: datetime
    carrier: str
    reference: str
    attempt: int


class LabelStored(msgspec.Struct, frozen=True, kw_only=True, tag="label_stored"):
    at: datetime
    carrier: str
    reference: str
    shipment_number: str
    label_format: LabelFormat
    # "": the bytes are the event store's blob `sha256`. Labels stored by an older somsd name
    # their file, relative to the data dir.
    file: str
    sha256: str
    routing_code: str | None = None
    reconciled: bool = False  # found by reference after a lost answer, not bought now


class LabelRefused(msgspec.Struct, frozen=True, kw_only=True, tag="label_refused"):
    at: datetime
    carrier: str
    messages: tuple[str, ...]


class LabelRuledOut(msgspec.Struct, frozen=True, kw_only=True, tag="label_ruled_out"):
    """An operator checked the carrier's portal: the open attempts bought no label. The next
    purchase goes ahead without a lookup (the lookup could not prove it; see
    `LabelLookupInconclusive`)."""

    at: datetime
    carrier: str
    reason: str


class TrackingFailed(msgspec.Struct, frozen=True, kw_only=True, tag="tracking_failed"):
    at: datetime
    carrier: str
    shipment_number: str
    description: str


class LabelCanceled(msgspec.Struct, frozen=True, kw_only=True, tag="label_canceled"):
    at: datetime
    carrier: str
    shipment_number: str


LabelEvent = (
    LabelAttempted | LabelStored | LabelRefused | LabelRuledOut | TrackingFailed | LabelCanceled
)
_label_event_decoder = msgspec.json.Decoder(LabelEvent)


def _event(value: LabelEvent) -> NewEvent:
    return NewEvent(type(value).__name__, _encoder.encode(value))


def _decode_events(stored: Sequence[StoredEvent]) -> list[LabelEvent]:
    return [_label_event_decoder.decode(event.payload) for event in stored]


# -- pure: which location and carrier, and the shipment data ------------------------------------


def _party(address: Address, *, email: str | None = None) -> Party:
    return Party(
        name=address.name,
        company=address.company,
        street=address.street,
        zip=address.zip,
        city=address.city,
        country=address.country,
        email=email,
    )


def _sender(location: LocationConfig) -> Party:
    sender = location.sender
    if sender is None:
        raise ValueError(f"location {location.name!r} has carriers but no sender")
    return Party(
        name=sender.name,
        company=sender.company,
        street=sender.street,
        zip=sender.zip,
        city=sender.city,
        country=sender.country,
        email=sender.email,
    )


def shipment_data(
    location: LocationConfig,
    *,
    reference: str,
    consignee: Party,
    lines: Sequence[tuple[str, int]],
    ship_date: date,
    billed: bool = True,
) -> ShipmentData:
    """The label request for a parcel from `location` (pure). Raises ValueError when the
    location lacks the billing number for the product the destination needs."""
    sender = _sender(location)
    product = (
        location.product if consignee.country == sender.country else location.international_product
    )
    billing = location.billing_numbers.get(product, "" if not billed else None)
    if billing is None:
        raise ValueError(
            f"location {location.name!r} has no billing number for product {product} "
            f"(parcels to {consignee.country}); add it to billing_numbers"
        )
    return ShipmentData(
        reference=reference,
        product=product,
        billing_number=billing,
        shipper=sender,
        consignee=consignee,
        weight_grams=parcel_weight_grams(
            lines, location.item_weights_grams, location.parcel_weight_grams
        ),
        ship_date=ship_date,
        label_format=location.label_format,
        print_format=location.print_format,
    )


def _validating_location(
    carriers: Mapping[str, CarrierConfig], locations: Sequence[LocationConfig], country: str
) -> tuple[str, LocationConfig] | None:
    """The (carrier, location) whose dry run checks an address to `country`."""
    for location in locations:
        if location.ships_to and country not in location.ships_to:
            continue
        for name in location.carriers:
            carrier = carriers.get(name)
            if carrier is not None and carrier.validate_addresses and carrier.kind != "own-fleet":
                return name, location
    return None


def carrier_order_effects(
    carriers: Callable[[], Sequence[CarrierConfig]],
    locations: Callable[[], Sequence[LocationConfig]],
) -> OrderEffects:
    """The order desk's planner: a validation item per new shipped order and corrected address."""

    def plan(
        channel: str, before: OrderState | None, events: Sequence[OrderEvent]
    ) -> list[OutboxItem]:
        configured = {carrier.name: carrier for carrier in carriers()}
        if not configured:
            return []
        items: list[OutboxItem] = []
        version = before.version if before is not None else 0
        for offset, event in enumerate(events, start=1):
            address: Address | None = None
            order_id = before.order_id if before is not None else ""
            if isinstance(event, OrderReceived) and event.order.shipping.method != "pickup":
                address, order_id = event.order.shipping_address, event.order_id
            elif isinstance(event, AddressCorrected) and event.shipping_address is not None:
                if before is not None and before.order.shipping.method == "pickup":
                    continue
                address = event.shipping_address
            if address is None or not order_id:
                continue
            chosen = _validating_location(configured, locations(), address.country)
            if chosen is None:
                continue
            name, location = chosen
            work = ValidateAddress(order_id=order_id, location=location.name, address=address)
            target = carrier_target(name)
            # The event's position in its stream makes each correction its own check.
            key = f"{target}:validate:{order_id}:{version + offset}"
            items.append(OutboxItem(target, _encoder.encode(work), key))
        return items

    return plan


def carrier_fulfilment_effects(
    locations: Callable[[], Sequence[LocationConfig]],
) -> FulfilmentEffects:
    """The fulfilment desk's planner: packed at a manual location with a carrier -> buy a label."""

    async def plan(
        fulfilment: FulfilmentState, events: Sequence[FulfilmentEvent]
    ) -> list[OutboxItem]:
        if fulfilment.kind not in ("ship", "transfer"):
            return []
        if not any(isinstance(e, FulfilmentProgressed) and e.state == "packed" for e in events):
            return []
        location = next((loc for loc in locations() if loc.name == fulfilment.location), None)
        if location is None or location.adapter != "manual" or not location.carriers:
            return []
        name = _carrier_of(location, fulfilment)
        target = carrier_target(name)
        work = BuyLabel(fulfilment_id=fulfilment.fulfilment_id)
        key = f"{target}:label:{fulfilment.fulfilment_id}"
        return [OutboxItem(target, _encoder.encode(work), key)]

    return plan


def _carrier_of(location: LocationConfig, fulfilment: FulfilmentState) -> str:
    """Routing's choice when the location ships with it, else the location's first carrier."""
    if fulfilment.carrier in location.carriers:
        assert fulfilment.carrier is not None
        return fulfilment.carrier
    return location.carriers[0]


# -- metrics ------------------------------------------------------------------------------------


class CarrierMetrics:
    """Created once per registry by the composition root, shared by every carrier actor."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.labels = Counter(
            "somsd_carrier_labels",
            "Label purchases per carrier and outcome (bought, reconciled, refused, canceled, "
            "inconclusive: a lookup after a lost answer could not rule a label out).",
            ["carrier", "outcome"],
            registry=registry,
        )
        self.validations = Counter(
            "somsd_carrier_validations",
            "Address dry runs per carrier and outcome (valid, refused).",
            ["carrier", "outcome"],
            registry=registry,
        )
        self.tracking = Counter(
            "somsd_carrier_tracking_polls",
            "Tracking answers per carrier and state (pre_transit, transit, delivered, failure, "
            "unknown, error).",
            ["carrier", "state"],
            registry=registry,
        )
        self.printed = Counter(
            "somsd_labels_printed",
            "Labels sent to a label printer, per location.",
            ["location"],
            registry=registry,
        )


# -- the actor ----------------------------------------------------------------------------------


class _Due(msgspec.Struct):
    at: float
    wait: float
    last: str = ""


class CarrierActor(Actor[Describe]):
    """Drives one `[[carrier]]`; see the module docstring."""

    def __init__(
        self,
        section: CarrierConfig,
        *,
        store: EventStore,
        dispatcher: OutboxDispatcher,
        fulfilments: _FulfilmentSink,
        desk: OrderDesk,
        locations: Callable[[], Sequence[LocationConfig]],
        data_dir: Path,
        metrics: CarrierMetrics,
        adapter: CarrierAdapter | None = None,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        super().__init__(carrier_target(section.name))
        self.section = section
        self.kind: str = section.kind
        self.driver: str | None = section.kind
        self.store = store
        self.dispatcher = dispatcher
        self.fulfilments = fulfilments
        self.desk = desk
        self._locations = locations
        self.data_dir = data_dir
        self.metrics = metrics
        self._adapter = adapter
        self._clock = clock
        self._today = today
        self.created_at = time.time()
        self.handled = 0
        self._due: dict[str, _Due] = {}

    @property
    def target(self) -> str:
        return carrier_target(self.section.name)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._http() as http:
            if self._adapter is None:
                self._adapter = (
                    OwnFleetCarrier(system=self.target, title=section_title(self.section))
                    if self.section.kind == "own-fleet"
                    else self._dhl(http)
                )
            self.dispatcher.register(self.target, self._deliver, limit=LABEL_CONCURRENCY)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._track_forever)
                    log.info("carrier_started", carrier=self.section.name, kind=self.kind)
                    task_status.started()
                    async for message in self.mailbox:
                        self.handled += 1
                        match message:
                            case Describe(reply=reply):
                                reply.set(
                                    IntegrationStatus(
                                        self.name, self.kind, self.created_at, self.handled
                                    )
                                )
                    nursery.cancel_scope.cancel()
            finally:
                self.dispatcher.unregister(self.target, self._deliver)

    def _http(self) -> httpx.AsyncClient:
        connections = self.dispatcher.per_target + 2
        return httpx.AsyncClient(
            timeout=DEFAULT_TIMEOUT,
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=30.0,
            ),
        )

    def _dhl(self, http: httpx.AsyncClient) -> DhlClient:
        return dhl_client(self.section, http)

    @property
    def adapter(self) -> CarrierAdapter:
        assert self._adapter is not None, "the adapter is built when the actor runs"
        return self._adapter

    def _location(self, name: str) -> LocationConfig:
        for location in self._locations():
            if location.name == name:
                return location
        raise PermanentUpstreamError(
            self.target, f"{self.target}: location {name!r} is not configured", operation="label"
        )

    # -- deliveries ---------------------------------------------------------------------

    async def _deliver(self, entry: OutboxEntry) -> None:
        try:
            work = _work_decoder.decode(entry.payload)
        except msgspec.DecodeError as exc:
            raise PermanentUpstreamError(
                self.target,
                f"{self.target}: outbox entry {entry.id} is not carrier work ({exc})",
                operation="decode payload",
            ) from exc
        match work:
            case ValidateAddress():
                await self._validate(work)
            case BuyLabel():
                await self._buy(work.fulfilment_id)
            case PrintLabel():
                await self._print(work)

    async def _order(self, order_id: str) -> OrderState | None:
        blob = await self.store.read(partial(fetch_state, order_id=order_id))
        return None if blob is None else decode_state(blob)

    async def _validate(self, work: ValidateAddress) -> None:
        state = await self._order(work.order_id)
        if state is None or state.order.shipping_address != work.address:
            return  # corrected meanwhile: the newer address has its own check queued
        if state.status in ("canceled", "complete", "closed"):
            return
        location = self._location(work.location)
        email = state.order.customer.email if self.section.share_email else None
        try:
            data = shipment_data(
                location,
                reference=f"check-{work.order_id}"[:35],
                consignee=_party(work.address, email=email),
                lines=[(line.sku, line.quantity) for line in state.order.lines],
                ship_date=self._today(),
            )
        except ValueError as exc:
            raise PermanentUpstreamError(self.target, str(exc), operation="validate") from exc
        try:
            messages = await self.adapter.validate(data)
        except ShipmentRefused as exc:
            messages = exc.messages
        if not messages:
            self.metrics.validations.labels(self.section.name, "valid").inc()
            return
        self.metrics.validations.labels(self.section.name, "refused").inc()
        log.info("address_refused_by_carrier", order_id=work.order_id, messages=list(messages))
        await self._hold(work.order_id, messages, code="address_incomplete")

    async def _hold(self, order_id: str, messages: Sequence[str], *, code: str) -> None:
        carrier = self.section.name.upper() if len(self.section.name) <= 4 else self.section.name
        reasons = tuple(
            HoldReason(code, f"{carrier}: {message}", "$.shipping_address")
            if code == "address_incomplete"
            else HoldReason(code, f"{carrier}: {message}")
            for message in messages
        )
        try:
            await self.desk.ask(
                lambda reply: OrderCommand(order_id, HoldOrder(reasons), self.target, reply)
            )
        except DomainError as exc:  # on hold already, or final: the operator sees it anyway
            log.info("carrier_hold_not_set", order_id=order_id, reason=str(exc))
        except ReplyError as exc:
            raise TransientUpstreamError(self.target, str(exc), operation="hold order") from exc

    async def _buy(self, fulfilment_id: str) -> None:
        fulfilment = await self.store.read(partial(fetch_fulfilment, fulfilment_id=fulfilment_id))
        if fulfilment is None:
            raise PermanentUpstreamError(
                self.target, f"{self.target}: no fulfilment {fulfilment_id}", operation="label"
            )
        stream = label_stream(fulfilment_id)
        stored_events = await self.store.read_stream(stream)
        history = _decode_events(stored_events)
        version = stored_events[-1].version if stored_events else 0
        stored = next((e for e in history if isinstance(e, LabelStored)), None)
        if fulfilment.state in ("canceled", "rejected"):
            await self._void(fulfilment_id, stored, history, version)
            return
        if stored is not None:
            await self._ship(fulfilment, stored)
            return
        order = await self._order(fulfilment.order_id)
        if order is None:
            raise PermanentUpstreamError(
                self.target, f"{self.target}: no order {fulfilment.order_id}", operation="label"
            )
        if order.status == ON_HOLD:
            raise TransientUpstreamError(
                self.target,
                f"{self.target}: order {order.order.number} is on hold; the label waits for "
                "its release",
                operation="label",
            )
        location = self._location(fulfilment.location)
        data = self._shipment(location, order.order, fulfilment)
        attempts = [e for e in history if isinstance(e, LabelAttempted)]
        label: Label | None = None
        if attempts and not isinstance(history[-1], LabelRefused | LabelRuledOut):
            # An attempt without an outcome: the label may exist. Ask before buying again.
            label = await self._find_lost(data, attempts)
        reconciled = label is not None
        if reconciled:
            log.info("label_reconciled", fulfilment_id=fulfilment_id, reference=data.reference)
        if label is None:
            attempt = LabelAttempted(
                at=datetime.now(UTC),
                carrier=self.section.name,
                reference=data.reference,
                attempt=len(attempts) + 1,
            )
            appended = await self.store.append(stream, [_event(attempt)], expected_version=version)
            version = appended.version
            try:
                label = await self.adapter.create_label(data)
            except ShipmentRefused as exc:
                refused = LabelRefused(
                    at=datetime.now(UTC), carrier=self.section.name, messages=exc.messages
                )
                await self.store.append(stream, [_event(refused)], expected_version=version)
                self.metrics.labels.labels(self.section.name, "refused").inc()
                await self._hold(fulfilment.order_id, exc.messages, code="address_incomplete")
                # Retried after the operator corrected the address (the hold blocks it until).
                raise TransientUpstreamError(
                    self.target, str(exc), operation="create label", status_code=400
                ) from exc
        stored = await self._store_label(fulfilment, location, label, version, reconciled)
        self.metrics.labels.labels(
            self.section.name, "reconciled" if reconciled else "bought"
        ).inc()
        await self._ship(fulfilment, stored)

    async def _find_lost(
        self, data: ShipmentData, attempts: Sequence[LabelAttempted]
    ) -> Label | None:
        """The label an unanswered attempt may have bought, looked up on every day one was
        made (a lost answer before midnight is on that day's manifest, not today's)."""
        known = {f.tracking_number for f in await self._shipped() if f.tracking_number}
        tried = {a.at.date() for a in attempts[-3:] if a.at.date() <= data.ship_date}
        inconclusive: LabelLookupInconclusive | None = None
        for day in sorted({data.ship_date, *tried}, reverse=True):
            looked_up = msgspec.structs.replace(data, ship_date=day)
            try:
                label = await self.adapter.find_by_reference(looked_up, known=known)
            except LabelLookupInconclusive as exc:
                inconclusive = exc  # another day may still hold the label
                continue
            if label is not None:
                return label
        if inconclusive is not None:
            self.metrics.labels.labels(self.section.name, "inconclusive").inc()
            raise LabelLookupInconclusive(
                self.target,
                f"{inconclusive}. If the carrier's portal shows no label under reference "
                f"{data.reference}, rule it out (POST /v1/fulfillments/{data.reference}"
                "/label/rule-out): the next attempt, or a retry of its dead letter, buys it",
                operation=inconclusive.operation,
            ) from inconclusive
        return None

    def _shipment(
        self, location: LocationConfig, order: Order, fulfilment: FulfilmentState
    ) -> ShipmentData:
        if fulfilment.kind == "transfer":
            store = next(
                (loc for loc in self._locations() if loc.name == fulfilment.deliver_to), None
            )
            if store is None or store.address is None:
                raise PermanentUpstreamError(
                    self.target,
                    f"{self.target}: transfer {fulfilment.fulfilment_id} goes to store "
                    f"{fulfilment.deliver_to!r}, which has no address",
                    operation="label",
                )
            a = store.address
            consignee = Party(
                name=a.name, street=a.street, zip=a.zip, city=a.city, country=a.country
            )
        else:
            email = order.customer.email if self.section.share_email else None
            consignee = _party(order.shipping_address, email=email)
        try:
            return shipment_data(
                location,
                reference=fulfilment.fulfilment_id,
                consignee=consignee,
                lines=[(line.sku, line.quantity) for line in fulfilment.lines],
                ship_date=self._today(),
                billed=self.section.kind != "own-fleet",
            )
        except ValueError as exc:
            raise PermanentUpstreamError(self.target, str(exc), operation="label") from exc

    async def _store_label(
        self,
        fulfilment: FulfilmentState,
        location: LocationConfig,
        label: Label,
        version: int,
        reconciled: bool,
    ) -> LabelStored:
        if len(label.content) > MAX_BLOB_BYTES:
            raise PermanentUpstreamError(
                self.target,
                f"{self.target}: the label of {fulfilment.fulfilment_id} is "
                f"{len(label.content)} bytes, more than the {MAX_BLOB_BYTES} somsd stores",
                operation="store label",
            )
        stored = LabelStored(
            at=datetime.now(UTC),
            carrier=self.section.name,
            reference=label.reference,
            shipment_number=label.shipment_number,
            label_format=label.label_format,
            file="",
            sha256=blob_key(label.content),
            routing_code=label.routing_code,
            reconciled=reconciled,
        )
        outbox: list[OutboxItem] = []
        if location.label_printer:
            work = PrintLabel(
                fulfilment_id=fulfilment.fulfilment_id, printer=location.label_printer
            )
            key = f"{self.target}:print:{fulfilment.fulfilment_id}"
            outbox.append(OutboxItem(self.target, _encoder.encode(work), key))
        await self.store.append(
            label_stream(fulfilment.fulfilment_id),
            [_event(stored)],
            expected_version=version,
            outbox=outbox,
            blobs=[label.content],
        )
        log.info(
            "label_stored",
            fulfilment_id=fulfilment.fulfilment_id,
            shipment_number=label.shipment_number,
            reconciled=reconciled,
        )
        if outbox:
            self.dispatcher.wake()
        return stored

    async def _ship(self, fulfilment: FulfilmentState, stored: LabelStored) -> None:
        """The label exists: the parcel ships with its tracking number (repeats are no-ops).

        The order may have been canceled while the label was bought: then the fulfilment is
        canceled, shipping it is refused, and the label is cancelled at the carrier
        (`DELETE /orders`) so nobody pays for a parcel that never leaves.
        """
        if fulfilment.state in ("shipped", "delivered"):
            return
        await self.fulfilments.location_update(
            fulfilment.location,
            fulfilment.fulfilment_id,
            "shipped",
            tracking_number=stored.shipment_number,
            carrier=self.section.name,
        )
        after = await self.store.read(
            partial(fetch_fulfilment, fulfilment_id=fulfilment.fulfilment_id)
        )
        if after is not None and after.state in ("canceled", "rejected"):
            stream = label_stream(fulfilment.fulfilment_id)
            stored_events = await self.store.read_stream(stream)
            version = stored_events[-1].version if stored_events else 0
            await self._void(
                fulfilment.fulfilment_id, stored, _decode_events(stored_events), version
            )

    async def _void(
        self,
        fulfilment_id: str,
        stored: LabelStored | None,
        history: Sequence[LabelEvent],
        version: int,
    ) -> None:
        """Cancel the label of a fulfilment that will not ship, once."""
        if stored is None or any(isinstance(e, LabelCanceled) for e in history):
            return
        try:
            await self.adapter.cancel(stored.shipment_number)
        except ShipmentRefused as exc:
            # Unknown or already deleted at the carrier: nothing is left to pay for.
            log.info("label_cancel_refused", fulfilment_id=fulfilment_id, reason=str(exc))
        canceled = LabelCanceled(
            at=datetime.now(UTC), carrier=self.section.name, shipment_number=stored.shipment_number
        )
        await self.store.append(
            label_stream(fulfilment_id), [_event(canceled)], expected_version=version
        )
        self.metrics.labels.labels(self.section.name, "canceled").inc()
        log.info("label_canceled", fulfilment_id=fulfilment_id, shipment=stored.shipment_number)

    async def _print(self, work: PrintLabel) -> None:
        stored = await self.stored_label(work.fulfilment_id)
        if stored is None:
            raise PermanentUpstreamError(
                self.target, f"{self.target}: no label for {work.fulfilment_id}", operation="print"
            )
        if stored.label_format != "zpl":
            raise PermanentUpstreamError(
                self.target,
                f"{self.target}: label of {work.fulfilment_id} is PDF; a raw printer needs ZPL",
                operation="print",
            )
        try:
            address = PrinterAddress.parse(work.printer)
        except ValueError as exc:
            raise PermanentUpstreamError(self.target, str(exc), operation="print") from exc
        content = await label_content(self.store, self.data_dir, stored)
        if content is None:
            raise PermanentUpstreamError(
                self.target,
                f"{self.target}: the label of {work.fulfilment_id} ({stored.sha256}) is not stored",
                operation="print",
            )
        await send_raw(address, content, system=self.target)
        fulfilment = await self.store.read(
            partial(fetch_fulfilment, fulfilment_id=work.fulfilment_id)
        )
        self.metrics.printed.labels(fulfilment.location if fulfilment else "").inc()
        log.info("label_printed", fulfilment_id=work.fulfilment_id, printer=str(address))

    async def stored_label(self, fulfilment_id: str) -> LabelStored | None:
        history = _decode_events(await self.store.read_stream(label_stream(fulfilment_id)))
        return next((e for e in history if isinstance(e, LabelStored)), None)

    # -- tracking -------------------------------------------------------------------------

    async def _track_forever(self) -> None:
        if self.section.kind == "own-fleet":
            return  # nobody to ask: the drivers report delivery
        interval = self.section.tracking_interval.seconds
        # A round at most every second, so short intervals (tests, the demo) are honoured and
        # long ones do not sleep past a shipment's due time by more than that.
        tick = min(interval, 1.0)
        while True:
            try:
                await self.track_round()
            except Exception as exc:  # the store or a bug: the next round tries again
                log.exception("tracking_round_failed", carrier=self.section.name, error=str(exc))
            await trio.sleep(tick)

    async def _shipped(self) -> list[FulfilmentState]:
        """This carrier's shipped fulfilments (bounded pages)."""
        shipped: list[FulfilmentState] = []
        for page in range(MAX_TRACKING_PAGES):
            found = await self.store.read(
                partial(
                    list_fulfilments,
                    location=None,
                    states=("shipped",),
                    offset=page * TRACKING_BATCH,
                    limit=TRACKING_BATCH,
                )
            )
            shipped.extend(found)
            if len(found) < TRACKING_BATCH:
                break
        return [f for f in shipped if f.carrier == self.section.name]

    async def track_round(self) -> int:
        """Ask the carrier about every due shipped parcel; returns how many were asked."""
        interval = self.section.tracking_interval.seconds
        mine = [f for f in await self._shipped() if f.tracking_number]
        now = self._clock()
        open_ids = {f.fulfilment_id for f in mine}
        for gone in self._due.keys() - open_ids:
            del self._due[gone]
        asked = 0
        for fulfilment in mine:
            due = self._due.setdefault(fulfilment.fulfilment_id, _Due(at=now, wait=interval))
            if due.at > now:
                continue
            asked += 1
            assert fulfilment.tracking_number is not None
            try:
                status = await self.adapter.track(fulfilment.tracking_number)
            except UpstreamError as exc:
                self.metrics.tracking.labels(self.section.name, "error").inc()
                log.info("tracking_failed", fulfilment_id=fulfilment.fulfilment_id, error=str(exc))
                due.wait = min(due.wait * 2, interval * MAX_TRACKING_BACKOFF)
                due.at = now + due.wait
                continue
            self.metrics.tracking.labels(self.section.name, status.state).inc()
            changed = status.state != due.last
            due.wait = interval if changed else min(due.wait * 2, interval * MAX_TRACKING_BACKOFF)
            due.at = now + due.wait
            due.last = status.state
            await self._tracked(fulfilment, status)
        return asked

    async def _tracked(self, fulfilment: FulfilmentState, status: TrackingStatus) -> None:
        if status.state == "delivered":
            await self.fulfilments.location_update(
                fulfilment.location,
                fulfilment.fulfilment_id,
                "delivered",
                carrier=self.section.name,
                at=status.at,
            )
            self._due.pop(fulfilment.fulfilment_id, None)
            log.info("parcel_delivered", fulfilment_id=fulfilment.fulfilment_id)
        elif status.state == "failure":
            stream = label_stream(fulfilment.fulfilment_id)
            stored_events = await self.store.read_stream(stream)
            if any(isinstance(e, TrackingFailed) for e in _decode_events(stored_events)):
                return  # held once for this parcel; the operator decides the rest
            assert fulfilment.tracking_number is not None
            failed = TrackingFailed(
                at=datetime.now(UTC),
                carrier=self.section.name,
                shipment_number=fulfilment.tracking_number,
                description=status.description,
            )
            version = stored_events[-1].version if stored_events else 0
            await self.store.append(stream, [_event(failed)], expected_version=version)
            await self._hold(
                fulfilment.order_id,
                [f"parcel {fulfilment.tracking_number}: {status.description or 'delivery failed'}"],
                code="delivery_failed",
            )


class _FulfilmentSink(Protocol):
    """What the carrier actor needs of the fulfilment desk (`LocationSink.location_update`)."""

    async def location_update(
        self,
        location: str,
        fulfilment_id: str,
        status: Literal["shipped", "delivered"],
        *,
        tracking_number: str | None = None,
        carrier: str | None = None,
        at: datetime | None = None,
    ) -> None: ...


async def label_content(store: EventStore, data_dir: Path, stored: LabelStored) -> bytes | None:
    """The label's bytes: the store's blob, or for a label stored by an older somsd its file
    under the data dir (checked against the hash); None when neither has it."""
    return await stored_bytes(store, stored.sha256, data_dir / stored.file if stored.file else None)


# -- the label route ------------------------------------------------------------------------------


class RuleOutBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: str  # what the operator checked, kept in the label stream


class RuledOut(msgspec.Struct, frozen=True):
    fulfilment_id: str
    attempts: int  # the unanswered attempts now known to have bought nothing


class CarrierRoutes:
    """`GET /v1/fulfillments/{id}/label`: the stored carrier label, PDF or ZPL as bought; for
    a click & collect fulfilment, which no carrier carries, a pickup slip PDF drawn on the spot.

    `POST /v1/fulfillments/{id}/label/rule-out`: the operator's word, after checking the
    carrier's portal, that the unanswered purchase attempts bought no label. Only for that
    case: the carrier's lookup could not prove it (`LabelLookupInconclusive`), so without it
    the fulfilment would wait forever rather than risk a second label.
    """

    def __init__(self, store: EventStore, data_dir: Path) -> None:
        self.store = store
        self.data_dir = data_dir

    async def label(self, request: Request) -> Response:
        fulfilment_id = request.path_params["fulfilment_id"]
        history = _decode_events(await self.store.read_stream(label_stream(fulfilment_id)))
        stored = next((e for e in history if isinstance(e, LabelStored)), None)
        if stored is None:
            slip = await self._pickup_slip(fulfilment_id)
            if slip is not None:
                return Response(slip, media_type=LABEL_MEDIA["pdf"])
            raise ApiError(404, "label_not_found", f"fulfilment {fulfilment_id!r} has no label")
        content = await label_content(self.store, self.data_dir, stored)
        if content is None:
            raise ApiError(
                404,
                "label_file_missing",
                f"the label of {fulfilment_id!r} (SHA-256 {stored.sha256}) is not stored",
            )
        suffix = LABEL_SUFFIX[stored.label_format]
        return Response(
            content,
            media_type=LABEL_MEDIA[stored.label_format],
            headers={
                "Content-Disposition": f'inline; filename="{stored.shipment_number}.{suffix}"',
                "X-Tracking-Number": stored.shipment_number,
            },
        )

    async def rule_out(self, request: Request) -> Response:
        fulfilment_id = request.path_params["fulfilment_id"]
        body: RuleOutBody = decode_body(await request.body(), body_decoder(RuleOutBody))
        if not body.reason.strip():
            raise ApiError(422, "invalid_body", "say what was checked", "$.reason")
        stream = label_stream(fulfilment_id)
        stored = await self.store.read_stream(stream)
        history = _decode_events(stored)
        if not history:
            raise ApiError(
                404, "label_not_found", f"fulfilment {fulfilment_id!r} has no label attempt"
            )
        last = history[-1]
        if not isinstance(last, LabelAttempted):
            raise ApiError(
                409,
                "no_open_attempt",
                f"fulfilment {fulfilment_id!r} has no unanswered label purchase "
                f"(last: {type(last).__name__})",
            )
        ruled_out = LabelRuledOut(at=datetime.now(UTC), carrier=last.carrier, reason=body.reason)
        try:
            version = stored[-1].version
            await self.store.append(stream, [_event(ruled_out)], expected_version=version)
        except VersionConflict:
            raise ApiError(
                409, "label_changed", f"the label of {fulfilment_id!r} changed; look again"
            ) from None
        log.warning(
            "label_ruled_out", fulfilment_id=fulfilment_id, carrier=last.carrier, reason=body.reason
        )
        unanswered = takewhile(lambda e: isinstance(e, LabelAttempted), reversed(history))
        return json_response(RuledOut(fulfilment_id, sum(1 for _ in unanswered)))

    async def _pickup_slip(self, fulfilment_id: str) -> bytes | None:
        fulfilment = await self.store.read(partial(fetch_fulfilment, fulfilment_id=fulfilment_id))
        if fulfilment is None or fulfilment.kind != "pickup":
            return None
        blob = await self.store.read(partial(fetch_state, order_id=fulfilment.order_id))
        customer = decode_state(blob).order.billing_address.name if blob is not None else ""
        return await trio.to_thread.run_sync(
            partial(
                pickup_slip_pdf,
                store=fulfilment.location,
                order_number=fulfilment.order_number,
                customer=customer,
                lines=[(line.sku, line.quantity) for line in fulfilment.lines],
                barcode=fulfilment.fulfilment_id,
            )
        )

    def routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(
                "/v1/fulfillments/{fulfilment_id}/label",
                "GET",
                self.label,
                "The carrier label of a fulfilment (PDF or ZPL, as the carrier sent it); a "
                "pickup slip PDF for click & collect",
                admin=True,
                responses={200: None, 404: None},
                tags=("fulfillments",),
            ),
            ApiRoute(
                "/v1/fulfillments/{fulfilment_id}/label/rule-out",
                "POST",
                self.rule_out,
                "After checking the carrier's portal: the unanswered label purchase bought "
                "nothing, so the next attempt buys without a lookup",
                admin=True,
                request=RuleOutBody,
                responses={200: RuledOut, 400: None, 404: None, 409: None, 422: None},
                tags=("fulfillments",),
            ),
        ]


def section_title(section: CarrierConfig) -> str:
    """What an own-fleet label prints as the carrier: the section's name, readable."""
    return section.name.replace("-", " ").replace("_", " ").title()


def dhl_client(section: CarrierConfig, http: httpx.AsyncClient) -> DhlClient:
    """The DHL client for a checked `[[carrier]]` section (api_key_file is required there)."""
    assert section.api_key_file is not None
    return DhlClient(
        http,
        system=carrier_target(section.name),
        shipping_url=section.url or DHL_PRODUCTION,
        tracking_url=section.tracking_url or DHL_TRACKING,
        auth=DhlAuth(
            api_key=section.api_key_file.secret,
            mode=section.auth,
            user=section.user or "",
            password=section.password_file.secret if section.password_file else None,
            client_secret=section.client_secret_file.secret if section.client_secret_file else None,
        ),
        profile=section.profile,
    )


# -- somsd doctor ------------------------------------------------------------------------------


async def check_carrier(
    section: CarrierConfig, locations: Sequence[LocationConfig]
) -> list[tuple[str, bool, str]]:
    """`somsd doctor` for one carrier: (check, ok, detail) for reach, https, credentials, and a
    dry-run label (`validate=true`) from each location's sender to itself - DHL checks the
    billing number, the product and the sender address; nothing is bought."""
    checks: list[tuple[str, bool, str]] = []
    if section.kind == "own-fleet":
        return [("labels", True, "own fleet: somsd draws the labels itself")]
    url = section.url or DHL_PRODUCTION
    host = httpx.URL(url).host
    if url.startswith("https://"):
        checks.append(("https", True, "the API is reached over https"))
    elif host in ("127.0.0.1", "::1", "localhost"):
        checks.append(("https", True, "plain http to a loopback server (test or demo)"))
    else:
        checks.append(("https", False, f"{url} is plain http; use https://"))
    if section.api_key_file is None or section.password_file is None or not section.user:
        checks.append(("credentials", False, "set api_key_file, user and password_file"))
        return checks
    # Without the carrier in reach there is no point waiting long for each check.
    async with httpx.AsyncClient(timeout=5.0) as http:
        client = dhl_client(section, http)
        try:
            version = await client.version()
        except UpstreamError as exc:
            checks.append(("reachable", False, f"{exc}; check url and the network"))
            return checks
        checks.append(("reachable", True, f"{url} answers ({version})"))
        shipping = [loc for loc in locations if section.name in loc.carriers]
        if not shipping:
            checks.append(("dry run", True, "no [[location]] names this carrier; skipped"))
        for location in shipping:
            name = f"dry run from {location.name}"
            try:
                sender = _sender(location)
                data = shipment_data(
                    location,
                    reference=f"doctor-{location.name}"[:35],
                    consignee=sender,
                    lines=[],
                    ship_date=datetime.now(UTC).date(),
                )
                messages = await client.validate(data)
            except ValueError as exc:
                checks.append((name, False, str(exc)))
                continue
            except PermanentUpstreamError as exc:
                fix = (
                    "check api_key_file, user and password_file"
                    if exc.status_code in (401, 403)
                    else "see the message"
                )
                checks.append((name, False, f"{exc}; {fix}"))
                continue
            except UpstreamError as exc:
                checks.append((name, False, str(exc)))
                continue
            if messages:
                checks.append((name, False, "refused: " + "; ".join(messages)))
            else:
                checks.append(
                    (
                        name,
                        True,
                        f"credentials, billing number and sender accepted ({data.product})",
                    )
                )
    return checks
