"""Secrets read from files or systemd credentials, never shown.

A `Secret` hides its value from `repr`, `str`, f-strings and log rendering, so passing a config
section to a logger or an error message can not leak it. Code that needs the value calls
`reveal()` at the one place it is used (signing a request, comparing a token).
"""

from __future__ import annotations

import hmac

__all__ = ["REDACTED", "Secret"]

REDACTED = "***"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str) -> bool:
        """Compare in constant time, so response timing tells an attacker nothing."""
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        # Equality lets a reload see that a secret file's content changed (restart the actor)
        # without ever printing either value. Compared as UTF-8 bytes: `compare_digest`
        # refuses a str holding non-ASCII characters, and a secret file may hold any text.
        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(self._value)
