"""The `csv` location adapter: pure parsing and formatting, then the folders for real.

Parsing tests are plain functions. Folder tests use pytest's `tmp_path` and real worker
threads (`trio.to_thread`), so they run on the real clock; the warehouse simulator round trip
uses steps of a few milliseconds under a bound of seconds.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from adapters.csvfiles import (
    CsvLocation,
    CsvWarehouseSimulator,
    FulfillmentFile,
    FulfillmentRow,
    MalformedFile,
    StatusFile,
    StatusRow,
    StockFile,
    format_fulfillment,
    format_status,
    fulfillment_file,
    parse_fulfillment,
    parse_inbound,
    parse_status,
    parse_stock,
    stock_reports,
)
from adapters.errors import PermanentUpstreamError, TransientUpstreamError
from somsd.domain.atp import StockCount
from somsd.domain.order import Address
from somsd.domain.routing import Allocation, OrderLine
from somsd.domain.testing import sample_line, sample_order

BUDGET = 5.0  # real threads and real files; the round trip takes well under a second

STATUS_HEADER = "fulfillment_id;status;at;sku;quantity;reason;carrier;tracking_number\r\n"
FULFILMENT = FulfillmentFile(
    fulfillment_id="ful-7",
    order_ref="1042",
    mode="ship",
    name="Jürgen Weiß",
    company="Muster GmbH; Lager",  # a delimiter inside a value must survive quoting
    street="Hauptstr. 1, Hinterhaus",
    zip="10115",
    city="Berlin",
    country="DE",
    lines=(FulfillmentRow(sku="MUG-1", quantity=2), FulfillmentRow(sku="TEE-M", quantity=1)),
)


# -- pure: formats -------------------------------------------------------------------------------


def test_fulfilment_file_round_trips_with_quoting() -> None:
    """Umlauts, delimiters and commas inside values come back exactly as written."""
    text = format_fulfillment(FULFILMENT)
    assert text.splitlines()[0] == (
        "fulfillment_id;order_ref;mode;sku;quantity;name;company;street;zip;city;country"
    )
    assert len(text.splitlines()) == 3  # header + one row per line
    assert parse_fulfillment(text) == FULFILMENT


def test_status_rows_parse_with_line_numbers_for_bad_rows() -> None:
    """Good rows count; each bad row is reported with its line (header = 1) and its problem."""
    text = (
        "\ufeff"  # Excel's byte-order mark
        + STATUS_HEADER
        + "ful-1;picked;2026-11-21T10:00:00+01:00;;;;;\r\n"
        + "ful-1;shipped;2026-11-21T11:00:00Z;;;;;\r\n"  # line 3: no carrier/tracking
        + "ful-2;rejected;2026-11-21T11:00:00Z;MUG-1;zwei;out_of_stock;;\r\n"  # line 4
        + "\r\n"  # blank lines are skipped, but still counted
        + "ful-3;packed;gestern;;;;;\r\n"  # line 6
        + "ful-4;packed;2026-11-21T12:00:00Z;MUG-1;;;;\r\n"  # line 7: stray sku
        + "ful-5;lost;2026-11-21T12:00:00Z;;;;;\r\n"  # line 8
        + "ful-6;packed;2026-11-21T12:00:00Z;;;\r\n"  # line 9: too few fields
        + "ful-2;rejected;2026-11-21T11:00:00Z;MUG-1;2;damaged;;\r\n"
        + "ful-1;shipped;2026-11-21T13:00:00Z;;;;dhl;00340434000000000001\r\n"
    )
    parsed = parse_status(text.removeprefix("\ufeff"))
    assert [(row.fulfillment_id, row.status) for row in parsed.rows] == [
        ("ful-1", "picked"),
        ("ful-2", "rejected"),
        ("ful-1", "shipped"),
    ]
    assert parsed.rows[1].quantity == 2
    assert parsed.rows[1].reason == "damaged"
    assert parsed.rows[2].tracking_number == "00340434000000000001"
    assert [(p.line, p.message) for p in parsed.problems] == [
        (3, "carrier is empty"),
        (4, 'quantity "zwei" is not a whole number'),
        (6, 'at "gestern" is not an ISO 8601 time like 2026-11-21T10:00:00+01:00'),
        (7, "sku only belong on rejected rows, not on packed"),
        (8, 'status "lost" is not one of accepted, packed, picked, picked_up, '
         "ready_for_pickup, rejected, shipped"),
        (9, "has 6 fields, the header has 8 (a ';' inside a value must be quoted)"),
    ]  # fmt: skip
    # Through the byte path the BOM is accepted too.
    assert isinstance(parse_inbound("status-1.csv", text.encode()), StatusFile)


def test_times_without_offset_are_refused() -> None:
    """A local time without offset is ambiguous across the DST switch, so it is a bad row."""
    parsed = parse_stock("sku;on_hand;as_of\nMUG-1;4;2026-11-21T10:00:00\n")
    assert parsed.rows == ()
    assert "needs a UTC offset" in parsed.problems[0].message


def test_header_without_required_columns_makes_the_whole_file_malformed() -> None:
    """A file with comma separators or a missing column cannot be read row by row."""
    with pytest.raises(MalformedFile, match="header lacks sku, on_hand, as_of"):
        parse_stock("sku,on_hand,as_of\nMUG-1,4,2026-11-21T10:00:00Z\n")
    with pytest.raises(MalformedFile, match="not UTF-8"):
        parse_inbound("stock-1.csv", "sku;on_hand;as_of\nMÜG;1;x\n".encode("latin-1"))
    with pytest.raises(MalformedFile, match="unknown file kind"):
        parse_inbound("orders.csv", b"a;b\n")


def test_stock_file_is_one_complete_report_only_without_bad_rows() -> None:
    """A quarantined row's SKU is missing by accident, so such a report is not complete."""
    clean = StockFile(
        name="stock-1.csv",
        parsed=parse_stock(
            "sku;on_hand;as_of\nMUG-1;4;2026-11-21T10:00:00Z\nTEE-M;-1;2026-11-21T10:00:00Z\n"
        ),
    )
    [report] = stock_reports("wh-essen", clean)
    assert report.complete
    assert report.counts == (StockCount("MUG-1", 4), StockCount("TEE-M", -1))
    assert report.as_of == datetime(2026, 11, 21, 10, tzinfo=UTC)

    damaged = StockFile(
        name="stock-2.csv",
        parsed=parse_stock(
            "sku;on_hand;as_of\nMUG-1;4;2026-11-21T10:00:00Z\nTEE-M;viele;2026-11-21T10:00:00Z\n"
        ),
    )
    [partial] = stock_reports("wh-essen", damaged)
    assert not partial.complete
    assert partial.counts == (StockCount("MUG-1", 4),)


