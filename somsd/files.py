"""Files other programs read (DATEV batches, EDIFACT drop folders): never seen half-written."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes) -> None:
    """`data` under `path`: written to the hidden `.<name>.part` beside it, fsynced, renamed and
    the folder fsynced, so the name only ever shows a whole file, even across a SIGKILL or a
    power loss."""
    temporary = path.with_name(f".{path.name}.part")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
