"""Domain errors: what a decision refuses, with a stable code the HTTP layer maps to a status.

```
DomainError                 code: str, message, path (JSON path into the request, if any)
├── InvalidOrder            the order body is malformed or breaks a rule   -> 400 / 422
├── InvalidCommand          the command itself is wrong (unknown line, quantity too high,
│                           amount not positive)                           -> 422
└── Conflict                the command is fine but the order's state forbids it -> 409
    ├── IllegalTransition   the status machine has no such edge; lists the allowed targets
    └── DuplicateCommand    an id (payment, shipment, refund, return) was used before; an
                            actor may answer a redelivery of the same command as a success
StatusConfigError           `[[status]]` config problems, each with its key path (not a
                            DomainError: it is raised at load time, never for a request)
```

Every error is raised before anything changes: a decision function either returns all its
events or raises, so a refused command leaves the order exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = [
    "Conflict",
    "DomainError",
    "DuplicateCommand",
    "IllegalTransition",
    "InvalidCommand",
    "InvalidOrder",
    "Problem",
    "StatusConfigError",
]


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with an input, named by where it is: `$.lines[1].quantity`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DomainError(Exception):
    """A refused command: `code` is stable for machines, the message is written for people."""

    code: str = "domain_error"

    def __init__(self, message: str, *, code: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.path = path


class InvalidOrder(DomainError):
    """An order body that cannot be taken in; `problems` lists every rule it breaks.

    `code` is "malformed_json" when the body is not JSON at all (HTTP 400) and "invalid_order"
    when it is JSON of the wrong shape or breaks a validation rule (HTTP 422).
    """

    code = "invalid_order"

    def __init__(self, problems: Sequence[Problem], *, code: str | None = None) -> None:
        if not problems:
            raise ValueError("InvalidOrder needs at least one problem")
        self.problems = tuple(problems)
        summary = "; ".join(str(problem) for problem in self.problems)
        super().__init__(summary, code=code, path=self.problems[0].path)


class InvalidCommand(DomainError):
    """The command contradicts the order itself: a line it does not have, too many units."""

    code = "invalid_command"


class Conflict(DomainError):
    """The command is well-formed, but the order's current state does not allow it."""

    code = "conflict"


class IllegalTransition(Conflict):
    """No edge from `current` to `target` in the status machine; `allowed` lists the edges."""

    code = "illegal_transition"

    def __init__(self, current: str, target: str, allowed: tuple[str, ...]) -> None:
        self.current = current
        self.target = target
        self.allowed = allowed
        choices = ", ".join(allowed) if allowed else "none (the status is final)"
        super().__init__(f'cannot change status from "{current}" to "{target}"; allowed: {choices}')


class DuplicateCommand(Conflict):
    """The command's id was already used on this order (a redelivery, or a reused id)."""

    code = "duplicate"


class StatusConfigError(ValueError):
    """The `[[status]]` config is inconsistent; `problems` carry config key paths."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
