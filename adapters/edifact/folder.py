"""The partner's drop folder: claim files atomically, keep what was done, quarantine the rest.

Layout under the channel's folder: `in/` (the partner uploads, and renames into it when a
file is complete; names starting with "." or ending in ".tmp"/".part" are still being
written and ignored), `processing/` (claimed by us with one atomic rename, so a file is never
read twice or half), `processed/`, `failed/` (with `<name>.reason.txt`: the segment and the
reason), and `out/` for what we send (written as `.part` and renamed, so the partner never
reads a half file). `ControlReferences` hands out UNB control references that never repeat,
persisted before use (write, fsync, rename). `ReceivedReferences` remembers the control
references each partner has sent, so an interchange that reuses one is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from somsd.files import write_atomically

__all__ = ["ControlReferences", "DropFolder", "ReceivedReferences"]

_INCOMPLETE: Final = (".tmp", ".part")
MAX_FILE_BYTES: Final = 16 * 1024 * 1024


class DropFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.inbound = root / "in"
        self.processing = root / "processing"
        self.processed = root / "processed"
        self.failed = root / "failed"
        self.outbound = root / "out"
        for folder in (self.inbound, self.processing, self.processed, self.failed, self.outbound):
            folder.mkdir(parents=True, exist_ok=True)

    def claim(self) -> Iterator[Path]:
        """Files left in processing/ by a crash first, then complete files in in/, oldest first."""
        yield from sorted(self.processing.iterdir())
        candidates = [
            path
            for path in self.inbound.iterdir()
            if path.is_file()
            and not path.name.startswith(".")
            and not path.name.endswith(_INCOMPLETE)
        ]
        for path in sorted(candidates, key=lambda item: (item.stat().st_mtime_ns, item.name)):
            target = self.processing / path.name
            try:
                os.rename(path, target)  # atomic: either we have it, or it is gone
            except FileNotFoundError:
                continue
            yield target

    def read(self, path: Path) -> str:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"file larger than {MAX_FILE_BYTES} bytes")
        return path.read_bytes().decode("latin-1")

    def done(self, path: Path) -> Path:
        target = self.processed / path.name
        os.replace(path, target)
        return target

    def quarantine(self, path: Path, reason: str) -> Path:
        target = self.failed / path.name
        write_atomically(self.failed / f"{path.name}.reason.txt", (reason + "\n").encode())
        os.replace(path, target)
        return target

    def send(self, name: str, text: str) -> Path:
        target = self.outbound / name
        write_atomically(target, text.encode("latin-1"))
        return target


class ControlReferences:
    """UNB control references (0020) per sender: 1, 2, 3 ... never reused, even after a crash."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def next(self) -> int:
        last = int(self.path.read_text()) if self.path.exists() else 0
        taken = last + 1
        if taken > 99_999_999_999_999:  # 0020 is an14: wrap would repeat, refuse instead
            raise OverflowError("control references exhausted")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, str(taken).encode())
        return taken


class ReceivedReferences:
    """The UNB control references one sender has used, with the file each came in.

    A reference seen again in a file of another name is a duplicate interchange (a partner
    resending under the same reference, or its counter reset); the same name is the same file
    taken again after a crash (it stayed in processing/), which is not."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def file_of(self, reference: str) -> str | None:
        if not self.path.exists():
            return None
        for line in self.path.read_text().splitlines():
            seen, _, name = line.partition(" ")
            if seen == reference:
                return name
        return None

    def record(self, reference: str, name: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(f"{reference} {name}\n")
            handle.flush()
            os.fsync(handle.fileno())