def test_fulfilment_file_follows_the_allocation() -> None:
    """Ship goes to the shipping address, pickup names the customer, transfer the store."""
    order = sample_order(lines=[sample_line("MUG-1", 2), sample_line("TEE-M", 1, "19.90")])
    ship = Allocation(location="wh", kind="ship", lines=(OrderLine("MUG-1", 2),))
    shipped = fulfillment_file("ful-1", order, ship)
    assert (shipped.mode, shipped.city, shipped.lines) == (
        "ship",
        "Berlin",
        (FulfillmentRow(sku="MUG-1", quantity=2),),
    )
    store = Address(name="Filiale Essen", street="Kettwiger Str. 1", zip="45127", city="Essen",
                    country="DE")  # fmt: skip
    transfer = Allocation(
        location="wh", kind="transfer", lines=(OrderLine("TEE-M", 1),), deliver_to="store-essen"
    )
    moved = fulfillment_file("ful-2", order, transfer, store_address=store)
    assert (moved.mode, moved.name, moved.city) == ("ship", "Filiale Essen", "Essen")
    with pytest.raises(ValueError, match="store_address"):
        fulfillment_file("ful-3", order, transfer)


# -- folders -------------------------------------------------------------------------------------


@pytest.fixture
def location(tmp_path: Path) -> CsvLocation:
    (tmp_path / "out").mkdir()
    (tmp_path / "in").mkdir()
    return CsvLocation(outbound=tmp_path / "out", inbound=tmp_path / "in", system="wh-csv")


