"""Where a rendered document's bytes are read from: the event store's blob, or for a document
an older somsd stored as a content-addressed file under `<data_dir>/documents/`, that file
(only while it still matches its hash)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import msgspec
import pytest
import trio

from actors.blobs import LegacyFiles
from actors.documents import DocumentFile, DocumentReader, DocumentRendered
from somsd.store import EventStore, NewEvent, blob_key

PDF = b"%PDF-1.7 rendered now"
XML = b"<rsm:CrossIndustryInvoice/>"


def rendered(number: str, pdf: bytes, xml: bytes) -> NewEvent:
    record = DocumentRendered(
        number=number,
        kind="invoice",
        order_id="o-1",
        issue_date=date(2026, 12, 1),
        profile="EN16931",
        files=(
            DocumentFile(f"{number}.pdf", "application/pdf", blob_key(pdf), len(pdf)),
            DocumentFile("factur-x.xml", "application/xml", blob_key(xml), len(xml)),
        ),
        valid=True,
    )
    return NewEvent("DocumentRendered", msgspec.json.encode(record))


def write_legacy(files: LegacyFiles, content: bytes) -> Path:
    """A file as somsd before blobs wrote it: `<sha[:2]>/<sha>`, read-only."""
    path = files.path_of(blob_key(content))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.chmod(path, 0o440)
    return path


async def test_a_document_is_read_from_the_store_and_an_old_one_from_its_file(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = EventStore(tmp_path / "events.db")
    await nursery.start(store.run)
    legacy = LegacyFiles(tmp_path / "documents")
    reader = DocumentReader(store, legacy)
    new = rendered("RE-2026-000001", PDF, XML)
    await store.append("document-RE-2026-000001", [new], blobs=[PDF, XML])
    issued = await reader.for_invoice("RE-2026-000001")
    assert issued is not None
    assert (issued.pdf, issued.xml) == (PDF, XML)
    assert await reader.file("RE-2026-000001", "application/xml") == XML
    assert not legacy.root.exists()

    old_pdf, old_xml = b"%PDF-1.7 rendered by an older somsd", b"<rsm:old/>"
    await store.append("document-RE-2026-000002", [rendered("RE-2026-000002", old_pdf, old_xml)])
    assert await reader.file("RE-2026-000002", "application/pdf") is None
    with pytest.raises(OSError, match=r"RE-2026-000002\.pdf"):
        await reader.for_invoice("RE-2026-000002")  # rendered, but its bytes are gone
    pdf_path = write_legacy(legacy, old_pdf)
    write_legacy(legacy, old_xml)
    issued = await reader.for_invoice("RE-2026-000002")
    assert issued is not None
    assert (issued.pdf, issued.xml) == (old_pdf, old_xml)

    os.chmod(pdf_path, 0o640)
    pdf_path.write_bytes(b"%PDF-1.7 changed afterwards")
    assert await reader.file("RE-2026-000002", "application/pdf") is None
    assert await reader.file("RE-2026-000002", "application/xml") == old_xml
