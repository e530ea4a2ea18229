"""Webhook signatures: `X-Somsd-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.

Why the timestamp is signed with the body: a captured request cannot be replayed later with a
fresh timestamp, and the five-minute window bounds how long a captured one stays usable at all.
Within the window a replay is deliberately not refused: it is byte for byte what a sender's
quick retry looks like (timestamps have one-second resolution), and refusing it with 401 would
make a sender give up on an order somsd already holds. Such a request is recognised by its
external id, answered as a duplicate and changes nothing. Comparison is constant-time, and
several `v1=` values are accepted so a sender can sign with an old and a new key while a key is
rotated.

Pure: the clock reading comes in as an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = [
    "SIGNATURE_HEADER",
    "SIGNATURE_TOLERANCE_SECONDS",
    "SignatureError",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Somsd-Signature"
# Five minutes, as the contract says: long enough for clock skew between hosts synchronised by
# NTP and for a sender's retry queue, short enough to make captured requests useless soon.
SIGNATURE_TOLERANCE_SECONDS = 300
# Unix seconds fit in 12 ASCII digits until the year 33658; a longer `t=` is garbage, and
# converting thousands of digits to an int is work an unauthenticated sender must not cause.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# An HMAC-SHA256 is 64 hex digits; 128 leaves room for upper case or a longer digest later.
_SIGNATURE = re.compile(r"[0-9a-fA-F]{1,128}")
# Key rotation needs two values; a handful more costs nothing, thousands would.
_MAX_SIGNATURES = 8


class SignatureError(Exception):
    """Why a signature was refused; the message is safe to return to the sender."""


def _digest(key: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(key: bytes, body: bytes, timestamp: int) -> str:
    """The header value a sender puts on `body` (used by our simulators and tests)."""
    return f"t={timestamp},v1={_digest(key, str(timestamp), body)}"


def verify_signature(
    header: str | None,
    body: bytes,
    key: bytes,
    *,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> None:
    """Raise `SignatureError` unless `header` signs `body` with `key` within the time window."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            candidates.append(value)
    if (
        timestamp is None
        or _TIMESTAMP.fullmatch(timestamp) is None
        or not candidates
        or len(candidates) > _MAX_SIGNATURES
        or any(_SIGNATURE.fullmatch(candidate) is None for candidate in candidates)
    ):
        # `fullmatch` with ASCII classes: `str.isdigit` accepts "²", which `int` refuses.
        raise SignatureError(
            f'malformed {SIGNATURE_HEADER}; expected "t=<unix seconds, up to 12 digits>,'
            'v1=<hex HMAC-SHA256>"'
        )
    if abs(now - int(timestamp)) > tolerance:
        raise SignatureError(
            f"signature timestamp outside the {int(tolerance)} s window (check the sender's clock)"
        )
    expected = _digest(key, timestamp, body)
    matched = False
    for candidate in candidates:  # no early exit: timing must not reveal which one matched
        matched |= hmac.compare_digest(expected, candidate.lower())
    if not matched:
        raise SignatureError("signature does not match the body")
