"""Structured logs: one JSON object per line on stdout, with a journald priority prefix.

A line looks like `<6>{"event":"order_received","level":"info","timestamp":"…","order_id":…}`.
systemd connects stdout to journald, which strips the `<N>` prefix and files the line under
that priority (`SyslogLevelPrefix=`, on by default; `sd-daemon(3)`), so `journalctl -p err`
works while the rest of the line stays machine-readable JSON. We write unbuffered and let
systemd collect (structlog's `docs/logging-best-practices.md`).

The pipeline, in order (each step exists for a reason named at its definition):

1. `merge_contextvars` — context bound per trio task (`actor=`, `order_id=`); trio copies the
   context into child tasks and worker threads, siblings stay isolated.
2. `add_log_level`, `add_logger_name`, `TimeStamper(fmt="iso", utc=True)`.
3. `unwrap_single_exception_group` then `dict_tracebacks` (locals off: they would show secret
   values a function revealed, and bloat every line).
4. `redact_secrets` — `Secret` objects anywhere become `***`, registered raw secret values are
   cut out of every string.
5. `render_journald_line` — msgspec JSON plus the `<N>` prefix.

stdlib `logging` (httpx, httpcore) goes through the same steps via
`structlog.stdlib.ProcessorFormatter`, so there is one format and one level.

The level is checked by our own `Logger` wrapper against a process-wide threshold rather than
by `structlog.make_filtering_bound_logger`: that bakes the level into a class, and a logger
cached on first use keeps the class it was made with, so a hot reload could never lower or
raise the level of loggers already in use. `set_level` moves the threshold for all of them.
Only sync methods exist: structlog's async ones (`ainfo`) need an asyncio loop and fail under
trio (reference/stack-notes.md, section 6).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any, BinaryIO, Final, cast

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from somsd.errors import unwrap_exception_group
from somsd.secrets import REDACTED, Secret

__all__ = [
    "LEVELS",
    "MIN_SECRET_CHARS",
    "Logger",
    "add_logger_name",
    "configure_logging",
    "forget_secret_values",
    "get_logger",
    "redact_secrets",
    "register_secret_values",
    "render_console_line",
    "render_journald_line",
    "set_level",
    "unwrap_single_exception_group",
]

# Names accepted in `[daemon] log_level`, mapped to stdlib's numbers so stdlib loggers share them.
LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# syslog priorities (sd-daemon(3): SD_CRIT "<2>", SD_ERR "<3>", SD_WARNING "<4>", SD_INFO "<6>",
# SD_DEBUG "<7>"), keyed by the `level` value `add_log_level` writes.
_PRIORITY_PREFIX: Final[dict[str, bytes]] = {
    "critical": b"<2>",
    "error": b"<3>",
    "warning": b"<4>",
    "info": b"<6>",
    "debug": b"<7>",
}

# A registered secret shorter than this is not scrubbed from strings: cutting two or three
# characters out of every line would mangle ordinary words and ids, and a value that short
# protects nothing anyway. Config validation is the place to reject it.
MIN_SECRET_CHARS: Final = 6


class _Threshold:
    """The level shared by every `Logger`; an object so `set_level` is one attribute store."""

    __slots__ = ("level",)

    def __init__(self, level: int) -> None:
        self.level = level


_threshold = _Threshold(logging.INFO)


def _interpolate(event: str, args: tuple[Any, ...]) -> str:
    # Same rule as structlog's filtering loggers: %-format only when arguments were given, so
    # an event containing a literal "%" is left alone.
    return event % args if args else event


class Logger(structlog.BoundLoggerBase):
    """A bound logger whose level follows `set_level`, with sync methods only.

    Below the threshold a call costs one attribute read and a comparison; the event dict is
    never built.
    """

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        if _threshold.level <= logging.DEBUG:
            self._proxy_to_logger("debug", _interpolate(event, args), **kw)

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        if _threshold.level <= logging.INFO:
            self._proxy_to_logger("info", _interpolate(event, args), **kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        if _threshold.level <= logging.WARNING:
            self._proxy_to_logger("warning", _interpolate(event, args), **kw)

    warn = warning

    def error(self, event: str, *args: Any, **kw: Any) -> None:
        if _threshold.level <= logging.ERROR:
            self._proxy_to_logger("error", _interpolate(event, args), **kw)

    def exception(self, event: str, *args: Any, **kw: Any) -> None:
        """Log at error level with the exception being handled."""
        kw.setdefault("exc_info", True)
        self.error(event, *args, **kw)

    def critical(self, event: str, *args: Any, **kw: Any) -> None:
        if _threshold.level <= logging.CRITICAL:
            self._proxy_to_logger("critical", _interpolate(event, args), **kw)

    def log(self, level: int, event: str, *args: Any, **kw: Any) -> None:
        """Log at a numeric stdlib level (`logging.WARNING`)."""
        if _threshold.level <= level:
            name = logging.getLevelName(level).lower()
            self._proxy_to_logger(name, _interpolate(event, args), **kw)


def get_logger(name: str | None = None, **initial_values: Any) -> Logger:
    """A logger for module `name`, which each of its lines carries as `logger`.

    Same as `structlog.get_logger(name)`, typed: the cast is honest once `configure_logging`
    ran (it installs `Logger` as the wrapper class); before that structlog's default logger
    has the same sync methods. Safe at module level: the logger is built on first use.
    """
    args = () if name is None else (name,)
    return cast(Logger, structlog.get_logger(*args, **initial_values))


def _parse_level(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"log level {level!r} is unknown; use one of {', '.join(LEVELS)}"
        ) from None


def set_level(level: str) -> None:
    """Change the level of every logger, structlog and stdlib alike, without restarting."""
    number = _parse_level(level)
    _threshold.level = number
    logging.getLogger().setLevel(number)


# --- Secret values -----------------------------------------------------------------------------


class _SecretValues:
    """Raw secret values to cut out of log strings, as one compiled alternation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self.pattern: re.Pattern[str] | None = None

    def register(self, values: Iterable[str | Secret]) -> None:
        with self._lock:
            raw = {v.reveal() if isinstance(v, Secret) else v for v in values}
            self._values |= {v for v in raw if len(v) >= MIN_SECRET_CHARS}
            self._compile()

    def forget(self) -> None:
        with self._lock:
            self._values = frozenset()
            self._compile()

    def _compile(self) -> None:
        # Longest first, so a secret that contains another is cut out whole. The new pattern
        # replaces the old in one store: threads logging meanwhile see one or the other.
        ordered = sorted(self._values, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None


_secret_values = _SecretValues()


def register_secret_values(values: Iterable[str | Secret]) -> None:
    """Cut these values out of every logged string from now on.

    The daemon registers the secrets it loaded from files and credentials (on start and on
    each reload; earlier values stay registered, since an old value may still turn up in an
    upstream's error message). This catches a secret that escaped its `Secret` wrapper, say
    inside an httpx error that quotes a URL. Values shorter than `MIN_SECRET_CHARS` are skipped.
    """
    _secret_values.register(values)


def forget_secret_values() -> None:
    """Drop all registered values (for tests that register their own)."""
    _secret_values.forget()


# --- Processors --------------------------------------------------------------------------------


def add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add `logger`: the stdlib logger's name (`httpx`) or the name given to
    `get_logger`, which `BytesLoggerFactory` hands to the `BytesLogger` it makes."""
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict


def unwrap_single_exception_group(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Log the real error instead of trio's one-child `ExceptionGroup` around it.

    trio wraps every error leaving a nursery in an `ExceptionGroup` (strict exception groups,
    the default since trio 0.25), so a crashed actor would otherwise log as "Exceptions from
    Trio nursery (1 sub-exception)". Groups with several errors are kept: each one matters.
    """
    exc_info = event_dict.get("exc_info")
    if not exc_info:
        return event_dict
    if exc_info is True:
        exc: object = sys.exc_info()[1]
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    else:
        exc = exc_info
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        event_dict["exc_info"] = unwrap_exception_group(exc)
    return event_dict


def _to_loggable(obj: Any) -> Any:
    """msgspec `enc_hook`: turn what msgspec can not encode into something it can.

    msgspec already encodes datetimes (RFC 3339), Decimals (as strings, so money keeps its
    digits), UUIDs, enums, Structs and dataclasses; this sees the rest.
    """
    if isinstance(obj, Secret):
        return REDACTED
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    # A log call must never fail on an odd value: show its repr instead.
    return repr(obj)


def _scrub(value: Any, pattern: re.Pattern[str]) -> Any:
    """Replace registered secret values in every string (keys too) of builtin data."""
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):
        return {_scrub(k, pattern): _scrub(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, pattern) for v in value]
    return value


