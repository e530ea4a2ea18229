"""Reading documents that events refer to by SHA-256: the event store's blob, or a file an
older somsd wrote under its data dir.

Blobs are appended with the event that records them (`EventStore.append(blobs=...)`), so every
daemon sharing the store reads them and they outlive the daemon that wrote them. Before that,
somsd kept the bytes on the writing daemon's disk; those files are still served, but only while
they hash to what their event recorded.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from somsd.store import Connection, EventStore, blob_key, query_blob

__all__ = ["LegacyFiles", "stored_bytes", "stored_copy", "verified_copy"]


class LegacyFiles:
    """Where an older somsd wrote documents, content-addressed: `<root>/<sha256[:2]>/<sha256>`
    (read now, never written)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def stored(self) -> list[Path]:
        """Every file named by its hash (`somsd db migrate-to-postgres` moves them in)."""
        return sorted(
            path
            for path in self.root.glob("??/*")
            if len(path.name) == 64 and path.name.startswith(path.parent.name) and path.is_file()
        )


def stored_copy(conn: Connection, sha256: str, legacy: Path | None) -> bytes | None:
    """What is stored under `sha256`, unchecked: the blob, else the file at `legacy` (from an
    older somsd); None when neither is there. `somsd audit verify` tells a changed copy from a
    missing one with it; everything else reads `verified_copy`."""
    content = query_blob(conn, sha256)
    if content is not None or legacy is None:
        return content
    try:
        return legacy.read_bytes()
    except FileNotFoundError:
        return None


def verified_copy(conn: Connection, sha256: str, legacy: Path | None) -> bytes | None:
    """`stored_copy` when it still hashes to `sha256`, else None: never bytes other than the
    ones the event recorded."""
    content = stored_copy(conn, sha256, legacy)
    return content if content is not None and blob_key(content) == sha256 else None


async def stored_bytes(store: EventStore, sha256: str, legacy: Path | None) -> bytes | None:
    """`verified_copy`, read on one of the store's reader threads."""
    return await store.read(partial(verified_copy, sha256=sha256, legacy=legacy))
