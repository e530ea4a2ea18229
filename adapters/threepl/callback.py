"""Status callbacks of the `rest` protocol: signing (server side) and reading (somsd's side).

A callback is a `StatusCallback` JSON body signed like somsd's own webhooks
(`somsd.signing`: `X-Somsd-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`), so
one verifier, one key-rotation story and one replay window serve every inbound webhook. The
signature is checked on the raw bytes *before* the body is decoded: an unauthenticated sender
must not be able to make us parse anything.
"""

from __future__ import annotations

import msgspec

from adapters.threepl.errors import InvalidCallback
from adapters.threepl.wire import StatusCallback
from somsd.signing import SIGNATURE_HEADER, sign, verify_signature

__all__ = ["SIGNATURE_HEADER", "decode_callback", "encode_callback"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StatusCallback)


def encode_callback(callback: StatusCallback, key: bytes, *, timestamp: int) -> tuple[bytes, str]:
    """The body and the `X-Somsd-Signature` value a server sends for `callback`."""
    body = _encoder.encode(callback)
    return body, sign(key, body, timestamp)


def decode_callback(
    body: bytes, signature: str | None, key: bytes, *, now: float
) -> StatusCallback:
    """Verify and decode a callback.

    Raises `somsd.signing.SignatureError` (answer 401) for a missing, stale or wrong signature,
    `InvalidCallback` (answer 400) for a signed body that is not a `StatusCallback`.
    """
    verify_signature(signature, body, key, now=now)
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidCallback(f"status callback is not readable: {exc}") from exc
    except RecursionError:  # msgspec stops at the interpreter's recursion limit
        raise InvalidCallback("status callback is nested too deeply to read") from None
