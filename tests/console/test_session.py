"""Console sessions and language choice, without a daemon."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from somsd.console.i18n import choose_language
from somsd.console.session import Session, SessionKeeper
from somsd.secrets import Secret

TOKEN = Secret("admin-token-1")
ROTATED = Secret("admin-token-2")


def tokens(*secrets: Secret):  # type: ignore[no-untyped-def]
    return lambda session: list(secrets)


def test_a_session_reads_back_and_ends_with_logout() -> None:
    keeper = SessionKeeper()
    cookie = keeper.issue("admin", None, "Erika", TOKEN)
    session = keeper.read(cookie, tokens(TOKEN))
    assert session is not None
    assert (session.role, session.user) == ("admin", "Erika")
    assert keeper.csrf_ok(session, keeper.csrf_token(session))
    assert not keeper.csrf_ok(session, "0" * 64)
    assert not keeper.csrf_ok(session, None)
    keeper.revoke(session)
    assert keeper.read(cookie, tokens(TOKEN)) is None


def test_a_rotated_out_token_ends_its_sessions() -> None:
    keeper = SessionKeeper()
    cookie = keeper.issue("admin", None, "Erika", TOKEN)
    assert keeper.read(cookie, tokens(ROTATED, TOKEN)) is not None
    assert keeper.read(cookie, tokens(ROTATED)) is None


def test_another_daemons_or_an_edited_cookie_is_refused() -> None:
    cookie = SessionKeeper().issue("staff", "store-essen", "Sabine", TOKEN)
    assert SessionKeeper().read(cookie, tokens(TOKEN)) is None
    body, mac = cookie.split(".")
    assert SessionKeeper().read(body[:-2] + "AA." + mac, tokens(TOKEN)) is None


def test_an_expired_session_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    keeper = SessionKeeper()
    cookie = keeper.issue("admin", None, "Erika", TOKEN)
    later = time.time() + 9 * 3600
    monkeypatch.setattr(time, "time", lambda: later)
    assert keeper.read(cookie, tokens(TOKEN)) is None


@given(st.text(max_size=300))
def test_no_string_is_a_session_or_an_error(cookie: str) -> None:
    keeper = SessionKeeper(key=b"k" * 32)
    session: Session | None = keeper.read(cookie, tokens(TOKEN))
    assert session is None


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        (None, "de-DE,de;q=0.9,en;q=0.8", "de"),
        (None, "fr-FR, en;q=0.5, de;q=0.7", "de"),
        (None, "", "en"),
        (None, "de;q=bogus, en", "en"),
        ("de", "en", "de"),
        ("xx", "de", "de"),
    ],
)
def test_language_from_the_switch_or_the_browser(
    cookie: str | None, header: str, expected: str
) -> None:
    assert choose_language(cookie, header) == expected
