"""DATEV Buchungsstapel per booking day: which day an approval belongs to (the cutoff in the
shop's time zone), one file per fiscal year, the lines read back as written, and a real
`somsd run` killed with SIGKILL while a day's batch is decided and written: afterwards each
invoice is in exactly one batch file exactly once and no file was ever partial."""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from somsd.supplier_invoices.datev import (
    DatevBatch,
    DatevBooking,
    batch_parts,
    booking_day,
    datev_csv,
    day_end,
    day_start,
    fiscal_year_start,
    header,
    parse_amount,
    rows,
)
from tests.harness import running_daemon
from tests.supplier_invoices.corpus import ITEMS, SUPPLIERS, make_invoice, orders_for, render
from tests.supplier_invoices.daemon_setup import inbox_config, wait_status, write_master_data
from tests.supplier_invoices.test_daemon import audit_verify

BERLIN = ZoneInfo("Europe/Berlin")
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)
cutoffs = st.times().map(lambda t: t.replace(microsecond=0))


@given(instants, cutoffs)
def test_every_instant_lies_in_the_window_of_its_booking_day(at: datetime, cutoff: time) -> None:
    day = booking_day(at, cutoff, BERLIN)
    assert day_start(day, cutoff, BERLIN) <= at < day_end(day, cutoff, BERLIN)


def test_the_cutoff_moves_late_approvals_to_the_next_day() -> None:
    evening = datetime(2026, 12, 7, 17, 59, 59, tzinfo=BERLIN)
    assert booking_day(evening, time(18), BERLIN) == date(2026, 12, 7)
    assert booking_day(evening + timedelta(seconds=1), time(18), BERLIN) == date(2026, 12, 8)
    # Midnight (the default): the calendar day of the shop, not of UTC.
    assert booking_day(datetime(2026, 12, 7, 23, 30, tzinfo=UTC), time(0), BERLIN) == date(
        2026, 12, 8
    )
    assert day_end(date(2026, 12, 7), time(0), BERLIN) == datetime(2026, 12, 7, 23, tzinfo=UTC)
    assert day_end(date(2026, 12, 7), time(18), BERLIN) == datetime(2026, 12, 7, 17, tzinfo=UTC)


def _booking(on: date, number: str, amount: str = "119.00", text: str = "Papier") -> DatevBooking:
    return DatevBooking(
        amount=Decimal(amount),
        side="S",
        currency="EUR",
        account="3400",
        contra_account="70001",
        tax_code="9",
        document_date=on,
        document_number=number,
        text=text,
        cost_centre="100",
        link=f"SI-{number}",
        invoice_date=on - timedelta(days=3),
    )


def test_a_batch_never_spans_two_fiscal_years() -> None:
    # Cutoff 18:00: the batch of 1 January holds approvals from 31 December 18:00 on.
    late = datetime(2026, 12, 31, 19, tzinfo=BERLIN)
    early = datetime(2027, 1, 1, 10, tzinfo=BERLIN)
    assert booking_day(late, time(18), BERLIN) == booking_day(early, time(18), BERLIN)
    accounted = [
        ("SI-a", [_booking(late.date(), "A-1")]),
        ("SI-b", [_booking(early.date(), "B-1"), _booking(early.date(), "B-1", "7.00")]),
    ]
    parts = batch_parts("EXTF_20270101_main", accounted, 1)
    assert [(p.file, p.fiscal_year_start, p.invoices) for p in parts] == [
        ("EXTF_20270101_main_WJ2026.csv", date(2026, 1, 1), ("SI-a",)),
        ("EXTF_20270101_main_WJ2027.csv", date(2027, 1, 1), ("SI-b",)),
    ]
    # A fiscal year from July: the same two days are one year, one file.
    (one,) = batch_parts("EXTF_20270101_main", accounted, 7)
    assert (one.file, one.fiscal_year_start) == ("EXTF_20270101_main.csv", date(2026, 7, 1))
    assert fiscal_year_start(date(2027, 6, 30), 7) == date(2026, 7, 1)
    for part in parts:
        data = datev_csv(
            DatevBatch(
                consultant="4711",
                client="42",
                fiscal_year_start=part.fiscal_year_start,
                created_at=datetime(2027, 1, 1, 18, 0, 1, tzinfo=UTC),
                bookings=part.bookings,
            )
        )
        head = header(data)
        day = part.bookings[0].document_date
        assert head[:4] == ["EXTF", "700", "21", "Buchungsstapel"]
        assert head[10:16] == [
            "4711",
            "42",
            f"{part.fiscal_year_start:%Y%m%d}",
            "4",
            f"{day:%Y%m%d}",
            f"{day:%Y%m%d}",
        ]


cp1252_text = st.text(
    st.characters(codec="cp1252", exclude_characters="\r\n\x00"), min_size=1, max_size=60
)


