"""Blocking file operations of the `csv` adapter; callers run them in `trio.to_thread`.

Each function is one whole step (write a file durably, move a file, scan a folder), so one
thread hop does it and a cancelled caller never leaves half of a step behind: trio does not
abandon a worker thread unless asked, so a step that started finishes.

Atomic write, and why each part: the reader (a WMS polling the folder, or we polling theirs)
must never see a half-written file. So the bytes go to a temporary name in the *same* folder
(a rename is only atomic within one filesystem), are flushed and fsynced (so the data is on
disk before the name points at it: otherwise a power cut can leave a complete name over an
empty file), then `os.replace` gives the file its final name in one step, and the folder is
fsynced so the rename itself survives a power cut. The temporary name starts with a dot and
ends in `.tmp`, the two conventions folder pollers skip. It is created with `os.open(...,
0o666)` rather than `tempfile.mkstemp` (always 0600) so the umask decides who may read it —
the WMS often reads the share as another user.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["list_pending", "move_unique", "write_atomic"]


def write_atomic(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` to `folder/name` so that readers see all of it or nothing."""
    target = folder / name
    temporary = folder / f".{name}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except Exception:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    fsync_folder(folder)
    return target


def fsync_folder(folder: Path) -> None:
    """Make a folder's entries (a rename, a new name) durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def move_unique(source: Path, folder: Path) -> Path:
    """Move `source` into `folder`, keeping its name, or `<stem>.<n><suffix>` if taken.

    A sender may reuse a file name (`stock.csv` every hour); the earlier file in `processed/`
    is evidence and must not be overwritten.
    """
    folder.mkdir(exist_ok=True)
    target = folder / source.name
    counter = 1
    while target.exists():
        target = folder / f"{source.stem}.{counter}{source.suffix}"
        counter += 1
    os.rename(source, target)
    return target


def list_pending(folder: Path, *, prefix: str = "") -> list[Path]:
    """Finished `.csv` files in `folder` (not sub-folders), in name order.

    Dot-files and `*.tmp` are files still being written by their sender (see the module
    docstring) and are left alone. Name order is processing order: senders that name files
    with a timestamp (`status-20261121T100000.csv`) get them processed in time order.
    """
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and path.name.startswith(prefix)
        and path.suffix.lower() == ".csv"
        and not path.name.startswith(".")
    )
