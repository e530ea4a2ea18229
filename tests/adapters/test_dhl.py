"""The DHL Parcel DE client against the DHL simulator over real loopback HTTP."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest

from adapters.carrier import LabelLookupInconclusive, Party, ShipmentData, ShipmentRefused
from adapters.dhl import DhlAuth, DhlClient
from adapters.dhl.mapping import order_request
from adapters.dhl.simulator import SHIPPING_PREFIX, DhlKnobs, DhlSimulator
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


async def lost(client: DhlClient, sim: DhlSimulator, data: ShipmentData) -> None:
    """Buy a label whose answer DHL loses after it acted."""
    sim.knobs.lose_next = 1
    with pytest.raises(TransientUpstreamError):
        await client.create_label(data)


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
    await lost(client, sim, shipment("f-lost-00001", label_format="zpl"))
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


# -- the lookup after a lost answer: every way it must not answer "not bought" ------------------

OTHER_BILLING = "33333333330103"  # the same account's V01PAK, another participation


def reprint_calls(sim: DhlSimulator) -> int:
    return sim.requests.count(("GET", "/orders"))


async def test_not_found_needs_an_open_shipment_on_the_manifest(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    """An empty manifest proves nothing (DHL may list closed shipments only); one of somsd's
    own labels that DHL still reprints proves that open ones are listed."""
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    with pytest.raises(LabelLookupInconclusive) as unproven:
        await client.find_by_reference(shipment("f-nothing-01", label_format="zpl"))
    assert "f-nothing-01" in str(unproven.value)
    ours = await client.create_label(shipment("f-ours-00001", label_format="zpl"))
    found = await client.find_by_reference(
        shipment("f-nothing-01", label_format="zpl"), known={ours.shipment_number}
    )
    assert found is None
    assert sim.created == 1


async def test_when_the_manifest_lists_closed_shipments_only_a_lost_label_is_never_rebought(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    """The SPEC's other reading: an open label is not on the manifest. The lookup must then
    say "cannot tell", never None; after close-out the lost label is listed but no longer
    reprinted, which is permanent (the operator checks DHL's portal)."""
    sim = DhlSimulator(knobs=DhlKnobs(manifest_lists_open=False))
    client = await client_for(serve, sim, http)
    ours = await client.create_label(shipment("f-ours-00001", label_format="zpl"))
    await lost(client, sim, shipment("f-lost-00001", label_format="zpl"))
    known = {ours.shipment_number}
    with pytest.raises(LabelLookupInconclusive):
        await client.find_by_reference(shipment("f-lost-00001", label_format="zpl"), known=known)
    sim.close_out()
    with pytest.raises(PermanentUpstreamError) as closed:
        await client.find_by_reference(shipment("f-lost-00001", label_format="zpl"), known=known)
    assert "no longer reprints 1 shipment" in str(closed.value)
    assert sim.created == 2


async def test_unknown_shipments_are_reprinted_thirty_a_call(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    for n in range(64):
        await client.create_label(shipment(f"f-other-{n:04d}", label_format="zpl"))
    await lost(client, sim, shipment("f-lost-00001", label_format="zpl"))
    before = reprint_calls(sim)
    found = await client.find_by_reference(shipment("f-lost-00001", label_format="zpl"))
    assert found is not None
    assert found.reference == "f-lost-00001"
    assert reprint_calls(sim) - before == 3  # 65 unknown: 30 + 30 + 5
    before = reprint_calls(sim)
    assert await client.find_by_reference(shipment("f-never-0001", label_format="zpl")) is None
    assert reprint_calls(sim) - before == 3
    assert sim.created == 65


async def test_the_shipments_somsd_knows_are_not_reprinted(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    known = {
        (
            await client.create_label(shipment(f"f-known-{n:04d}", label_format="zpl"))
        ).shipment_number
        for n in range(40)
    }
    before = reprint_calls(sim)
    assert await client.find_by_reference(shipment("f-never-0001"), known=known) is None
    assert reprint_calls(sim) - before == 1  # nothing unknown: one call proves the listing open


async def test_a_manifest_with_more_unknown_shipments_than_one_lookup_reads_is_permanent(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    for n in range(301):
        await client.create_label(shipment(f"f-other-{n:04d}", label_format="zpl"))
    before = reprint_calls(sim)
    with pytest.raises(PermanentUpstreamError) as too_many:
        await client.find_by_reference(shipment("f-lost-00001", label_format="zpl"))
    assert "301 shipments" in str(too_many.value)
    assert "f-lost-00001" in str(too_many.value)
    assert reprint_calls(sim) == before


async def test_a_malformed_manifest_proves_nothing(serve: Serve, http: httpx.AsyncClient) -> None:
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    ours = await client.create_label(shipment("f-ours-00001", label_format="zpl"))
    sim.knobs.garble_manifest_next = 1
    with pytest.raises(TransientUpstreamError) as garbled:
        await client.find_by_reference(shipment("f-lost-00001"), known={ours.shipment_number})
    assert not isinstance(garbled.value, LabelLookupInconclusive)
    assert "unreadable answer" in str(garbled.value)
    assert (
        await client.find_by_reference(shipment("f-lost-00001"), known={ours.shipment_number})
        is None
    )


async def test_a_label_of_another_day_or_billing_number_is_never_adopted(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    """The reference is ours, but the label was bought for tomorrow or on another billing
    number: today's manifest of this billing number does not list it, so it is not the one
    the lookup is asked about."""
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    today = datetime.now(UTC).date()
    ours = await client.create_label(shipment("f-ours-00001", label_format="zpl"))
    await lost(client, sim, shipment("f-lost-00001", ship_date=today + timedelta(days=1)))
    await lost(client, sim, shipment("f-lost-00001", billing_number=OTHER_BILLING))
    assert sim.created == 3
    known = {ours.shipment_number}
    assert await client.find_by_reference(shipment("f-lost-00001"), known=known) is None
    found = await client.find_by_reference(
        shipment("f-lost-00001", billing_number=OTHER_BILLING), known=known
    )
    assert found is not None
    assert sim.shipments[found.shipment_number].billing_number == OTHER_BILLING


async def test_closed_shipments_on_the_manifest_keep_the_reference_open(
    serve: Serve, http: httpx.AsyncClient
) -> None:
    """After the day's close-out nothing can be reprinted: a listed shipment somsd does not
    know may carry the reference, so the lookup is permanent, naming it."""
    sim = DhlSimulator()
    client = await client_for(serve, sim, http)
    stranger = await client.create_label(shipment("f-stranger-1", label_format="zpl"))
    sim.close_out()
    with pytest.raises(PermanentUpstreamError) as closed:
        await client.find_by_reference(shipment("f-lost-00001"))
    assert stranger.shipment_number in str(closed.value)
    assert "f-lost-00001" in str(closed.value)