async def test_fulfilment_is_written_atomically_and_replaced_on_retry(
    location: CsvLocation,
) -> None:
    """Only the finished file is ever visible, and a retry replaces it instead of adding one."""
    path = await location.send_fulfillment(FULFILMENT)
    assert path == location.outbound / "fulfillment-ful-7.csv"
    assert parse_fulfillment(path.read_text()) == FULFILMENT
    umask = os.umask(0o022)
    os.umask(umask)
    # Readable as the umask allows (the WMS often reads the share as another user).
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    await location.send_fulfillment(FULFILMENT)
    assert sorted(p.name for p in location.outbound.iterdir()) == ["fulfillment-ful-7.csv"]


async def test_failed_write_leaves_no_file_and_no_temp(
    location: CsvLocation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails before the rename leaves neither a partial file nor a temp file."""

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")  # ENOSPC

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(TransientUpstreamError, match="No space left"):
        await location.send_fulfillment(FULFILMENT)
    assert list(location.outbound.iterdir()) == []


async def test_unwritable_folder_is_permanent(tmp_path: Path) -> None:
    """A folder that is a file (or lacks permission) will not fix itself: dead-letter it."""
    (tmp_path / "not-a-folder").write_text("")
    location = CsvLocation(outbound=tmp_path / "not-a-folder", inbound=tmp_path, system="wh-csv")
    with pytest.raises(PermanentUpstreamError, match="not a folder"):
        await location.send_fulfillment(FULFILMENT)


async def test_inbound_files_are_processed_once_and_bad_rows_quarantined(
    location: CsvLocation,
) -> None:
    """Good rows of a file with bad rows still count; the bad ones wait in quarantine with
    their line numbers; a processed file is never read again."""
    inbound = location.inbound
    (inbound / "status-0001.csv").write_text(
        STATUS_HEADER
        + "ful-1;picked;2026-11-21T10:00:00Z;;;;;\n"
        + "ful-1;packed;kaputt;;;;;\n"
        + "ful-1;shipped;2026-11-21T11:00:00Z;;;;dhl;00340434000000000001\n"
    )
    (inbound / "stock-0002.csv").write_text("sku;on_hand;as_of\nMUG-1;4;2026-11-21T10:00:00Z\n")
    (inbound / ".status-0003.csv.tmp").write_text("still being written")
    (inbound / "notes.txt").write_text("not ours")

    files = await location.read_inbound()
    assert [f.name for f in files] == ["status-0001.csv", "stock-0002.csv"]
    status, stock = files
    assert isinstance(status, StatusFile)
    assert isinstance(stock, StockFile)
    assert [row.status for row in status.parsed.rows] == ["picked", "shipped"]

    quarantine = inbound / "quarantine"
    [reason_file] = quarantine.glob("status-0001.*.reason.txt")
    assert reason_file.read_text() == (
        'status-0001.csv line 3: at "kaputt" is not an ISO 8601 time like '
        "2026-11-21T10:00:00+01:00\n"
    )
    [rows_file] = quarantine.glob("status-0001.*.rejected.csv")
    assert rows_file.read_text().splitlines() == [STATUS_HEADER.strip(), "ful-1;packed;kaputt;;;;;"]

    for file in files:
        await location.mark_processed(file)
    assert await location.read_inbound() == []
    assert sorted(p.name for p in (inbound / "processed").iterdir()) == [
        "status-0001.csv",
        "stock-0002.csv",
    ]
    # Untouched: a sender's temp file and a file that is not CSV.
    assert (inbound / ".status-0003.csv.tmp").exists()
    assert (inbound / "notes.txt").exists()


async def test_reused_file_name_does_not_overwrite_processed_evidence(
    location: CsvLocation,
) -> None:
    """A sender writing stock.csv every hour gets stock.csv, stock.1.csv, ... in processed/."""
    for count in (4, 3):
        (location.inbound / "stock.csv").write_text(
            f"sku;on_hand;as_of\nMUG-1;{count};2026-11-21T1{count}:00:00Z\n"
        )
        [file] = await location.read_inbound()
        await location.mark_processed(file)
    processed = location.inbound / "processed"
    assert sorted(p.name for p in processed.iterdir()) == ["stock.1.csv", "stock.csv"]
    assert "MUG-1;3" in (processed / "stock.1.csv").read_text()


async def test_unreadable_file_is_quarantined_whole(location: CsvLocation) -> None:
    """A file with a wrong header is not returned; it moves to quarantine with its reason."""
    (location.inbound / "stock-9.csv").write_text("artikel,bestand\nMUG-1,4\n")
    assert await location.read_inbound() == []
    quarantine = location.inbound / "quarantine"
    assert (quarantine / "stock-9.csv").exists()
    assert "header lacks sku, on_hand, as_of" in (quarantine / "stock-9.csv.reason.txt").read_text()
    assert not (location.inbound / "stock-9.csv").exists()


async def test_warehouse_simulator_round_trip(location: CsvLocation) -> None:
    """A fulfilment file written by the adapter comes back as status files up to shipped,
    with short stock rejected and a stock file after the shipment."""
    warehouse = CsvWarehouseSimulator(
        outbound=location.outbound,
        inbound=location.inbound,
        step_delay=0.005,
        poll_interval=0.005,
        stock={"MUG-1": 1, "TEE-M": 5},
    )
    statuses: list[StatusRow] = []
    stock_files: list[StockFile] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(warehouse.run)
        await location.send_fulfillment(FULFILMENT)
        with trio.fail_after(BUDGET):
            while not stock_files:
                for file in await location.read_inbound():
                    if isinstance(file, StatusFile):
                        statuses.extend(file.parsed.rows)
                    else:
                        stock_files.append(file)
                    await location.mark_processed(file)
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()

    assert warehouse.taken == ["ful-7"]
    assert (location.outbound / "taken" / "fulfillment-ful-7.csv").exists()
    assert [(row.status, row.sku, row.quantity) for row in statuses] == [
        ("accepted", None, None),
        ("picked", None, None),
        ("rejected", "MUG-1", 1),
        ("packed", None, None),
        ("shipped", None, None),
    ]
    assert statuses[-1].carrier == "dhl"
    [report] = stock_reports("wh-csv", stock_files[0])
    assert report.counts == (StockCount("MUG-1", 0), StockCount("TEE-M", 4))


def test_status_rows_format_and_parse_back() -> None:
    """What the simulator writes is what the adapter reads."""
    rows = [
        StatusRow(fulfillment_id="f", status="picked", at=datetime(2026, 1, 1, tzinfo=UTC)),
        StatusRow(
            fulfillment_id="f",
            status="rejected",
            at=datetime(2026, 1, 1, tzinfo=UTC),
            sku="MUG-1",
            quantity=1,
            reason="damaged",
        ),
    ]
    parsed = parse_status(format_status(rows))
    assert list(parsed.rows) == rows
    assert parsed.problems == ()


async def test_garbled_status_rows_from_the_warehouse_are_quarantined(
    location: CsvLocation,
) -> None:
    """With bad_row_rate the warehouse adds a broken row to every status file; the adapter
    still reads the good statuses and quarantines the broken rows with their line numbers."""
    warehouse = CsvWarehouseSimulator(
        outbound=location.outbound,
        inbound=location.inbound,
        step_delay=0.005,
        poll_interval=0.005,
        bad_row_rate=1.0,
    )
    statuses: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(warehouse.run)
        await location.send_fulfillment(FULFILMENT)
        with trio.fail_after(BUDGET):
            while "shipped" not in statuses:
                for file in await location.read_inbound():
                    assert isinstance(file, StatusFile)
                    statuses.extend(row.status for row in file.parsed.rows)
                    assert [p.line for p in file.parsed.problems] == [3]
                    await location.mark_processed(file)
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    assert statuses == ["accepted", "picked", "packed", "shipped"]
    reasons = sorted((location.inbound / "quarantine").glob("*.reason.txt"))
    assert len(reasons) == 4
    assert "line 3: fulfillment_id is empty" in reasons[0].read_text()
