"""The order lifecycle: standard statuses, custom ones from config, and which moves are legal.

Standard statuses and their edges (every other move is an `IllegalTransition`):

```
from -> to    pending  processing  on-hold  complete  canceled  closed
new           yes      yes         yes      -         yes       -
pending       -        yes         yes      -         yes       -
processing    -        -           yes      yes       yes       -
on-hold       release  release     -        -         yes       -
complete      -        -           -        -         -         yes
canceled      -        -           -        -         -         yes
closed        -        -           -        -         -         -
```
("release" = back to the status the hold was entered from, see below.)

- new -> pending | processing | on-hold | canceled. `new` is the status an order is received in;
  acceptance moves it to pending. new -> processing exists for orders imported already in work
  (an ERP backlog), new -> canceled for an order the channel withdraws before acceptance.
- pending -> processing | on-hold | canceled: waiting for payment, routing or stock.
- processing -> complete | on-hold | canceled: being fulfilled. Cancelling here is still legal
  while nothing has shipped; the cancellation decision checks shipped quantities.
- on-hold -> canceled, or *release*: back to the status it was entered from, whatever that was.
  The machine only knows the edges *into* on-hold; where a release goes is a fact of the order
  (its `held_from`), so `release_hold` does not ask the machine.
- complete -> closed and canceled -> closed: closing ends the after-sales phase (returns window,
  refunds). closed has no edges: it is the one terminal status.
- complete, canceled and closed are *final*: the order's outcome is decided. Every status must be
  able to reach one, which is what "cannot reach a final status" means for config.
- Nothing returns to new, and nothing leaves closed; config can change neither.

Custom statuses (`[[status]]` with `name`, `from`, `to`) add a status and the edges
`from[i] -> name` and `name -> to[j]`. A config entry named "on-hold" is the one exception to
"standard names are reserved": it adds edges to the built-in hold status (the contract's example
config declares it), so operators can, say, release a held order straight to processing.
`build_status_machine` validates the whole graph at load time and reports every problem with its
config key path, e.g. `status[0].from[1]: unknown status "pendng"; did you mean "pending"?`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from somsd.domain.errors import IllegalTransition, Problem, StatusConfigError

__all__ = [
    "CANCELED",
    "CLOSED",
    "COMPLETE",
    "FINAL_STATUSES",
    "NEW",
    "ON_HOLD",
    "PENDING",
    "PROCESSING",
    "STANDARD_MACHINE",
    "STANDARD_TRANSITIONS",
    "CustomStatus",
    "StatusMachine",
    "build_status_machine",
    "status_config_problems",
]

NEW: Final = "new"
PENDING: Final = "pending"
PROCESSING: Final = "processing"
ON_HOLD: Final = "on-hold"
COMPLETE: Final = "complete"
CANCELED: Final = "canceled"
CLOSED: Final = "closed"

STANDARD_TRANSITIONS: Final[Mapping[str, tuple[str, ...]]] = {
    NEW: (PENDING, PROCESSING, ON_HOLD, CANCELED),
    PENDING: (PROCESSING, ON_HOLD, CANCELED),
    PROCESSING: (COMPLETE, ON_HOLD, CANCELED),
    ON_HOLD: (CANCELED,),
    COMPLETE: (CLOSED,),
    CANCELED: (CLOSED,),
    CLOSED: (),
}
FINAL_STATUSES: Final = frozenset({COMPLETE, CANCELED, CLOSED})
# Standard statuses config may not redeclare. on-hold is missing on purpose: see the docstring.
_RESERVED: Final = frozenset(STANDARD_TRANSITIONS) - {ON_HOLD}
# Lowercase words joined by single hyphens, like the standard "on-hold": the names appear in
# URLs, metrics labels and channel status mappings, where spaces and case differences hurt.
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_MAX_NAME_LENGTH: Final = 40


class CustomStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One `[[status]]` config table: a status and the edges into and out of it."""

    name: str
    from_: tuple[str, ...] = msgspec.field(name="from")
    to: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatusMachine:
    """The statuses an order can be in and the legal moves between them (immutable)."""

    transitions: Mapping[str, tuple[str, ...]]

    @property
    def statuses(self) -> tuple[str, ...]:
        return tuple(self.transitions)

    def allowed(self, current: str) -> tuple[str, ...]:
        """The statuses `current` may move to, standard ones first, then config order."""
        return self.transitions.get(current, ())

    def can(self, current: str, target: str) -> bool:
        return target in self.allowed(current)

    def check(self, current: str, target: str) -> None:
        """Raise `IllegalTransition` (listing the legal targets) unless current -> target."""
        if not self.can(current, target):
            raise IllegalTransition(current, target, self.allowed(current))

    def is_final(self, status: str) -> bool:
        return status in FINAL_STATUSES


