"""Reading documents that events refer to by SHA-256: the event store's blob, or a file an
older somsd wrote under its data dir.

Blobs are appended with the event that records them (`EventStore.append(blobs=...)`), so every
daemon sharing the store reads them and they outlive the daemon that wrote them. Before that,
somsd kept the bytes on the writing daemon's disk; those files are still served, but only while
they hash to what their event recorded.
"""

from __future__ import annotations

from pathlib import Path

import trio

from somsd.store import EventStore, blob_key

__all__ = ["stored_bytes"]


async def stored_bytes(store: EventStore, sha256: str, legacy: Path | None) -> bytes | None:
    """The bytes recorded under `sha256`: the store's blob, else the file at `legacy` (from an
    older somsd) when it still hashes to `sha256`; None when neither has them."""
    content = await store.blob(sha256)
    if content is not None or legacy is None:
        return content
    try:
        content = await trio.Path(legacy).read_bytes()
    except FileNotFoundError:
        return None
    return content if blob_key(content) == sha256 else None
