"""The DHL Parcel DE client against the DHL simulator over real loopback HTTP."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import msgspec
import pytest

from adapters.carrier import Party, ShipmentData, ShipmentRefused
from adapters.dhl import DhlAuth, DhlClient
from adapters.dhl.mapping import order_request
from adapters.dhl.simulator import SHIPPING_PREFIX, DhlSimulator
from adapters.dhl.wire import LabelDataResponse
from adapters.errors import PermanentUpstreamError, TransientUpstreamError
from somsd.secrets import Secret
from tests.adapters.conftest import Serve

SENDER = Party(name="Lager Dortmund", company="Muster GmbH", street="Hafenstr. 1", zip="44147",
               city="Dortmund", country="DE")  # fmt: skip
RECEIVER = Party(name="Max Muster", street="Hauptstr. 1", zip="10115", city="Berlin", country="DE")


def shipment(reference: str = "f-0123456789", **changes: object) -> ShipmentData:
    data = ShipmentData(
        reference=reference,
        product="V01PAK",
        billing_number="33333333330102",
        shipper=SENDER,
        consignee=RECEIVER,
        weight_grams=1200,
        ship_date=datetime.now(UTC).date(),
    )
    return msgspec.structs.replace(data, **changes)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def client_for(
    serve: Serve, sim: DhlSimulator, http: httpx.AsyncClient, *, mode: str = "basic"
) -> DhlClient:
    url, _ = await serve(sim)
    return DhlClient(
        http,
        system="carrier/dhl",
        shipping_url=url + SHIPPING_PREFIX,
        tracking_url=url + "/track",
        auth=DhlAuth(
            api_key=Secret(sim.api_key),
            mode=mode,
            user=sim.user,
            password=Secret(sim.password),
            client_secret=Secret("unused"),
        ),
    )


async def test_a_label_is_bought_as_pdf_and_as_zpl(serve: Serve, http: httpx.AsyncClient) -> None:
    """PDF labels arrive as real PDF bytes, ZPL labels as one ^XA...^XZ with the barcode."""
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    pdf = await client.create_label(shipment("f-pdf-000001"))
    assert pdf.content.startswith(b"%PDF-")
    zpl = await client.create_label(shipment("f-zpl-000001", label_format="zpl"))
    text = zpl.content.decode()
    assert text.startswith("^XA")
    assert text.rstrip().endswith("^XZ")
    assert f"^FD{zpl.shipment_number}^FS" in text
    assert sim.created == 2
    assert zpl.routing_code


async def test_validation_is_a_dry_run_with_dhls_messages(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    """validate=true buys nothing; a street without a number comes back in DHL's words."""
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    assert await client.validate(shipment()) == ()
    bad = msgspec.structs.replace(RECEIVER, street="Hauptstrasse")
    messages = await client.validate(shipment(consignee=bad))
    assert messages == ("consignee.addressStreet: Please enter a house number for the street.",)
    assert sim.created == 0
    with pytest.raises(ShipmentRefused) as refused:
        await client.create_label(shipment(consignee=bad))
    assert "house number" in refused.value.messages[0]


async def test_a_lost_answer_is_found_by_reference_not_bought_again(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    sim.knobs.lose_next = 1
    with pytest.raises(TransientUpstreamError):
        await client.create_label(shipment("f-lost-00001", label_format="zpl"))
    assert sim.created == 1  # DHL bought it; we never heard
    found = await client.find_by_reference(shipment("f-lost-00001", label_format="zpl"))
    assert found is not None
    assert found.reference == "f-lost-00001"
    assert found.content.startswith(b"^XA")
    assert await client.find_by_reference(shipment("f-never-0001", label_format="zpl")) is None
    assert sim.created == 1


async def test_rate_limits_and_server_errors_are_transient(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    sim.knobs.fail_next = [429, 503]
    with pytest.raises(TransientUpstreamError) as limited:
        await client.create_label(shipment())
    assert limited.value.retry_after == 1.0
    with pytest.raises(TransientUpstreamError):
        await client.create_label(shipment())
    assert sim.created == 0
    await client.create_label(shipment())


async def test_wrong_credentials_are_permanent(serve: Serve, http: httpx.AsyncClient) -> None:
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    sim.password = "changed"
    with pytest.raises(PermanentUpstreamError) as refused:
        await client.create_label(shipment())
    assert refused.value.status_code == 401


async def test_oauth_gets_a_token_once(serve: Serve, http: httpx.AsyncClient) -> None:
    sim = DhlSimulator()
    client = await client_for(serve, sim, http, mode="oauth")
    await client.create_label(shipment("f-oauth-0001"))
    await client.create_label(shipment("f-oauth-0002"))
    assert len(sim._tokens) == 1


async def test_mixed_results_are_207_per_item(serve: Serve, http: httpx.AsyncClient) -> None:
    """Two shipments, one bad: 207, each item with its own status, items in request order."""
    sim = DhlSimulator()
    url, _ = await serve(sim)
    good = order_request(shipment("f-multi-0001")).shipments[0]
    wrong_zip = msgspec.structs.replace(RECEIVER, zip="1011")
    bad = order_request(shipment("f-multi-0002", consignee=wrong_zip)).shipments[0]
    body = {"profile": "STANDARD_GRUPPENPROFIL", "shipments": [good, bad]}
    auth = base64.b64encode(f"{sim.user}:{sim.password}".encode()).decode()
    response = await http.post(
        url + SHIPPING_PREFIX + "/orders",
        content=msgspec.json.encode(body),
        headers={"dhl-api-key": sim.api_key, "Authorization": f"Basic {auth}"},
    )
    assert response.status_code == 207
    answer = msgspec.json.decode(response.content, type=LabelDataResponse)
    assert [item.sstatus.status for item in answer.items] == [200, 400]
    assert answer.items[0].shipmentRefNo == "f-multi-0001"
    assert sim.created == 1


async def test_cancel_and_tracking_follow_the_simulators_clock(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    label = await client.create_label(shipment())
    assert (await client.track(label.shipment_number)).state == "pre_transit"
    sim.advance(sim.knobs.transit_after)
    assert (await client.track(label.shipment_number)).state == "transit"
    sim.advance(sim.knobs.deliver_after)
    assert (await client.track(label.shipment_number)).state == "delivered"
    failing = await client.create_label(shipment("f-fail-00001"))
    sim.knobs.failing.add(failing.shipment_number)
    sim.advance(sim.knobs.deliver_after)
    assert (await client.track(failing.shipment_number)).state == "failure"
    await client.cancel(failing.shipment_number)
    with pytest.raises(ShipmentRefused):
        await client.cancel(failing.shipment_number)
    assert (await client.track("00340434999999999999")).state == "unknown"
