"""The carrier protocol: what somsd asks of any parcel carrier, and the values it trades.

A carrier adapter (DHL Parcel DE in `adapters.dhl`, others later) implements `CarrierAdapter`;
the generic carrier actor (`actors/carrier.py`) drives it and knows no carrier's wire format.
Four operations, each one request and no retries (retrying is the outbox dispatcher's job):

- `validate(shipment)`: the carrier's dry run of a label purchase; the validation messages of a
  shipment it would refuse (empty: it would be accepted). Nothing is bought.
- `create_label(shipment)`: buy the label; raises `ShipmentRefused` with the carrier's messages
  when the shipment data is wrong (an address it cannot deliver to).
- `find_by_reference(shipment, known=...)`: the label bought earlier under
  `shipment.reference` (for its billing number and ship date), or None; `known` are shipment
  numbers somsd already holds labels for, which a carrier that can only list shipments (DHL:
  the daily manifest) need not read again. Carriers without an idempotency key (DHL) can lose
  the answer to a purchase that happened; the actor asks this before buying again, so a lost
  answer never buys a second label. None means "proven not bought"; an answer that proves
  nothing is an error, never None: `LabelLookupInconclusive` when the carrier's listing
  cannot show that it holds every label under the reference (retried; the operator may rule
  the label out after checking the carrier's portal).
- `cancel(shipment_number)` and `track(shipment_number)`.

Failures other than a refusal are `adapters.errors` (transient: retry; permanent: park), like
every adapter. The pure helper `parcel_weight_grams` is the one weight rule for every carrier.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import date, datetime
from typing import Final, Literal, Protocol

import msgspec

from adapters.errors import PermanentUpstreamError, TransientUpstreamError

__all__ = [
    "MAX_PARCEL_GRAMS",
    "CarrierAdapter",
    "Label",
    "LabelFormat",
    "LabelLookupInconclusive",
    "Party",
    "ShipmentData",
    "ShipmentRefused",
    "TrackingState",
    "TrackingStatus",
    "parcel_weight_grams",
]

LabelFormat = Literal["pdf", "zpl"]
TrackingState = Literal["pre_transit", "transit", "delivered", "failure", "unknown"]
# DHL Paket's ceiling (31.5 kg); heavier goods are freight, not a parcel label.
MAX_PARCEL_GRAMS: Final = 31_500


class Party(msgspec.Struct, frozen=True, kw_only=True):
    """A sender or receiver, as a label prints it. `country` is ISO 3166-1 alpha-2."""

    name: str
    company: str | None = None
    street: str
    zip: str
    city: str
    country: str
    email: str | None = None
    phone: str | None = None


class ShipmentData(msgspec.Struct, frozen=True, kw_only=True):
    """One parcel to buy a label for. `reference` is unique per parcel (refNo for DHL)."""

    reference: str
    product: str  # the carrier's product code, e.g. DHL "V01PAK"
    billing_number: str
    shipper: Party
    consignee: Party
    weight_grams: int
    ship_date: date
    label_format: LabelFormat = "pdf"
    print_format: str | None = None  # the carrier's label medium, e.g. DHL "910-300-400"


class Label(msgspec.Struct, frozen=True, kw_only=True):
    shipment_number: str  # the tracking number
    reference: str
    label_format: LabelFormat
    content: bytes  # PDF or ZPL bytes, as the carrier produced them
    routing_code: str | None = None


class TrackingStatus(msgspec.Struct, frozen=True, kw_only=True):
    state: TrackingState
    description: str = ""
    at: datetime | None = None
    location: str = ""


class LabelLookupInconclusive(TransientUpstreamError):
    """`find_by_reference` read everything and found nothing, but what it read cannot prove
    that an open label under the reference would have been listed. Transient: a later lookup
    may prove it (DHL: once the day's manifest shows a shipment that is still open)."""


class ShipmentRefused(PermanentUpstreamError):
    """The carrier refuses the shipment data; `messages` are its own words, one per problem."""

    def __init__(self, system: str, messages: tuple[str, ...], *, operation: str) -> None:
        super().__init__(
            system,
            f"{system}: {operation} refused: {'; '.join(messages) or 'no reason given'}",
            operation=operation,
            status_code=400,
        )
        self.messages = messages


class CarrierAdapter(Protocol):
    """What the carrier actor drives; see the module docstring."""

    system: str

    async def validate(self, shipment: ShipmentData) -> tuple[str, ...]: ...

    async def create_label(self, shipment: ShipmentData) -> Label: ...

    async def find_by_reference(
        self, shipment: ShipmentData, *, known: Collection[str] = ()
    ) -> Label | None: ...

    async def cancel(self, shipment_number: str) -> None: ...

    async def track(self, shipment_number: str) -> TrackingStatus: ...


def parcel_weight_grams(
    lines: Iterable[tuple[str, int]],
    weights: Mapping[str, int],
    default_grams: int,
    *,
    packaging_grams: int = 0,
) -> int:
    """The parcel's weight from its (sku, quantity) lines, in grams.

    SKUs with a known unit weight count quantity x weight; when none of the lines has one, the
    location's `default_grams` stands for the whole parcel (a store that never weighed its
    goods still ships). Lines without a weight next to weighed ones count nothing: guessing a
    default per unknown unit would overstate a parcel of many small things. The result is at
    least 1 g (carriers refuse 0) and capped at `MAX_PARCEL_GRAMS`, where a carrier would
    refuse the label anyway.
    """
    known = [(quantity, weights[sku]) for sku, quantity in lines if sku in weights]
    grams = sum(quantity * unit for quantity, unit in known) if known else default_grams
    return max(1, min(grams + packaging_grams, MAX_PARCEL_GRAMS))
