"""JSON log lines for journald: priority prefixes, levels, secrets, exceptions, stdlib routing."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import io
import json
import logging
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import structlog
import trio

from somsd import logs
from somsd.secrets import Secret

LINE = re.compile(rb"<(\d)>(\{.*\})")


@pytest.fixture
def stream() -> Iterator[io.BytesIO]:
    """Logging configured into a BytesIO at debug level; everything global restored after."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    buffer = io.BytesIO()
    logs.configure_logging("debug", stream=buffer, cache_loggers=False)
    yield buffer
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logs.forget_secret_values()
    logs.set_level("info")
    for handler in root.handlers:
        if handler not in saved_handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved_level)


def read_lines(stream: io.BytesIO) -> list[tuple[int, dict[str, Any]]]:
    """Each line as (journald priority, decoded JSON); fails on a line of any other shape."""
    parsed = []
    for raw in stream.getvalue().splitlines():
        match = LINE.fullmatch(raw)
        assert match is not None, raw
        parsed.append((int(match[1]), json.loads(match[2])))
    return parsed


def test_each_level_gets_its_journald_priority_prefix(stream: io.BytesIO) -> None:
    """debug, info, warning, error, exception and critical carry <7>, <6>, <4>, <3>, <3>, <2>."""
    log = logs.get_logger("somsd.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("x")
    log.critical("c")
    log.log(logging.WARNING, "numeric")

    got = [(priority, line["event"], line["level"]) for priority, line in read_lines(stream)]
    assert got == [
        (7, "d", "debug"),
        (6, "i", "info"),
        (4, "w", "warning"),
        (3, "e", "error"),
        (3, "x", "error"),
        (2, "c", "critical"),
        (4, "numeric", "warning"),
    ]


def test_line_is_one_json_object_with_event_level_time_and_context(stream: io.BytesIO) -> None:
    """A line starts with event, level, timestamp (UTC ISO) and logger, then bound context."""
    structlog.contextvars.bind_contextvars(actor="inventory")
    logs.get_logger("somsd.test").info("stock %s", "changed", sku="MUG-1", qty=3)

    [(priority, line)] = read_lines(stream)
    assert priority == 6
    assert list(line)[:4] == ["event", "level", "timestamp", "logger"]
    assert line["event"] == "stock changed"
    assert line["logger"] == "somsd.test"
    assert line["actor"] == "inventory"
    assert (line["sku"], line["qty"]) == ("MUG-1", 3)
    stamp = datetime.datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == datetime.timedelta(0)


def test_lines_below_the_level_are_dropped(stream: io.BytesIO) -> None:
    """At warning, debug and info calls write nothing, warning and above still do."""
    logs.set_level("warning")
    log = logs.get_logger()
    log.debug("no")
    log.info("no")
    log.warning("yes")
    log.error("yes")

    assert [line["level"] for _, line in read_lines(stream)] == ["warning", "error"]


def test_set_level_reaches_loggers_cached_before_the_change() -> None:
    """A hot reload's set_level changes loggers already cached on first use, stdlib too."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    buffer = io.BytesIO()
    try:
        logs.configure_logging("info", stream=buffer, cache_loggers=True)
        log = logs.get_logger("somsd.cached")
        stdlib = logging.getLogger("httpx")
        log.debug("hidden before")
        log.info("cached now")
        stdlib.debug("hidden before")

        logs.set_level("debug")
        log.debug("shown after")
        stdlib.debug("shown after")
        logs.set_level("error")
        log.warning("hidden after")
        stdlib.warning("hidden after")
    finally:
        structlog.reset_defaults()
        logs.set_level("info")
        for handler in root.handlers:
            if handler not in saved_handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(saved_level)

    assert [line["event"] for _, line in read_lines(buffer)] == [
        "cached now",
        "shown after",
        "shown after",
    ]


def test_unknown_level_is_rejected_naming_the_valid_ones() -> None:
    """A typo in log_level fails loudly and says what would have been accepted."""
    with pytest.raises(ValueError, match="'verbose' is unknown; use one of debug, info, warning"):
        logs.set_level("verbose")


@dataclasses.dataclass
class Credentials:
    user: str
    password: Secret


class ChannelSection(msgspec.Struct):
    name: str
    key: Secret
    extra: dict[str, Any]


def test_secret_objects_render_as_stars_wherever_they_are_nested(stream: io.BytesIO) -> None:
    """A Secret at top level or inside dicts, lists, tuples, Structs and dataclasses shows ***."""
    value = "s3cr3t-value-123"
    logs.get_logger().info(
        "config_loaded",
        token=Secret(value),
        tokens=[Secret(value), (Secret(value),)],
        section=ChannelSection("shop", Secret(value), {"nested": [Secret(value)]}),
        login=Credentials("api", Secret(value)),
        by_name={"shop": {"key": Secret(value)}},
    )

    assert value.encode() not in stream.getvalue()
    [(_, line)] = read_lines(stream)
    assert line["token"] == "***"
    assert line["tokens"] == ["***", ["***"]]
    assert line["section"] == {"name": "shop", "key": "***", "extra": {"nested": ["***"]}}
    assert line["login"] == {"user": "api", "password": "***"}
    assert line["by_name"] == {"shop": {"key": "***"}}


def test_registered_secret_value_is_cut_out_of_every_string(stream: io.BytesIO) -> None:
    """A raw secret value in an event, a value, a key, an exception or a stdlib line shows ***."""
    # Quote and backslash: JSON escapes them, so scrubbing after encoding would miss them.
    value = 'pa"ss\\word-42'
    logs.register_secret_values([value, Secret("other-secret-99")])
    log = logs.get_logger()
    log.info(f"login with {value}", url=f"https://shop/?key={value}", **{value: 1})
    log.info("rotated", note="other-secret-99 leaked")
    try:
        raise RuntimeError(f"upstream said: bad key {value}")
    except RuntimeError:
        log.exception("upstream_failed")
    logging.getLogger("httpx").warning("GET %s", f"https://shop/?key={value}")

    output = stream.getvalue()
    assert value.encode() not in output
    assert json.dumps(value)[1:-1].encode() not in output
    assert b"other-secret-99" not in output
    first, second, third, fourth = (line for _, line in read_lines(stream))
    assert first["event"] == "login with ***"
    assert first["url"] == "https://shop/?key=***"
    assert first["***"] == 1
    assert second["note"] == "*** leaked"
    assert third["exception"][0]["exc_value"] == "upstream said: bad key ***"
    assert fourth["event"] == "GET https://shop/?key=***"


def test_values_too_short_to_be_secrets_are_not_scrubbed(stream: io.BytesIO) -> None:
    """Registering "abc" must not cut "abc" out of every line (MIN_SECRET_CHARS)."""
    logs.register_secret_values(["abc"])
    logs.get_logger().info("abc order")

    assert read_lines(stream)[0][1]["event"] == "abc order"


async def crash_in_child() -> None:
    raise ValueError("stock below zero for MUG-1")


async def test_single_exception_group_is_logged_as_the_error_inside(
    stream: io.BytesIO,
) -> None:
    """An error leaving a nursery logs as its own type and frames, not as ExceptionGroup."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(crash_in_child)
    except ExceptionGroup:
        logs.get_logger().exception("actor_crashed")

    [(priority, line)] = read_lines(stream)
    assert priority == 3
    [error] = line["exception"]
    assert error["exc_type"] == "ValueError"
    assert error["exc_value"] == "stock below zero for MUG-1"
    assert error["frames"][-1]["name"] == "crash_in_child"


def test_exception_group_with_several_errors_is_kept_whole(stream: io.BytesIO) -> None:
    """Two errors from one nursery both stay in the line, inside their group."""
    group = ExceptionGroup("two failed", [ValueError("a"), KeyError("b")])
    logs.get_logger().error("actors_crashed", exc_info=group)

    [(_, line)] = read_lines(stream)
    [rendered] = line["exception"]
    assert rendered["exc_type"] == "ExceptionGroup"
    assert [e[0]["exc_type"] for e in rendered["exceptions"]] == ["ValueError", "KeyError"]


def test_stdlib_logging_goes_through_the_same_pipeline(stream: io.BytesIO) -> None:
    """httpx records get the prefix, JSON, logger name, context and level filter."""
    structlog.contextvars.bind_contextvars(actor="http")
    stdlib = logging.getLogger("httpx")
    stdlib.info("Running on %s", "http://127.0.0.1:8470")
    logs.set_level("warning")
    stdlib.info("dropped")
    try:
        raise OSError("address in use")
    except OSError:
        stdlib.exception("bind failed")

    [(p1, first), (p2, second)] = read_lines(stream)
    assert (p1, first["level"], p2, second["level"]) == (6, "info", 3, "error")
    assert first["event"] == "Running on http://127.0.0.1:8470"
    assert first["logger"] == "httpx"
    assert first["actor"] == "http"
    assert second["exception"][0]["exc_type"] == "OSError"


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


def test_values_json_cannot_hold_are_rendered_instead_of_failing(stream: io.BytesIO) -> None:
    """Paths, Decimals, datetimes, exceptions and unknown objects render; the call never raises."""
    logs.get_logger().info(
        "odd_values",
        path=pathlib.Path("/var/lib/somsd/events.db"),
        amount=decimal.Decimal("29.90"),
        at=datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC),
        error=TimeoutError("read timed out"),
        thing=Opaque(),
        by_tuple={(1, 2): "x"},
    )

    [(_, line)] = read_lines(stream)
    assert line["path"] == "/var/lib/somsd/events.db"
    assert line["amount"] == "29.90"
    assert line["at"] == "2026-11-21T10:00:00Z"
    assert line["error"] == "TimeoutError: read timed out"
    assert line["thing"] == "<Opaque>"
    assert line["by_tuple"] == "{(1, 2): 'x'}"


def test_logger_offers_no_async_methods() -> None:
    """structlog's ainfo() needs asyncio and fails under trio, so our logger has none."""
    assert not [
        name for name in dir(logs.Logger) if name.startswith("a") and name[1:] in dir(logs.Logger)
    ]


def test_human_lines_for_a_terminal_are_readable_and_redacted() -> None:
    """`human=True` (stdout on a TTY): a console line, no JSON or `<N>` prefix, secrets cut."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    buffer = io.BytesIO()
    logs.configure_logging("info", stream=buffer, cache_loggers=False, human=True)
    logs.register_secret_values(["hunter2-very-secret"])
    try:
        log = logs.get_logger("somsd.test")
        log.info("order_received", order_id="o-1", note="token hunter2-very-secret")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("step_failed")
    finally:
        structlog.reset_defaults()
        logs.forget_secret_values()
        logs.set_level("info")
        for handler in root.handlers:
            if handler not in saved_handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(saved_level)
    text = buffer.getvalue().decode()
    first = text.splitlines()[0]
    assert not first.startswith(("<", "{")), first
    assert "order_received" in first
    assert "order_id=o-1" in first
    assert "hunter2-very-secret" not in text
    assert "ValueError: boom" in text
