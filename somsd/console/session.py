"""Console sessions: a signed, expiring cookie naming who logged in with which token.

The cookie holds no token, only a fingerprint of the one used, so a rotated-out token ends
every session made with it at the next request. The signing key is made at start-up and
never written down: a daemon restart logs everyone out, which costs a login and saves
keeping a key file safe. Logout is kept in memory (the nonce is refused until it expires).

CSRF: every form carries a token derived from the session's nonce; the login form, which has
no session yet, carries one bound to a short-lived pre-login cookie (double submit). Together
with SameSite=Strict this leaves a forged cross-site POST nothing to ride on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Final, Literal

import msgspec

from somsd.secrets import Secret

__all__ = ["SESSION_SECONDS", "Role", "Session", "SessionKeeper", "fingerprint"]

# One shift; a worker logs in again the next day.
SESSION_SECONDS: Final = 8 * 3600
Role = Literal["admin", "staff"]


class Session(msgspec.Struct, frozen=True):
    role: Role
    location: str | None  # staff: the one location whose work she sees
    user: str  # who, for the event history (the API records "user:<name>")
    expires: int  # Unix seconds
    nonce: str
    token: str  # fingerprint of the token logged in with


def fingerprint(secret: Secret) -> str:
    return hashlib.sha256(b"somsd-console:" + secret.reveal().encode()).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of anything a client sends (as bytes: `compare_digest` refuses
    non-ASCII `str`, and a cookie or form field may hold any text)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Session).decode


class SessionKeeper:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)
        self._revoked: dict[str, int] = {}  # nonce -> expiry

    def _mac(self, purpose: str, data: str) -> str:
        return hmac.new(self._key, f"{purpose}:{data}".encode(), hashlib.sha256).hexdigest()

    def issue(self, role: Role, location: str | None, user: str, token: Secret) -> str:
        session = Session(
            role=role,
            location=location,
            user=user,
            expires=int(time.time()) + SESSION_SECONDS,
            nonce=secrets.token_urlsafe(16),
            token=fingerprint(token),
        )
        body = _b64(_encode(session))
        return f"{body}.{self._mac('session', body)}"

    def read(
        self, cookie: str | None, valid_tokens: Callable[[Session], Iterable[Secret]]
    ) -> Session | None:
        """The session, or None when the cookie is missing, forged, expired, logged out, or
        made with a token no longer among `valid_tokens(session)` (its role's tokens now)."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 4096:
            return None
        body, mac = cookie.split(".")
        if not _same(mac, self._mac("session", body)):
            return None
        try:
            session = _decode(_unb64(body))
        except (msgspec.DecodeError, ValueError):
            return None
        now = time.time()
        if session.expires < now or session.nonce in self._revoked:
            return None
        known = False
        for secret in valid_tokens(session):  # every one compared: timing tells nothing
            known |= _same(fingerprint(secret), session.token)
        return session if known else None

    def revoke(self, session: Session) -> None:
        now = time.time()
        self._revoked = {n: e for n, e in self._revoked.items() if e >= now}
        self._revoked[session.nonce] = session.expires

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.nonce)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return given is not None and _same(self.csrf_token(session), given)

    def login_csrf(self, pre: str) -> str:
        return self._mac("login", pre)

    def login_csrf_ok(self, pre: str | None, given: str | None) -> bool:
        if not pre or not given:
            return False
        return _same(self.login_csrf(pre), given)
