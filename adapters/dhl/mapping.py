"""somsd's carrier values <-> DHL Parcel DE v2 JSON (pure, no I/O).

Field limits are the SPEC's (`shared/reference/dhl-parcel-de.md` section 4): names and street
at most 50 characters, city 40, postcode 3-10, countries as ISO 3166-1 alpha-3. Text longer
than DHL allows is cut rather than refused: a label with a shortened company name still
arrives, a refused one does not; the validation dry run shows what DHL thinks of the rest.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Final

import msgspec

from adapters.carrier import Label, LabelFormat, Party, ShipmentData, TrackingState, TrackingStatus
from adapters.dhl.wire import (
    DEFAULT_PROFILE,
    ContactAddress,
    Details,
    ManifestItem,
    ResponseItem,
    Shipment,
    ShipmentOrderRequest,
    Shipper,
    TrackingShipment,
    Weight,
)

__all__ = [
    "ALPHA3",
    "ReprintVerdict",
    "UnknownCountry",
    "alpha3",
    "batches",
    "item_label",
    "item_messages",
    "manifest_candidates",
    "match_reprint",
    "order_request",
    "query",
    "shipment",
    "tracking_status",
]

# ISO 3166-1 alpha-2 -> alpha-3 for the countries a German shop ships parcels to (EU, EFTA,
# the UK and the larger overseas markets). A country missing here is refused with a clear
# message instead of sent as a guess.
ALPHA3: Final[dict[str, str]] = {
    "AT": "AUT", "BE": "BEL", "BG": "BGR", "CH": "CHE", "CY": "CYP", "CZ": "CZE", "DE": "DEU",
    "DK": "DNK", "EE": "EST", "ES": "ESP", "FI": "FIN", "FR": "FRA", "GB": "GBR", "GR": "GRC",
    "HR": "HRV", "HU": "HUN", "IE": "IRL", "IS": "ISL", "IT": "ITA", "LI": "LIE", "LT": "LTU",
    "LU": "LUX", "LV": "LVA", "MC": "MCO", "MT": "MLT", "NL": "NLD", "NO": "NOR", "PL": "POL",
    "PT": "PRT", "RO": "ROU", "SE": "SWE", "SI": "SVN", "SK": "SVK", "SM": "SMR", "VA": "VAT",
    "US": "USA", "CA": "CAN", "AU": "AUS", "NZ": "NZL", "JP": "JPN", "CN": "CHN", "TR": "TUR",
    "UA": "UKR", "RS": "SRB", "BA": "BIH", "ME": "MNE", "MK": "MKD", "AL": "ALB", "IL": "ISR",
    "AE": "ARE", "SG": "SGP", "KR": "KOR", "IN": "IND", "BR": "BRA", "MX": "MEX", "ZA": "ZAF",
}  # fmt: skip

_TRACKING_STATES: Final[dict[str, TrackingState]] = {
    "pre-transit": "pre_transit",
    "transit": "transit",
    "delivered": "delivered",
    "failure": "failure",
}


class UnknownCountry(ValueError):
    pass


def alpha3(country: str) -> str:
    try:
        return ALPHA3[country.upper()]
    except KeyError:
        raise UnknownCountry(
            f'country "{country}" has no DHL country code in somsd; add it to adapters.dhl.mapping'
        ) from None


def _cut(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())  # no line breaks or tabs on a label
    return text[:limit] or None


def _names(party: Party) -> tuple[str, str | None]:
    """name1 is who the parcel is for; a company goes first, the person in name2 (DHL's rule
    for business addresses: the company is what the driver looks for on the door)."""
    if party.company:
        return _cut(party.company, 50) or "", _cut(party.name, 50)
    return _cut(party.name, 50) or "", None


def shipment(data: ShipmentData) -> Shipment:
    """One `Shipment` of `POST /orders`; raises `UnknownCountry`."""
    shipper_name1, shipper_name2 = _names(data.shipper)
    name1, name2 = _names(data.consignee)
    consignee = data.consignee
    return Shipment(
        product=data.product,
        billingNumber=data.billing_number,
        refNo=data.reference,
        shipDate=data.ship_date.isoformat(),
        shipper=Shipper(
            name1=shipper_name1,
            name2=shipper_name2,
            addressStreet=_cut(data.shipper.street, 50) or "",
            postalCode=_cut(data.shipper.zip, 10),
            city=_cut(data.shipper.city, 40) or "",
            country=alpha3(data.shipper.country),
            email=_cut(data.shipper.email, 80),
        ),
        consignee=ContactAddress(
            name1=name1,
            name2=name2,
            addressStreet=_cut(consignee.street, 50) or "",
            postalCode=_cut(consignee.zip, 10),
            city=_cut(consignee.city, 40) or "",
            country=alpha3(consignee.country),
            email=_cut(consignee.email, 80),
            phone=_cut(consignee.phone, 20),
        ),
        details=Details(weight=Weight(uom="g", value=data.weight_grams)),
    )


def order_request(data: ShipmentData, *, profile: str = DEFAULT_PROFILE) -> ShipmentOrderRequest:
    return ShipmentOrderRequest(profile=profile, shipments=(shipment(data),))


def query(data: ShipmentData, *, validate: bool) -> dict[str, str]:
    """`POST /orders` query: the label as a document in the answer, in the location's format."""
    params = {
        "docFormat": "ZPL2" if data.label_format == "zpl" else "PDF",
        "includeDocs": "include",
        "combine": "false",
    }
    if data.print_format:
        params["printFormat"] = data.print_format
    if validate:
        params["validate"] = "true"
    return params


