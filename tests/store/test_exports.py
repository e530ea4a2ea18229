"""The public surface of somsd.store is exactly what `__all__` says."""

from __future__ import annotations

import inspect

import somsd.store


def test_every_exported_name_exists_and_is_public() -> None:
    """Each name in __all__ resolves; classes and functions carry the public module path."""
    for name in somsd.store.__all__:
        value = getattr(somsd.store, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == "somsd.store", name


def test_no_public_name_is_left_out_of_all() -> None:
    """Anything importable from the package without an underscore is listed in __all__."""
    public = {
        name
        for name, value in vars(somsd.store).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and name != "annotations"  # from __future__, not ours
    }
    assert public == set(somsd.store.__all__)