def build_status_machine(custom: Sequence[CustomStatus] = ()) -> StatusMachine:
    """Merge config statuses into the standard machine, or raise `StatusConfigError`."""
    problems = status_config_problems(custom)
    if problems:
        raise StatusConfigError(problems)
    return StatusMachine(_merge(custom))


def status_config_problems(custom: Sequence[CustomStatus]) -> list[Problem]:
    """Every problem in the `[[status]]` tables, each with its config key path."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, status in enumerate(custom):
        path = f"status[{index}].name"
        if status.name in _RESERVED:
            problems.append(
                Problem(path, f'"{status.name}" is a standard status; pick another name')
            )
        elif status.name in seen:
            problems.append(
                Problem(path, f'"{status.name}" is already declared in status[{seen[status.name]}]')
            )
        elif len(status.name) > _MAX_NAME_LENGTH or not _NAME.match(status.name):
            problems.append(
                Problem(
                    path,
                    f'"{status.name}" is not a status name; use lowercase words joined by '
                    f'hyphens, at most {_MAX_NAME_LENGTH} characters, like "awaiting-stock"',
                )
            )
        seen.setdefault(status.name, index)

    known = [*STANDARD_TRANSITIONS, *(s.name for s in custom if s.name not in STANDARD_TRANSITIONS)]
    for index, status in enumerate(custom):
        for position, source in enumerate(status.from_):
            path = f"status[{index}].from[{position}]"
            if source not in known:
                problems.append(Problem(path, _unknown(source, known)))
            elif source == CLOSED:
                problems.append(Problem(path, '"closed" is terminal; no status can follow it'))
            elif source == status.name:
                problems.append(Problem(path, "a status cannot follow itself"))
        for position, target in enumerate(status.to):
            path = f"status[{index}].to[{position}]"
            if target not in known:
                problems.append(Problem(path, _unknown(target, known)))
            elif target == NEW:
                problems.append(Problem(path, '"new" is where orders start; nothing returns to it'))
            elif target == status.name:
                problems.append(Problem(path, "a status cannot follow itself"))
    if problems:
        # Reachability on a graph with unknown names would only repeat the problems above.
        return problems

    transitions = _merge(custom)
    reachable = _reachable({NEW}, transitions)
    finishing = _reachable(FINAL_STATUSES, _reversed(transitions))
    for index, status in enumerate(custom):
        if status.name not in reachable:
            problems.append(
                Problem(
                    f"status[{index}].from",
                    f'"{status.name}" cannot be reached from "new"; '
                    "list a status in `from` that orders actually reach",
                )
            )
        if status.name not in finishing:
            problems.append(
                Problem(
                    f"status[{index}].to",
                    f'"{status.name}" cannot reach a final status '
                    f"({', '.join(sorted(FINAL_STATUSES))}); orders would be stuck in it",
                )
            )
    return problems


def _merge(custom: Sequence[CustomStatus]) -> dict[str, tuple[str, ...]]:
    edges: dict[str, list[str]] = {
        name: list(targets) for name, targets in STANDARD_TRANSITIONS.items()
    }
    for status in custom:
        edges.setdefault(status.name, [])
    for status in custom:
        for source in status.from_:
            _add_edge(edges, source, status.name)
        for target in status.to:
            _add_edge(edges, status.name, target)
    return {name: tuple(targets) for name, targets in edges.items()}


def _add_edge(edges: dict[str, list[str]], source: str, target: str) -> None:
    if target not in edges[source]:
        edges[source].append(target)


def _reachable(start: Iterable[str], edges: Mapping[str, Sequence[str]]) -> set[str]:
    seen = set(start)
    frontier = list(seen)
    while frontier:
        for successor in edges.get(frontier.pop(), ()):
            if successor not in seen:
                seen.add(successor)
                frontier.append(successor)
    return seen


def _reversed(edges: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    backwards: dict[str, list[str]] = {name: [] for name in edges}
    for source, targets in edges.items():
        for target in targets:
            backwards[target].append(source)
    return backwards


def _unknown(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f'did you mean "{close[0]}"?' if close else f"known: {', '.join(known)}"
    return f'unknown status "{name}"; {hint}'


STANDARD_MACHINE: Final = build_status_machine()
