"""Fixtures: the simulator-serving fixture of the adapter tests."""

from tests.adapters.conftest import serve

__all__ = ["serve"]
