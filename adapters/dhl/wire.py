"""msgspec types of DHL's own JSON, field names as DHL spells them.

Parcel DE Shipping API v2 (SPEC: DHL's OpenAPI "Parcel DE Shipping API (Post & Parcel Germany)"
2.1.13; see `shared/reference/dhl-parcel-de.md` sections 3-5) and the unified Shipment Tracking
API (section 6). Only the fields somsd sends or reads; unknown fields in answers are ignored.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_PROFILE",
    "BillingNoToSheetNo",
    "ContactAddress",
    "Details",
    "Document",
    "LabelDataResponse",
    "ManifestItem",
    "ManifestRequest",
    "MultipleManifestResponse",
    "RequestStatus",
    "ResponseItem",
    "Shipment",
    "ShipmentOrderRequest",
    "Shipper",
    "ShortResponseItem",
    "SingleManifestResponse",
    "TrackingEvent",
    "TrackingResponse",
    "TrackingShipment",
    "ValidationMessage",
    "Weight",
]

API_KEY_HEADER: Final = "dhl-api-key"
DEFAULT_PROFILE: Final = "STANDARD_GRUPPENPROFIL"
MAX_SHIPMENTS_PER_CALL: Final = 30


class _Wire(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    pass


class Shipper(_Wire, frozen=True, kw_only=True):
    name1: str
    name2: str | None = None
    addressStreet: str  # DHL's spelling
    postalCode: str | None = None
    city: str
    country: str  # ISO 3166-1 alpha-3
    email: str | None = None


class ContactAddress(_Wire, frozen=True, kw_only=True):
    name1: str
    name2: str | None = None
    addressStreet: str
    postalCode: str | None = None
    city: str
    country: str  # ISO 3166-1 alpha-3
    email: str | None = None
    phone: str | None = None


class Weight(_Wire, frozen=True, kw_only=True):
    uom: str  # "g" | "kg"
    value: float


class Details(_Wire, frozen=True, kw_only=True):
    weight: Weight


class Shipment(_Wire, frozen=True, kw_only=True):
    product: str
    billingNumber: str
    refNo: str | None = None
    shipDate: str | None = None  # yyyy-mm-dd
    shipper: Shipper
    consignee: ContactAddress
    details: Details


class ShipmentOrderRequest(_Wire, frozen=True, kw_only=True):
    profile: str = DEFAULT_PROFILE
    shipments: tuple[Shipment, ...]


class RequestStatus(_Wire, frozen=True, kw_only=True):
    title: str = ""
    statusCode: int = 0
    status: int | None = None
    detail: str | None = None


class ValidationMessage(_Wire, frozen=True, kw_only=True):
    property: str | None = None
    validationMessage: str | None = None
    validationState: str | None = None  # Error | Warning


class Document(_Wire, frozen=True, kw_only=True):
    b64: str | None = None  # PDF, base64
    zpl2: str | None = None  # ZPL text
    url: str | None = None
    fileFormat: str | None = None  # PDF | ZPL2
    printFormat: str | None = None


class ResponseItem(_Wire, frozen=True, kw_only=True):
    sstatus: RequestStatus = msgspec.field(default_factory=RequestStatus)
    shipmentNo: str | None = None
    routingCode: str | None = None
    shipmentRefNo: str | None = None
    label: Document | None = None
    validationMessages: tuple[ValidationMessage, ...] = ()


class LabelDataResponse(_Wire, frozen=True, kw_only=True):
    status: RequestStatus = msgspec.field(default_factory=RequestStatus)
    items: tuple[ResponseItem, ...] = ()


class ManifestItem(_Wire, frozen=True, kw_only=True):
    """SPEC `ShipmentNoToSheetNo`: one shipment of the daily manifest."""

    shipmentNo: str | None = None
    sheetNo: str | None = None
    sstatus: RequestStatus | None = None


class BillingNoToSheetNo(_Wire, frozen=True, kw_only=True):
    billingNumber: str | None = None
    sheetNo: str | None = None


class SingleManifestResponse(_Wire, frozen=True, kw_only=True):
    """SPEC `SingleManifestResponse`, the answer of `GET /manifests`."""

    status: RequestStatus = msgspec.field(default_factory=RequestStatus)
    manifestDate: str | None = None
    manifest: tuple[Document, ...] = ()
    sheetNo: tuple[BillingNoToSheetNo, ...] = ()
    items: tuple[ManifestItem, ...] = ()


class ManifestRequest(_Wire, frozen=True, kw_only=True):
    """SPEC `ShipmentManifestingRequest`, the body of `POST /manifests`."""

    profile: str
    shipmentNumbers: tuple[str, ...] = ()
    billingNumber: str | None = None


class ShortResponseItem(_Wire, frozen=True, kw_only=True):
    shipmentNo: str | None = None
    sstatus: RequestStatus = msgspec.field(default_factory=RequestStatus)


class MultipleManifestResponse(_Wire, frozen=True, kw_only=True):
    """SPEC `MultipleManifestResponse`, the 207 of `POST /manifests`."""

    status: RequestStatus = msgspec.field(default_factory=RequestStatus)
    items: tuple[ShortResponseItem, ...] = ()


class TrackingLocation(_Wire, frozen=True, kw_only=True):
    address: dict[str, str] = msgspec.field(default_factory=dict)


class TrackingEvent(_Wire, frozen=True, kw_only=True):
    timestamp: str | None = None
    statusCode: str = "unknown"  # pre-transit | transit | delivered | failure | unknown
    status: str | None = None
    description: str | None = None
    location: TrackingLocation | None = None


class TrackingShipment(_Wire, frozen=True, kw_only=True):
    id: str
    service: str | None = None
    status: TrackingEvent
    events: tuple[TrackingEvent, ...] = ()


class TrackingResponse(_Wire, frozen=True, kw_only=True):
    shipments: tuple[TrackingShipment, ...] = ()