def item_messages(item: ResponseItem) -> tuple[str, ...]:
    """An item's error messages as DHL words them, each with the field it names."""
    found = []
    for message in item.validationMessages:
        if (message.validationState or "Error").lower() != "error":
            continue
        text = message.validationMessage or "invalid"
        found.append(f"{message.property}: {text}" if message.property else text)
    if not found and item.sstatus.status not in (None, 200):
        found.append(item.sstatus.detail or item.sstatus.title or "refused")
    return tuple(found)


def item_label(item: ResponseItem, reference: str, label_format: LabelFormat) -> Label:
    """The label of a successful item; raises ValueError when DHL's answer lacks one."""
    if not item.shipmentNo:
        raise ValueError("the answer has no shipmentNo")
    document = item.label
    if document is None:
        raise ValueError(f"shipment {item.shipmentNo}: the answer has no label document")
    if label_format == "zpl":
        if not document.zpl2:
            raise ValueError(f"shipment {item.shipmentNo}: asked for ZPL2, got no zpl2 label")
        content = document.zpl2.encode()
    else:
        if not document.b64:
            raise ValueError(f"shipment {item.shipmentNo}: asked for PDF, got no b64 label")
        try:
            content = base64.b64decode(document.b64, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"shipment {item.shipmentNo}: the b64 label is not base64") from exc
    return Label(
        shipment_number=item.shipmentNo,
        reference=item.shipmentRefNo or reference,
        label_format=label_format,
        content=content,
        routing_code=item.routingCode,
    )


def tracking_status(found: TrackingShipment) -> TrackingStatus:
    status = found.status
    place = status.location.address.get("addressLocality", "") if status.location else ""
    at = None
    if status.timestamp:
        try:
            at = datetime.fromisoformat(status.timestamp)
        except ValueError:
            at = None
    return TrackingStatus(
        state=_TRACKING_STATES.get(status.statusCode, "unknown"),
        description=status.description or status.status or "",
        at=at if at is None or at.utcoffset() is not None else None,
        location=place,
    )


# -- the lookup after a lost answer (see adapters/dhl/PROTOCOL.md) -------------------------


class ReprintVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """What one `GET /orders?shipment=...` answer says about a reference.

    `found`: the item whose `shipmentRefNo` is the reference (the label bought under it).
    `unreadable`: shipment numbers DHL would not reprint (closed or deleted); their reference
    is unknown, so they keep "not bought" from being proven.
    `reprinted`: DHL reprinted at least one of them, so that shipment is still open (SPEC:
    only shipments "not yet closed" are reprinted) and the manifest it came from lists open
    shipments.
    """

    found: ResponseItem | None = None
    unreadable: tuple[str, ...] = ()
    reprinted: bool = False


def manifest_candidates(items: Sequence[ManifestItem], known: Collection[str]) -> list[str]:
    """The manifest's shipment numbers somsd holds no label for, in DHL's order, once each.

    Raises ValueError for an item without a shipment number: a list with a hole in it cannot
    prove that a label was not bought.
    """
    seen: set[str] = set()
    candidates: list[str] = []
    for index, item in enumerate(items):
        number = (item.shipmentNo or "").strip()
        if not number:
            raise ValueError(f"items[{index}] has no shipmentNo")
        if number in seen or number in known:
            continue
        seen.add(number)
        candidates.append(number)
    return candidates


def batches(numbers: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(numbers), size):
        yield numbers[start : start + size]


def match_reprint(
    asked: Sequence[str], items: Sequence[ResponseItem], reference: str
) -> ReprintVerdict:
    """Read a reprint answer: SPEC says `items` follow the request's order, one per shipment.

    Raises ValueError when the answer does not fit the question (another count, another
    shipment number in a place): such an answer is not evidence either way.
    """
    if len(items) != len(asked):
        raise ValueError(f"{len(items)} items for {len(asked)} shipments asked")
    found: ResponseItem | None = None
    unreadable: list[str] = []
    reprinted = False
    for index, (number, item) in enumerate(zip(asked, items, strict=True)):
        if item.shipmentNo and item.shipmentNo != number:
            raise ValueError(f"items[{index}] is shipment {item.shipmentNo}, asked for {number}")
        if item.sstatus.status not in (None, 200):
            unreadable.append(number)
            continue
        reprinted = reprinted or item.label is not None or item.sstatus.status == 200
        if item.shipmentRefNo == reference and found is None:
            # The first one: two labels under one reference would already be a duplicate, and
            # adopting either buys nothing more.
            found = msgspec.structs.replace(item, shipmentNo=number)
    return ReprintVerdict(found=found, unreadable=tuple(unreadable), reprinted=reprinted)
