"""Where a label's bytes are read from: the event store's blob, or for a label an older somsd
stored as a file under the data dir, that file (only while it still matches its hash)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import trio

from actors.carrier import LabelStored, label_content
from somsd.store import EventStore, NewEvent, blob_key

LABEL = b"^XA^FDlabel^FS^XZ"


def stored(sha256: str, file: str = "") -> LabelStored:
    return LabelStored(
        at=datetime(2026, 12, 1, tzinfo=UTC),
        carrier="dhl",
        reference="f-1",
        shipment_number="00340434161094000001",
        label_format="zpl",
        file=file,
        sha256=sha256,
    )


async def test_a_label_is_read_from_the_store_and_an_old_one_from_its_file(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = EventStore(tmp_path / "events.db")
    await nursery.start(store.run)
    await store.append("label-f-1", [NewEvent("LabelStored", b"{}")], blobs=[LABEL])
    assert await label_content(store, tmp_path, stored(blob_key(LABEL))) == LABEL

    old = b"^XA^FDbought by an older somsd^FS^XZ"
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "f-0.zpl").write_bytes(old)
    assert await label_content(store, tmp_path, stored(blob_key(old), "labels/f-0.zpl")) == old
    assert await label_content(store, tmp_path, stored(blob_key(old))) is None
    (tmp_path / "labels" / "f-0.zpl").write_bytes(b"changed")
    assert await label_content(store, tmp_path, stored(blob_key(old), "labels/f-0.zpl")) is None
    assert await label_content(store, tmp_path, stored(blob_key(old), "labels/gone.zpl")) is None
