"""Supplier invoices' files an older somsd kept under `<data_dir>/supplier-invoices/files/`:
the trail still finds them (only while they match their hash) and `audit verify` checks them;
files taken in now are blobs of the event store."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import trio
from prometheus_client import CollectorRegistry

from actors.outbox import OutboxDispatcher
from actors.supplier_invoices import (
    Received,
    SupplierInvoiceActor,
    invoice_id,
    legacy_files,
    verify_audit,
)
from actors.supplier_invoices_trail import now, stream_of
from somsd.config import Config, DaemonConfig
from somsd.store import EventStore, NewEvent, blob_key, open_reader
from somsd.supplier_invoices.audit import seal

OLD = b"<Invoice>taken in by an older somsd</Invoice>"


async def test_an_old_file_is_read_and_verified_while_it_matches_its_hash(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = EventStore(tmp_path / "events.db")
    await nursery.start(store.run)
    dispatcher = OutboxDispatcher(store, registry=CollectorRegistry())
    config = Config(daemon=DaemonConfig(data_dir=str(tmp_path)))
    actor = SupplierInvoiceActor(
        lambda: config,
        store=store,
        dispatcher=dispatcher,
        registry=CollectorRegistry(),
        data_dir=tmp_path,
    )
    sha256 = blob_key(OLD)
    received = Received(
        inbox="main",
        filename="old.xml",
        sha256=sha256,
        size=len(OLD),
        via="folder",
        media_type="application/xml",
    )
    entry = seal(None, "received", now(), msgspec.json.encode(received).decode())
    await store.append(
        stream_of(invoice_id(sha256)),
        [NewEvent("SupplierInvoiceReceived", msgspec.json.encode(entry))],
    )

    def verify() -> tuple[int, tuple[str, ...]]:
        with open_reader(tmp_path / "events.db") as conn:
            report = verify_audit(conn, tmp_path)
        return report.files, report.problems

    assert await actor.file(sha256) is None
    [missing] = verify()[1]
    assert "received file" in missing
    assert "is missing" in missing

    path = legacy_files(tmp_path).path_of(sha256)
    path.parent.mkdir(parents=True)
    path.write_bytes(OLD)
    assert legacy_files(tmp_path).stored() == [path]
    assert await actor.file(sha256) == OLD
    assert verify() == (1, ())

    os.chmod(path, 0o640)
    path.write_bytes(OLD + b"<!-- changed -->")
    assert await actor.file(sha256) is None
    [changed] = verify()[1]
    assert "was changed" in changed