def _as_builtins(event_dict: EventDict) -> dict[str, Any]:
    try:
        return cast(
            dict[str, Any], msgspec.to_builtins(event_dict, enc_hook=_to_loggable, str_keys=True)
        )
    except Exception:  # one unencodable value must not cost the whole line
        safe: dict[str, Any] = {}
        for key, value in event_dict.items():
            try:
                safe[str(key)] = msgspec.to_builtins(value, enc_hook=_to_loggable, str_keys=True)
            except Exception:  # e.g. a dict keyed by tuples
                safe[str(key)] = repr(value)
        return safe


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Make the event dict plain JSON-ready data with no secret left in it.

    `msgspec.to_builtins` walks everything — nested dicts, lists, Structs, dataclasses — and
    calls `_to_loggable` on each `Secret`, which becomes `***`. Then registered raw values are
    cut out of every string, before JSON encoding, so escaping can not hide a match and the
    replacement can not break the JSON.
    """
    data = _as_builtins(event_dict)
    pattern = _secret_values.pattern
    if pattern is not None:
        data = _scrub(data, pattern)
    return data


_encoder = msgspec.json.Encoder(enc_hook=_to_loggable)
_FIRST_KEYS: Final = ("event", "level", "timestamp", "logger")


def render_journald_line(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
    """Encode as one JSON line, prefixed with the journald priority of its level.

    `event`, `level`, `timestamp` and `logger` come first, so a human scanning `journalctl`
    reads them without hunting.
    """
    prefix = _PRIORITY_PREFIX.get(event_dict.get("level", method_name), b"<6>")
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    try:
        return prefix + _encoder.encode(ordered)
    except Exception as exc:  # never lose the line; say why it is degraded
        fallback = {key: repr(value) for key, value in ordered.items()}
        fallback["log_render_error"] = f"{type(exc).__name__}: {exc}"
        return prefix + _encoder.encode(fallback)


_console = structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)


def render_console_line(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
    """One readable line for a person at a terminal (`somsd run` with stdout on a TTY).

    The same event dict as the journald line, after redaction; the `exception` list that
    `dict_tracebacks` made is written as `Type: message` with its frames below the line.
    """
    exception = event_dict.pop("exception", None)
    if isinstance(exception, list):
        event_dict["exception"] = _exception_text(exception)
    elif exception is not None:
        event_dict["exception"] = str(exception)
    return _console(logger, method_name, event_dict).encode("utf-8", "replace")


def _exception_text(chain: list[Any]) -> str:
    lines: list[str] = []
    for item in chain:
        if not isinstance(item, dict):
            lines.append(str(item))
            continue
        lines.append(f"{item.get('exc_type', '?')}: {item.get('exc_value', '')}")
        for frame in item.get("frames", ()) if isinstance(item.get("frames"), list) else ():
            if isinstance(frame, dict):
                lines.append(
                    f"  {frame.get('filename')}:{frame.get('lineno')} in {frame.get('name')}"
                )
    return "\n".join(lines)


def _render_text(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    # ProcessorFormatter insists on str; our handler turns it back into bytes.
    return render_journald_line(logger, method_name, event_dict).decode("utf-8")


def _render_console_text(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    return render_console_line(logger, method_name, event_dict).decode("utf-8")


def _is_terminal(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or exotic stream is no terminal
        return False


# --- Wiring ------------------------------------------------------------------------------------


class _StdlibHandler(logging.Handler):
    """Writes records formatted by `ProcessorFormatter` to the log stream.

    It writes through a `structlog.BytesLogger` on the same stream, which takes structlog's
    per-file lock, so stdlib lines from worker threads never interleave with ours.
    """

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._out = structlog.BytesLogger(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.msg(self.format(record).encode("utf-8"))
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)


def configure_logging(
    level: str = "info",
    *,
    stream: BinaryIO | None = None,
    cache_loggers: bool = True,
    human: bool | None = None,
) -> None:
    """Send structlog and stdlib logging as JSON lines to `stream` (default: stdout).

    `human=True` renders readable console lines instead (structlog's `ConsoleRenderer`, no
    colours, no `<N>` prefix); the default `None` picks that when the stream is a terminal, so
    `somsd run` by hand is readable and journald (a pipe) still gets JSON.

    Call once at start-up, before the first log line; calling again replaces the setup (tests
    do). `cache_loggers=False` is for tests: a logger cached on first use keeps the processors
    it was built with and escapes `structlog.testing.capture_logs` (structlog `docs/testing.md`).
    """
    number = _parse_level(level)
    out: BinaryIO = stream if stream is not None else sys.stdout.buffer
    if human is None:
        human = _is_terminal(out)
    renderer: Processor = render_console_line if human else render_journald_line
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    exception_renderer = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_logger_name,
        timestamper,
    ]
    finishing: list[Processor] = [
        unwrap_single_exception_group,
        exception_renderer,
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, *finishing, renderer],
        wrapper_class=Logger,
        context_class=dict,
        logger_factory=structlog.BytesLoggerFactory(out),
        cache_logger_on_first_use=cache_loggers,
    )

    handler = _StdlibHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *finishing,
                _render_console_text if human else _render_text,
            ],
        )
    )
    root = logging.getLogger()
    # Replace only a handler we installed earlier; others (pytest's capture) stay.
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    _threshold.level = number
    root.setLevel(number)
