"""Admin routes for the outbox's dead letters: look at parked deliveries, send them again.

- `GET /v1/dead-letters?target=&limit=`: parked entries, oldest first, with why they were
  parked (`last_error`) and how often they were tried. The payload is shown as the JSON it is:
  outbox payloads are somsd's own documents (a fulfilment, a status push) and hold no
  credentials, which live in the adapters' clients and never in the outbox. Error texts come
  from the adapters, whose messages never carry a secret (adapters/errors.py).
- `POST /v1/dead-letters/{id}/retry`: back to pending, due now, with a fresh attempt budget,
  and the dispatcher woken so it goes at once. 404 for an unknown id, 409 for an entry that is
  not dead (pending or already delivered: retrying it would send it twice).

Both need the admin token. Typical use: fix the cause (a SKU unknown to the warehouse, a
token), then retry each parked entry of that target.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from actors.outbox import OutboxDispatcher
from somsd.api import ApiError, ApiRoute, json_response
from somsd.store import EventStore, OutboxEntry, OutboxTransitionError

__all__ = ["DeadLetter", "DeadLetterPage", "DeadLetterRoutes", "Requeued"]

DEFAULT_LIMIT: Final = 100
# A page an operator's terminal and a JSON viewer still handle; more is a scripted export,
# which can filter by target.
MAX_LIMIT: Final = 1000

# Outbox ids are SQLite integers (64-bit); a longer number names no entry.
MAX_ID: Final = 2**63 - 1


def _whole_number(text: str, high: int) -> int | None:
    """`text` as a number from 0 to `high`, or None. ASCII digits only: `str.isdigit` accepts
    "²", which `int` refuses, and a bounded length keeps the conversion cheap."""
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(high))):
        return None
    value = int(text)
    return value if value <= high else None


_check_json = msgspec.json.Decoder(msgspec.Raw).decode
_encode = msgspec.json.Encoder().encode


class DeadLetter(msgspec.Struct, frozen=True):
    id: int
    target: str
    idempotency_key: str
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    payload: msgspec.Raw  # the entry's JSON document as written (see module docstring)


class DeadLetterPage(msgspec.Struct, frozen=True):
    dead_letters: tuple[DeadLetter, ...]


class Requeued(msgspec.Struct, frozen=True):
    id: int
    state: str  # "pending": the dispatcher delivers it next


def dead_letter(entry: OutboxEntry) -> DeadLetter:
    """The operator's view of a dead entry."""
    try:
        payload = msgspec.Raw(_check_json(entry.payload))
    except msgspec.DecodeError:
        # Not JSON (only a bug writes that): show the bytes as text rather than break the page.
        payload = msgspec.Raw(_encode(entry.payload.decode("utf-8", "replace")))
    return DeadLetter(
        id=entry.id,
        target=entry.target,
        idempotency_key=entry.idempotency_key,
        attempts=entry.attempts,
        last_error=entry.last_error,
        created_at=entry.created_at,
        updated_at=entry.updated_at,
        payload=payload,
    )


class DeadLetterRoutes:
    """Builds the dead-letter routes around the store and the dispatcher to wake."""

    def __init__(self, store: EventStore, dispatcher: OutboxDispatcher) -> None:
        self.store = store
        self.dispatcher = dispatcher

    def routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(
                "/v1/dead-letters",
                "GET",
                self.list_dead_letters,
                "Outbox entries parked after a permanent failure or too many attempts",
                admin=True,
                responses={200: DeadLetterPage, 400: None},
                tags=("outbox",),
                query=(
                    ("target", "string", "only this target, e.g. location/wh-1"),
                    (
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        f"at most this many (default {DEFAULT_LIMIT})",
                    ),
                ),
            ),
            ApiRoute(
                "/v1/dead-letters/{id}/retry",
                "POST",
                self.retry,
                "Requeue a dead letter: pending again, due now, with a fresh attempt budget",
                admin=True,
                responses={200: Requeued, 404: None, 409: None},
                tags=("outbox",),
            ),
        ]

    async def list_dead_letters(self, request: Request) -> Response:
        target = request.query_params.get("target") or None
        limit = _whole_number(request.query_params.get("limit", str(DEFAULT_LIMIT)), MAX_LIMIT)
        if limit is None or limit < 1:
            raise ApiError(
                400, "invalid_limit", f"limit is a whole number from 1 to {MAX_LIMIT}", "limit"
            )
        entries = await self.store.dead_letters(target=target, limit=limit)
        return json_response(DeadLetterPage(tuple(dead_letter(entry) for entry in entries)))

    async def retry(self, request: Request) -> Response:
        id_text = request.path_params["id"]
        entry_id = _whole_number(id_text, MAX_ID)
        if entry_id is None:
            raise ApiError(404, "unknown_dead_letter", f"no outbox entry {id_text!r}")
        try:
            await self.store.requeue(entry_id)
        except OutboxTransitionError as exc:
            if exc.state is None:
                raise ApiError(404, "unknown_dead_letter", f"no outbox entry {entry_id}") from None
            raise ApiError(
                409,
                "not_dead",
                f"outbox entry {entry_id} is {exc.state}, not dead; only dead letters are retried",
            ) from None
        self.dispatcher.wake()
        return json_response(Requeued(entry_id, "pending"))
