"""Pure label and shipment code: ZPL escaping, parcel weights, DHL request mapping."""

from __future__ import annotations

import re
from datetime import date

import trio
from hypothesis import given
from hypothesis import strategies as st

from adapters.carrier import MAX_PARCEL_GRAMS, Party, ShipmentData, parcel_weight_grams
from adapters.dhl.mapping import ALPHA3, shipment
from adapters.labels import ZplLabel, escape_field, parcel_label_zpl, unescape_field
from adapters.labels.printer import PrinterAddress

FIELD = re.compile(r"\^FH_\^FD(.*?)\^FS", re.DOTALL)


@given(st.text())
def test_escaped_field_data_round_trips_and_holds_no_command(text: str) -> None:
    escaped = escape_field(text)
    assert unescape_field(escaped) == text
    assert "^" not in escaped
    assert "~" not in escaped
    assert all(0x20 <= ord(c) < 0x7F for c in escaped)


@given(st.text(), st.text(min_size=1, alphabet="0123456789"))
def test_a_hostile_name_cannot_end_the_label(name: str, number: str) -> None:
    """Whatever the receiver is called, the label is one ^XA..^XZ with every field intact."""
    zpl = parcel_label_zpl(carrier="Own fleet", tracking_number=number, sender=["A"],
                           receiver=[name, "^XZ~JA"])  # fmt: skip
    assert zpl.count("^XA") == 1
    assert zpl.count("^XZ") == 1
    fields = [unescape_field(f) for f in FIELD.findall(zpl)]
    assert name in fields
    assert "^XZ~JA" in fields
    assert number in fields


def test_the_builder_writes_page_size_and_code_128() -> None:
    zpl = ZplLabel().code128(10, 20, "00340434000000000001").render()
    assert zpl.startswith("^XA\n^CI28\n^PW812\n^LL1218\n")
    assert "^BCN,120,Y,N,N,N^FH_^FD00340434000000000001^FS" in zpl


lines = st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(1, 50)), max_size=6)
weights = st.dictionaries(st.sampled_from(["A", "B"]), st.integers(1, 5000))


@given(lines, weights, st.integers(1, 31500))
def test_parcel_weight(found: list[tuple[str, int]], known: dict[str, int], default: int) -> None:
    grams = parcel_weight_grams(found, known, default)
    weighed = [(q, known[s]) for s, q in found if s in known]
    expected = sum(q * w for q, w in weighed) if weighed else default
    assert grams == max(1, min(expected, MAX_PARCEL_GRAMS))
    assert 1 <= grams <= MAX_PARCEL_GRAMS


text = st.text(min_size=1, max_size=120)


@given(
    text, text, st.text(max_size=20), text, st.sampled_from(sorted(ALPHA3)), st.integers(1, 31500)
)
def test_dhl_mapping_keeps_limits(  # noqa: PLR0917  # one argument per strategy
    name: str, street: str, zip_code: str, city: str, country: str, grams: int
) -> None:
    """Whatever the order says, DHL's field limits hold and countries are alpha-3."""
    party = Party(name=name, company=None, street=street, zip=zip_code, city=city, country=country)
    mapped = shipment(
        ShipmentData(
            reference="f-0123456789",
            product="V01PAK",
            billing_number="33333333330102",
            shipper=party,
            consignee=party,
            weight_grams=grams,
            ship_date=date(2026, 12, 7),
        )
    )
    consignee = mapped.consignee
    assert len(consignee.name1) <= 50
    assert len(consignee.addressStreet) <= 50
    assert len(consignee.city) <= 40
    assert len(consignee.postalCode or "") <= 10
    assert consignee.country == ALPHA3[country]
    assert len(consignee.country) == 3
    assert "\n" not in consignee.name1
    assert mapped.details.weight.value == grams
    assert mapped.shipDate == "2026-12-07"


def test_printer_addresses() -> None:
    assert PrinterAddress.parse("tcp://zebra-1:9100") == PrinterAddress("zebra-1", 9100)
    assert PrinterAddress.parse("tcp://10.0.0.7") == PrinterAddress("10.0.0.7", 9100)
    assert PrinterAddress.parse("tcp://[::1]:9101") == PrinterAddress("::1", 9101)


async def test_the_printer_simulator_keeps_each_job_and_bounds_its_size(
    nursery: trio.Nursery,
) -> None:
    from adapters.labels.simulator import ZebraSimulator

    printer = ZebraSimulator(max_job_bytes=1000)
    await nursery.start(printer.serve)
    for sent, job in enumerate((b"^XA^FDsmall^FS^XZ", b"x" * 5000), start=1):
        stream = await trio.open_tcp_stream("127.0.0.1", printer.port)
        async with stream:
            await stream.send_all(job)
        with trio.fail_after(5):
            while len(printer.jobs) < sent:
                await printer.changed.wait()
    assert printer.jobs == [b"^XA^FDsmall^FS^XZ", b"x" * 1000]
    assert printer.truncated == 1
