"""The actor behind one `[[channel]]`, `[[location]]`, `[[carrier]]` or `[[erp]]` section.

One actor per configured external system, supervised under `integrations`, so a reload that
changes one shop's section restarts only that shop's actor and a crash in one warehouse's
adapter never touches another. The actor owns its section's config for its whole life: a changed
section means a new actor (the supervisor replaces it), an unchanged one keeps its task, its
mailbox and whatever is queued in it.

The adapters that talk to each kind of system plug in here as they are built (webhook intake,
Smartstore polling, 3PL delivery, DHL labels); until a kind has one, the actor only answers
status requests. Its `driver` says which: the name of what exchanges data with the system, or
None when nothing does yet. A section without a driver is accepted (the config is valid and the
driver may come with an upgrade) but never silent: a warning naming the section at start, and
`no driver` in `GET /v1/admin/actors`, `somsd status` and the `/readyz` detail.
"""

from __future__ import annotations

import time

import msgspec
import structlog
import trio

from somsd.actor import Actor, Reply

__all__ = ["Describe", "IntegrationActor", "IntegrationMessage", "IntegrationStatus"]

log = structlog.get_logger("actors.integration")


class IntegrationStatus(msgspec.Struct, frozen=True):
    name: str
    kind: str
    running_since: float  # unix time this actor object was created (survives task restarts)
    handled: int  # messages handled since then


class Describe(msgspec.Struct, frozen=True, tag=True):
    reply: Reply[IntegrationStatus]


IntegrationMessage = Describe


class IntegrationActor(Actor[IntegrationMessage]):
    def __init__(self, name: str, section: msgspec.Struct, *, driver: str | None = None) -> None:
        super().__init__(name)
        self.section = section
        self.kind: str = getattr(section, "kind", "")
        self.driver = driver  # what exchanges data with the system; None: nothing yet
        self.created_at = time.time()
        self.handled = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.driver is None:
            log.warning(
                "integration_without_driver",
                section=self.name,
                kind=self.kind,
                message=f"{self.name}: somsd has no driver for kind {self.kind!r} yet; "
                "the section is accepted but nothing is exchanged with that system",
            )
        log.info("integration_started", kind=self.kind, driver=self.driver)
        task_status.started()
        async for message in self.mailbox:
            self.handled += 1
            match message:
                case Describe(reply=reply):
                    reply.set(
                        IntegrationStatus(self.name, self.kind, self.created_at, self.handled)
                    )