@given(
    st.lists(
        st.tuples(
            st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999.99"), places=2),
            cp1252_text,
            cp1252_text.map(lambda t: t[:36]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_every_line_reads_back_as_written(values: list[tuple[Decimal, str, str]]) -> None:
    on = date(2026, 12, 7)
    bookings = tuple(_booking(on, number, str(amount), text) for amount, text, number in values)
    data = datev_csv(
        DatevBatch(
            consultant="1001",
            client="1",
            fiscal_year_start=date(2026, 1, 1),
            created_at=datetime(2026, 12, 7, tzinfo=UTC),
            bookings=bookings,
        )
    )
    assert data.endswith(b"\r\n")
    parsed = rows(data)
    assert len(parsed) == len(bookings)
    for row, booking in zip(parsed, bookings, strict=True):
        assert len(row) == 37
        assert parse_amount(row[0]) == booking.amount
        assert row[1:3] == ["S", "EUR"]
        assert row[6:10] == ["3400", "70001", "9", "0712"]
        assert row[10] == booking.document_number
        assert row[13] == booking.text
        assert row[19] == booking.link
        assert row[20:22] == ["Rechnungsdatum", "04.12.2026"]
        assert row[36] == "100"


# -- a real daemon, killed while the day's batch is closed ---------------------------------------

COUNT = 16


def _cutoff_in(seconds: float) -> str:
    return f"{datetime.now(BERLIN) + timedelta(seconds=seconds):%H:%M:%S}"


def _final_files(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


async def _file_visible(folder: Path) -> None:
    with trio.fail_after(30):
        while True:
            if _final_files(folder):
                return
            await trio.sleep(0.002)  # another process's file: look often, the window is short


@pytest.mark.slow
@pytest.mark.parametrize("kill_when", ["decided", "written"])
async def test_a_batch_killed_while_closing_has_each_invoice_exactly_once(
    tmp_path: Path, kill_when: str
) -> None:
    orders, receipts = [], []
    for n in range(COUNT):
        supplier = SUPPLIERS[n % len(SUPPLIERS)]
        invoice = make_invoice(supplier, f"D-{n}", f"PO-D{n}", ITEMS[supplier.layout])
        po, gr = orders_for(invoice, supplier)
        orders += po
        receipts += gr
        suffix = "xml" if supplier.layout == "xml" else "pdf"
        (tmp_path / "inbox").mkdir(exist_ok=True)
        (tmp_path / "inbox" / f"invoice-{n:03d}.{suffix}").write_bytes(render(invoice, supplier))
    write_master_data(tmp_path, orders, receipts)
    config = inbox_config(tmp_path)  # cutoff midnight: today's batch stays open
    folder = tmp_path / "data" / "supplier-invoices" / "datev"
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        summaries: dict[str, Any] = {}
        while len(summaries) < COUNT:
            listing = (await admin.get("/v1/supplier-invoices", params={"limit": 1000})).json()
            summaries = await wait_status(admin, [s["id"] for s in listing], {"posted"})
        assert _final_files(folder) == {}  # the day has not ended
    # The day ends two seconds after the restart; killed once its batch is decided.
    inbox_config(tmp_path, inbox_keys=f'datev_cutoff = "{_cutoff_in(4)}"')
    async with running_daemon(config) as daemon:
        if kill_when == "decided":  # before its file is written
            await daemon.wait_for(
                "the batch decided",
                lambda: any(e.get("event") == "datev_batch_decided" for e in daemon.log),
            )
        else:  # while the trails are told where their bookings went
            await _file_visible(folder)
        daemon.signal(signal.SIGKILL)
        await daemon.wait_exit()
    seen_after_kill = _final_files(folder)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        trails = await _batched_trails(admin, list(summaries))
    files = _final_files(folder)
    # Whatever carried a final name before the restart was whole: the same bytes as now.
    assert {name: files[name] for name in seen_after_kill} == seen_after_kill
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    # Each invoice's bookings in exactly one file (one per day; two if midnight fell between
    # the approvals), exactly once, and that is the file its trail names.
    in_files = {(name, row[19]) for name, data in files.items() for row in rows(data)}
    booked = Counter(row[19] for data in files.values() for row in rows(data))
    for invoice, trail in trails.items():
        steps = [entry["step"] for entry in trail["entries"]]
        assert steps.count("datev_batch") == 1, (invoice, steps)
        posted = json.loads(next(e for e in trail["entries"] if e["step"] == "posted")["data"])
        assert booked[invoice] == len(posted["bookings"])
        batch = json.loads(next(e for e in trail["entries"] if e["step"] == "datev_batch")["data"])
        assert {name for name, link in in_files if link == invoice} == {Path(batch["file"]).name}
        day = date.fromisoformat(posted["day"])
        assert header(files[Path(batch["file"]).name])[14:16] == [f"{day:%Y%m%d}"] * 2
    assert set(booked) == set(trails)
    result = audit_verify(config)
    assert result.returncode == 0, result.stderr


async def _batched_trails(admin: httpx.AsyncClient, ids: list[str]) -> dict[str, Any]:
    """Each invoice's trail once every one names its DATEV batch."""
    with trio.fail_after(60):
        while True:
            trails = {
                invoice: (await admin.get(f"/v1/supplier-invoices/{invoice}/audit")).json()
                for invoice in ids
            }
            if all(any(e["step"] == "datev_batch" for e in t["entries"]) for t in trails.values()):
                return trails
            await trio.sleep(0.2)  # another process: poll its API
