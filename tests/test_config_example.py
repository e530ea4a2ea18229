"""config/somsd.example.toml documents every key the config Structs accept (issue 16, item 12).

The test walks `Config` and its nested Structs, so a key added to somsd/config.py without a line
in the example fails here. A key counts as documented when it appears in its table, set or
commented out (`# key = value`), on a line with a comment or under a comment line of prose.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import msgspec

from somsd.config import Config, parse_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "somsd.example.toml"
# Set by the loader from the file's path, not a key anyone writes.
NOT_KEYS = frozenset({"source"})

_HEADER = re.compile(r"^\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_ASSIGNMENT = re.compile(r"^([A-Za-z0-9_-]+)\s*=\s*(.*)$")


def _struct_of(annotation: object) -> type[msgspec.Struct] | None:
    """The Struct inside `X`, `X | None` or `tuple[X, ...]`, if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (tuple, list, typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            found = _struct_of(argument)
            if found is not None:
                return found
    return None


def struct_keys(struct: type[msgspec.Struct], prefix: str = "") -> Iterator[str]:
    """Every key path (`location.address.street`) the Struct and its nested ones accept."""
    for field in msgspec.structs.fields(struct):
        if not prefix and field.encode_name in NOT_KEYS:
            continue
        path = f"{prefix}{field.encode_name}"
        nested = _struct_of(field.type)
        if nested is None:
            yield path
        else:
            yield from struct_keys(nested, path + ".")


def documented_keys(text: str) -> dict[str, bool]:
    """Key path -> whether some occurrence of it carries a comment."""
    found: dict[str, bool] = {}
    table = ""
    prose_above = False
    for raw in text.splitlines():
        line = raw.strip()
        commented = line.startswith("#")
        body = line.lstrip("#").strip() if commented else line
        header = _HEADER.match(body)
        assignment = _ASSIGNMENT.match(body)
        if header is not None:
            table = header[1]
            prose_above = False
            continue
        if assignment is None:
            prose_above = commented and bool(body)
            continue
        key, value = assignment[1], assignment[2]
        path = f"{table}.{key}" if table else key
        # `key = value  # why`, and `# key = value  # why` for a key left unset.
        has_comment = prose_above or "#" in value
        found[path] = found.get(path, False) or has_comment
        if value.startswith("{"):
            inline = tomllib.loads(f"x = {value.split('#')[0]}")["x"]
            for sub in inline:
                found[f"{path}.{sub}"] = found.get(f"{path}.{sub}", False) or has_comment
        prose_above = False
    return found


def test_every_config_key_is_in_the_example_with_a_comment() -> None:
    documented = documented_keys(EXAMPLE.read_text())
    keys = list(struct_keys(Config))
    assert "location.address.street" in keys  # the walk reaches nested tables
    assert "status.from" in keys  # and uses the names written in TOML
    missing = [key for key in keys if key not in documented]
    assert not missing, f"keys missing from {EXAMPLE.name}: {missing}"
    uncommented = [key for key in keys if not documented[key]]
    assert not uncommented, f"keys without a comment in {EXAMPLE.name}: {uncommented}"


def test_the_example_parses_with_its_optional_keys_set(tmp_path: Path) -> None:
    """As shipped, and with every commented-out key line switched on (each file present)."""
    text = EXAMPLE.read_text()
    switched_on = "\n".join(re.sub(r"^# (?=[a-z_]+ = )", "", line) for line in text.splitlines())
    for body in (text, switched_on):
        for name in set(re.findall(r'_file = "([^"/]+)"', body)):
            (tmp_path / name).write_text(f"value-of-{name}\n")
        for name in set(re.findall(r'logo = "([^"/]+)"', body)):  # logos must be PNGs
            (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n")
        config = parse_config(
            body, config_dir=tmp_path, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}
        )
        assert [channel.name for channel in config.channel] == ["shop", "b2b", "edi"]
    assert "low_stock_threshold = 5" in switched_on
