"""`OwnFleetCarrier`: parcels the retailer's own drivers deliver; somsd draws the label itself.

There is no carrier system to ask, so the carrier protocol (`adapters.carrier`) is answered
locally: `validate` accepts what intake's own address rules accepted, `create_label` draws a
4x6 label (ZPL with our builder, or a reportlab PDF) whose shipment number is derived from the
reference, so drawing it twice - after a crash between drawing and recording - gives the same
label, never a second parcel number. Nothing is cancelled or tracked upstream: delivery is
what the drivers report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

import trio

from adapters.carrier import Label, Party, ShipmentData, TrackingStatus
from adapters.labels import parcel_label_pdf, parcel_label_zpl

__all__ = ["OwnFleetCarrier", "own_fleet_number"]


def own_fleet_number(reference: str) -> str:
    """A 16-digit parcel number, the same for the same reference."""
    digest = hashlib.sha256(reference.encode()).digest()
    return "9" + str(int.from_bytes(digest[:8], "big") % 10**15).zfill(15)


def _lines(party: Party) -> list[str]:
    return [
        *([party.company] if party.company else []),
        party.name,
        party.street,
        f"{party.zip} {party.city}",
        party.country,
    ]


class OwnFleetCarrier:
    def __init__(self, *, system: str, title: str = "Own delivery") -> None:
        self.system = system
        self.title = title

    async def validate(self, shipment: ShipmentData) -> tuple[str, ...]:
        return ()

    async def create_label(self, shipment: ShipmentData) -> Label:
        number = own_fleet_number(shipment.reference)
        sender, receiver = _lines(shipment.shipper), _lines(shipment.consignee)
        if shipment.label_format == "zpl":
            content = parcel_label_zpl(
                carrier=self.title,
                tracking_number=number,
                sender=sender,
                receiver=receiver,
                reference=shipment.reference,
                weight_grams=shipment.weight_grams,
            ).encode()
        else:
            content = await trio.to_thread.run_sync(
                lambda: parcel_label_pdf(
                    carrier=self.title,
                    tracking_number=number,
                    sender=sender,
                    receiver=receiver,
                    reference=shipment.reference,
                    weight_grams=shipment.weight_grams,
                )
            )
        return Label(
            shipment_number=number,
            reference=shipment.reference,
            label_format=shipment.label_format,
            content=content,
        )

    async def find_by_reference(
        self, shipment: ShipmentData, *, known: Collection[str] = ()
    ) -> Label | None:
        return None  # drawn locally: drawing again gives the same number

    async def cancel(self, shipment_number: str) -> None:
        return None

    async def track(self, shipment_number: str) -> TrackingStatus:
        return TrackingStatus(state="unknown", description="own fleet: the drivers report")
