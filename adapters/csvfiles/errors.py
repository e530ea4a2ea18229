"""File-system failures of the `csv` adapter, translated into the shared two kinds.

```
UpstreamError (adapters.errors)
 ├── TransientUpstreamError   the share is full, gone or busy: retry once it is back
 └── PermanentUpstreamError   we may never write there (permissions, read-only, not a folder)
```

A folder adapter's "upstream" is a file share, usually a mount of the warehouse's SFTP or SMB
server. What a retry can fix is what an operator or the mount fixes without us changing
anything: a full disk, a mount that dropped out (ENOENT, ESTALE), a busy or timed-out server.
Refused permissions and read-only filesystems stay refused until someone changes the setup, so
they go to the dead letters. Unknown errnos count as transient: the outbox's attempt budget
still ends a retry loop, while a wrong "permanent" would drop work a retry would have done.
"""

from __future__ import annotations

import errno
from pathlib import Path

from adapters.errors import PermanentUpstreamError, TransientUpstreamError, UpstreamError

__all__ = ["translate_os_error"]

_PERMANENT = {
    errno.EACCES: "permission denied; give the somsd user write access",
    errno.EPERM: "operation not permitted; give the somsd user write access",
    errno.EROFS: "the filesystem is read-only",
    errno.ENOTDIR: "a path component is not a folder; check the configured folder",
    errno.EISDIR: "a folder is in the way of the file",
    errno.ENAMETOOLONG: "the file name is too long for this filesystem",
}


def translate_os_error(exc: OSError, *, system: str, operation: str, path: Path) -> UpstreamError:
    """The shared error for a failed file operation on `path`; raise it `from exc`."""
    hint = _PERMANENT.get(exc.errno or 0)
    reason = exc.strerror or type(exc).__name__
    if hint is not None:
        return PermanentUpstreamError(
            system, f"{system}: {operation} {path}: {hint}", operation=operation
        )
    if exc.errno == errno.ENOENT:
        reason = "missing; is the share mounted?"
    return TransientUpstreamError(
        system, f"{system}: {operation} {path}: {reason}; will retry", operation=operation
    )
