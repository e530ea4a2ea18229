"""Issue 14's rule, checked: nothing in `actors/` depends on SQLite, so every actor runs the same
on the PostgreSQL store. Actors reach the database only through `somsd.store`'s interface."""

from __future__ import annotations

import ast
from pathlib import Path

ACTORS = Path(__file__).resolve().parent.parent / "actors"


def _imported_modules(source: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def test_no_actor_imports_sqlite3() -> None:
    offenders = sorted(
        path.name
        for path in ACTORS.glob("*.py")
        if "sqlite3" in _imported_modules(path.read_text(encoding="utf-8"))
    )
    assert offenders == []


def test_the_check_sees_an_import() -> None:
    assert "sqlite3" in _imported_modules("import sqlite3\n")
    assert "sqlite3" in _imported_modules("from sqlite3 import Connection\n")
    assert "sqlite3" not in _imported_modules("from somsd.store import Connection\n")
