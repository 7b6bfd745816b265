"""The daemon's log lines: one event per line, as logfmt (default) or JSON.

Every log call in mtpoold is `log_event`::

    log_event(log, logging.WARNING, "flood_wait", account="acc-1", seconds=37, until=iso_utc(t))

which the handler `configure_logging` installs writes as one line on stderr::

    ts=2026-12-02T03:00:00.123Z level=warning logger=mtpoold.pool event=flood_wait \
account=acc-1 seconds=37 until=2026-12-02T03:00:37Z

or, with ``--log-format json``, as one JSON object per line (the same keys). A field whose
value is None is left out. Values are quoted as logfmt wants them (`logfmt_value`): a value
that is empty or holds a space, ``=``, ``"``, a backslash or anything unprintable is written
in double quotes with ``\\"``, ``\\\\``, ``\\n``, ``\\r``, ``\\t`` and ``\\uXXXX`` escapes, so a
line never breaks.
An exception's traceback is one quoted ``exc=`` value (redacted, `mtpoold._errors.redact`).

A record that does not come from `log_event` — Telethon's, trio-websocket's, asyncio's —
is written as ``event=log msg="<its text>"``, with ``account=``/``proxy=`` when
`AioContextFilter` found the account worker's context: no line is keyless.

Nothing is formatted while the level is off: `log_event` asks ``logger.isEnabledFor`` first,
and the line is rendered only by the handler's formatter.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import re
import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Final, TypeAlias, final

import attrs

from ._errors import redact

__all__ = [
    "ISO_UTC_MAX_S",
    "LOG_FORMATS",
    "AioContext",
    "AioContextFilter",
    "FieldValue",
    "JsonFormatter",
    "aio_context",
    "LogEvent",
    "LogfmtFormatter",
    "configure_logging",
    "iso_utc",
    "log_event",
    "log_uncaught",
    "logfmt_value",
]

#: What a field may hold: rendered as text (logfmt) or the JSON value of the same type.
FieldValue: TypeAlias = str | int | float | bool | None
ExcInfo: TypeAlias = (
    bool
    | BaseException
    | tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
    | None
)

#: ``--log-format`` choices; the first is the default.
LOG_FORMATS: Final = ("logfmt", "json")
#: The event name of a record that did not come from `log_event` (its text is ``msg=``).
FOREIGN_EVENT: Final = "log"
#: Keys every line starts with; a field of the same name is written with a ``_`` suffix.
RESERVED_KEYS: Final = frozenset({"ts", "level", "logger", "event", "msg", "exc"})
#: Where `AioContextFilter` puts the fields it adds to a foreign record.
CONTEXT_ATTR: Final = "mtpoold_context"

#: An ASCII value written bare: printable, no space, ``=``, ``"`` or backslash.
_BARE_ASCII_RE: Final = re.compile(r"[!#-<>-\[\]-~]+")
#: What an ASCII value needs escaped inside quotes.
_ASCII_ESCAPE_RE: Final = re.compile(r'["\\\x00-\x1f\x7f]')
_ESCAPES: Final = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


@final
@attrs.frozen
class LogEvent:
    """A record's message when it came from `log_event`: the event and its fields.

    ``str()`` renders ``event=NAME key=value ...`` (what ``record.getMessage()`` returns,
    e.g. under pytest's caplog); formatters read `name` and `fields` directly.

    Attributes:
        name: The event name (``"call"``, ``"flood_wait"``, ...).
        fields: The fields in call order.
    """

    name: str
    fields: Mapping[str, FieldValue]

    def __str__(self) -> str:
        return " ".join(_pair(k, v) for k, v in (("event", self.name), *_safe_items(self.fields)))


def log_event(
    logger: logging.Logger,
    level: int,
    event: str,
    /,
    *,
    exc_info: ExcInfo = None,
    **fields: FieldValue,
) -> None:
    """Log one event with its fields: the one way mtpoold logs.

    Nothing is built when ``level`` is off for ``logger``; the line is rendered by the
    handler's formatter (`LogfmtFormatter` or `JsonFormatter`).

    Args:
        logger: The module's logger (``mtpoold.<room>``).
        level: ``logging.DEBUG`` ... ``logging.CRITICAL``.
        event: The event name: lower case words joined by ``_`` (or ``.``), one per line.
        exc_info: As for ``logging``: True (the exception being handled), an exception, or
            an ``exc_info`` tuple; written as one quoted, redacted ``exc=`` value.
        **fields: The event's fields; values `FieldValue`. Keys in `RESERVED_KEYS` are
            written with a ``_`` suffix. Never pass a secret or personal data (phones,
            names, message text); text from outside goes through `mtpoold._errors.redact`.
    """
    if not logger.isEnabledFor(level):
        return
    logger.log(level, LogEvent(event, fields), exc_info=exc_info, stacklevel=2)


#: The last second ISO 8601's four-digit year can write (9999-12-31T23:59:59Z), Unix seconds.
ISO_UTC_MAX_S: Final = 253_402_300_799


def iso_utc(unix_s: float) -> str:
    """A wall-clock time (Unix seconds) as ISO 8601 UTC to the second: ``2026-12-02T03:00:37Z``.

    Total: a time past `ISO_UTC_MAX_S` (a cooldown of 1e308 s from the config, a FLOOD_WAIT of
    1e17 s from Telegram) or not finite is written as ``9999-12-31T23:59:59Z``, one before
    the epoch as ``1970-01-01T00:00:00Z``; never OverflowError or OSError (EOVERFLOW), which
    would fail the job whose cooldown is being logged (shared case 002's kind).
    """
    if not unix_s <= ISO_UTC_MAX_S:  # NaN too
        unix_s = ISO_UTC_MAX_S
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(unix_s, 0)))


def logfmt_value(value: FieldValue) -> str:
    """One value as logfmt text: quoted and escaped when it must be (see the module docstring).

    None is ``""`` (`log_event` leaves a None field out); booleans ``true``/``false``; an
    integral float is written as an integer (``37``), others by ``repr`` (``12.5``, ``inf``).
    """
    text = _text(value)
    if text and (
        _BARE_ASCII_RE.fullmatch(text)
        if text.isascii()
        else not any(c in ' ="\\' or not c.isprintable() for c in text)
    ):
        return text
    if text.isascii() and not _ASCII_ESCAPE_RE.search(text):
        return f'"{text}"'
    return '"' + "".join(_escape(c) for c in text) + '"'


def _text(value: FieldValue) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def _escape(c: str) -> str:
    found = _ESCAPES.get(c)
    if found is not None:
        return found
    if c.isprintable():
        return c
    code = ord(c)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _pair(key: str, value: FieldValue) -> str:
    return f"{key}={logfmt_value(value)}"


def _safe_items(fields: Mapping[str, FieldValue]) -> list[tuple[str, FieldValue]]:
    """The fields to write: None left out, reserved keys suffixed with ``_``."""
    return [(f"{k}_" if k in RESERVED_KEYS else k, v) for k, v in fields.items() if v is not None]


def _json_value(value: FieldValue) -> FieldValue:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no inf/nan
    return value


def _timestamp(record: logging.LogRecord) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{ts}.{int(record.msecs):03d}Z"


def _line_fields(
    record: logging.LogRecord, formatter: logging.Formatter
) -> list[tuple[str, FieldValue]]:
    """The keys and values of one line, in order."""
    head: list[tuple[str, FieldValue]] = [
        ("ts", _timestamp(record)),
        ("level", record.levelname.lower()),
        ("logger", record.name),
    ]
    msg = record.msg
    if isinstance(msg, LogEvent):
        head.append(("event", msg.name))
        head.extend(_safe_items(msg.fields))
    else:
        head.append(("event", FOREIGN_EVENT))
        context = getattr(record, CONTEXT_ATTR, None)
        if isinstance(context, Mapping):
            head.extend(_safe_items(context))
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record still makes a line
            text = f"{record.msg!r} {record.args!r}"
        head.append(("msg", _redact_lines(text)))
    if record.exc_info:
        head.append(("exc", _redact_lines(formatter.formatException(record.exc_info))))
    elif record.exc_text:
        head.append(("exc", _redact_lines(record.exc_text)))
    return head


def _redact_lines(text: str) -> str:
    """`redact` line by line: secrets out, line breaks and indentation kept (a traceback
    stays readable once its ``\\n`` escapes are undone)."""
    return "\n".join(
        line[: len(line) - len(line.lstrip())] + redact(line, limit=None)
        for line in text.splitlines()
    )


class LogfmtFormatter(logging.Formatter):
    """One record as one logfmt line: ``ts=… level=… logger=… event=… key=value …``.

    ``ts`` is UTC with milliseconds (``2026-12-02T03:00:00.123Z``); see the module docstring
    for the rest. Never more than one line per record.
    """

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(_pair(k, v) for k, v in _line_fields(record, self))


class JsonFormatter(logging.Formatter):
    """One record as one JSON object on one line, the same keys as `LogfmtFormatter` (ASCII
    only: ``\\uXXXX`` escapes, so no character of a value can break the line)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {k: _json_value(v) for k, v in _line_fields(record, self)},
            ensure_ascii=True,
            separators=(",", ":"),
        )


@attrs.frozen
class AioContext:
    """Who an asyncio task works for, for log lines (set by `mtpoold._aiolog.aio_context_for`).

    Attributes:
        account: The account id.
        proxy_key: `mtpoold._config.proxy_key` of its proxy ("no_proxy" without one).
    """

    account: str
    proxy_key: str


aio_context: Final[contextvars.ContextVar[AioContext | None]] = contextvars.ContextVar(
    "mtpoold_aio_context", default=None
)


@final
class AioContextFilter(logging.Filter):
    """Tags a record that did not come from `mtpoold._logformat.log_event` (Telethon's own,
    asyncio's) with the account and proxy of the `aio_context` it was logged in:
    ``account=… proxy=…`` on its line. Asyncio tasks copy the context they are created in,
    so a record Telethon logs from its sender's tasks carries the account worker's context.
    A record logged outside any account's context passes untouched. Never drops a record.

    `mtpoold._logformat.configure_logging` installs it on the daemon's handler.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, LogEvent):
            return True
        ctx = aio_context.get()
        if ctx is not None and not hasattr(record, CONTEXT_ATTR):
            setattr(record, CONTEXT_ATTR, {"account": ctx.account, "proxy": ctx.proxy_key})
        return True


_log = logging.getLogger("mtpoold")


def log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """``sys.excepthook`` while the daemon logs: an exception nothing caught (a bug) is one
    CRITICAL ``uncaught_exception`` line with its traceback in ``exc=``, not a multi-line
    traceback among the log lines. Ctrl-C keeps Python's own hook."""
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    log_event(
        _log,
        logging.CRITICAL,
        "uncaught_exception",
        error=exc_type.__name__,
        exc_info=(exc_type, exc, tb),
    )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """mtpoold's own handler, so that `configure_logging` replaces only itself."""


def configure_logging(
    level: int | str = logging.INFO,
    log_format: str = LOG_FORMATS[0],
    *,
    stream: IO[str] | None = None,
) -> None:
    """Send every log record to stderr, one line each, as logfmt or JSON. Idempotent.

    Installs `AioContextFilter` on the handler (Telethon's records get the
    account and proxy of the call they belong to), keeps trio-websocket at INFO or above
    and Telethon at WARNING or above (it logs every connect at INFO; our ``connect`` and
    ``disconnect`` events say what matters); Python's warnings and an uncaught exception
    (`log_uncaught`) become lines too.

    Args:
        level: Root level, e.g. ``logging.INFO`` or ``"DEBUG"``.
        log_format: One of `LOG_FORMATS` (``mtpoold run --log-format``).
        stream: Where lines go (default: ``sys.stderr`` at the time of the call).

    Raises:
        ValueError: an unknown ``log_format``.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler):
            root.removeHandler(old)
    handler = _StderrHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    handler.addFilter(AioContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("trio-websocket").setLevel(max(root.level, logging.INFO))
    logging.getLogger("telethon").setLevel(max(root.level, logging.WARNING))
    logging.captureWarnings(True)  # a Python warning is a line like any other (event=log)
    sys.excepthook = log_uncaught
