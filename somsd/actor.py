"""Actors: a task that owns its state and reads typed messages from a bounded mailbox.

Why bounded: a full mailbox makes the sender wait, so a slow ERP slows intake instead of eating
RAM (back-pressure end to end). Why a one-shot `Reply` instead of a reply memory channel: a
request is answered exactly once, and a `Reply` costs one `trio.Event` instead of a channel pair
on the hot path (the event store answers tens of thousands of appends per second).

Messages are frozen msgspec Structs joined in a tagged union per actor; a request carries its
`Reply` as a field. The mailbox belongs to the actor object, not to its task, so a supervisor
restart of the task keeps the messages already queued.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

__all__ = ["DEFAULT_MAILBOX_SIZE", "Actor", "Mailbox", "Reply", "ReplyError"]

T = TypeVar("T")
M = TypeVar("M")
R = TypeVar("R")

# Deep enough to absorb a burst of webhook deliveries while a batch commits (one fsync takes
# 2-10 ms on the disks we measured); shallow enough that back-pressure reaches the HTTP layer
# before memory becomes a concern.
DEFAULT_MAILBOX_SIZE = 1024


class ReplyError(Exception):
    """The actor could not answer: it was stopped or restarted with the request in flight."""


class Reply(Generic[T]):
    """A one-shot answer slot: the actor calls `set` or `fail` once, the caller awaits `wait`."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def set(self, value: T) -> None:
        if self._event.is_set():
            return
        self._value = value
        self._event.set()

    def fail(self, error: BaseException) -> None:
        if self._event.is_set():
            return
        self._error = error
        self._event.set()

    async def wait(self) -> T:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set() stored a T


class Mailbox(Generic[M]):
    """A bounded trio memory channel pair that outlives any one run of its actor's task."""

    def __init__(self, capacity: int | float = DEFAULT_MAILBOX_SIZE) -> None:
        if capacity != math.inf and capacity < 1:
            raise ValueError("mailbox capacity must be at least 1")
        self.capacity = capacity
        self._send, self._receive = trio.open_memory_channel[M](capacity)

    async def send(self, message: M) -> None:
        """Queue a message, waiting while the mailbox is full (back-pressure)."""
        await self._send.send(message)

    def send_nowait(self, message: M) -> None:
        """Queue a message or raise `trio.WouldBlock` when the mailbox is full."""
        self._send.send_nowait(message)

    async def receive(self) -> M:
        return await self._receive.receive()

    def receive_nowait(self) -> M:
        return self._receive.receive_nowait()

    def drain_nowait(self, limit: int) -> list[M]:
        """Take up to `limit` queued messages without waiting (for batching)."""
        batch: list[M] = []
        while len(batch) < limit:
            try:
                batch.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        return batch

    @property
    def depth(self) -> int:
        return self._receive.statistics().current_buffer_used

    def __aiter__(self) -> Mailbox[M]:
        return self

    async def __anext__(self) -> M:
        return await self._receive.receive()


class Actor(Generic[M]):
    """Base for actors: a name, a mailbox and a `run` method a supervisor starts.

    Subclasses implement `run(*, task_status)`: load state, call `task_status.started()`, then
    handle messages from `self.mailbox` until cancelled. Crashes propagate to the supervisor,
    which restarts `run` with the same mailbox.
    """

    def __init__(self, name: str, *, mailbox_size: int | float = DEFAULT_MAILBOX_SIZE) -> None:
        self.name = name
        self.mailbox: Mailbox[M] = Mailbox(mailbox_size)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError

    async def ask(self, make_request: Callable[[Reply[R]], M]) -> R:
        """Send a request built around a fresh `Reply` and wait for the answer."""
        reply: Reply[R] = Reply()
        request = make_request(reply)
        try:
            # No scheduling point when there is room: the caller waits on the reply anyway, and
            # skipping the extra yield is measurable on the intake path (bench/intake.py).
            self.mailbox.send_nowait(request)
        except trio.WouldBlock:
            await self.mailbox.send(request)
        return await reply.wait()
