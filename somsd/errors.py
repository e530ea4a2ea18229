"""Error helpers shared by the kernel.

trio wraps every error that leaves a nursery in an `ExceptionGroup` (strict exception groups are
the default since trio 0.25). A group holding a single error says nothing the error itself does
not, and it hides the real type from logs and from code that classifies failures, so it is
unwrapped first.
"""

from __future__ import annotations

__all__ = ["unwrap_exception_group"]


def unwrap_exception_group(error: BaseException) -> BaseException:
    """Return the innermost error of a chain of single-exception groups."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
