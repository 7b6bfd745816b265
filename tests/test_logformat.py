"""`mtpoold._logformat`: one event per line, logfmt that a strict parser reads back, JSON."""

from __future__ import annotations

import io
import json
import logging
import math
import re
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtpoold._aiolog import aio_context_for
from mtpoold._logformat import (
    JsonFormatter,
    LogEvent,
    LogfmtFormatter,
    configure_logging,
    iso_utc,
    log_event,
    log_uncaught,
    logfmt_value,
)

# --- a strict logfmt parser (the tests' own, not the formatter's) -------------------------------

_KEY_RE = re.compile(r'[^\s="\\]+')
_BARE_RE = re.compile(r'[^\s="\\]+')
_SIMPLE_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}


class LogfmtError(ValueError):
    """A line that is not strict logfmt."""


def parse_logfmt(line: str) -> dict[str, str]:
    """One logfmt line as ``{key: value}``, strictly: ``key=value`` pairs separated by one
    space, every key with a value (no keyless words), each key once; a value is either bare
    (printable, no space, ``=``, ``"`` or backslash) or double-quoted with the escapes
    ``\\\\ \\" \\n \\r \\t \\uXXXX \\UXXXXXXXX`` and no raw unprintable character.

    Raises:
        LogfmtError: anything else, with the position.
    """
    out: dict[str, str] = {}
    pos = 0
    n = len(line)
    while True:
        key_match = _KEY_RE.match(line, pos)
        if key_match is None:
            raise LogfmtError(f"no key at {pos}: {line!r}")
        key = key_match.group()
        pos = key_match.end()
        if pos >= n or line[pos] != "=":
            raise LogfmtError(f"keyless word {key!r} at {pos}: {line!r}")
        pos += 1
        if pos < n and line[pos] == '"':
            value, pos = _quoted(line, pos + 1)
        else:
            bare = _BARE_RE.match(line, pos)
            if bare is None or not bare.group().isprintable():
                raise LogfmtError(f"bad bare value for {key!r} at {pos}: {line!r}")
            value, pos = bare.group(), bare.end()
        if key in out:
            raise LogfmtError(f"key {key!r} twice: {line!r}")
        out[key] = value
        if pos == n:
            return out
        if line[pos] != " " or pos + 1 == n:
            raise LogfmtError(f"expected one space between pairs at {pos}: {line!r}")
        pos += 1


def _quoted(line: str, pos: int) -> tuple[str, int]:
    buf: list[str] = []
    n = len(line)
    while pos < n:
        c = line[pos]
        if c == '"':
            return "".join(buf), pos + 1
        if c == "\\":
            if pos + 1 >= n:
                break
            e = line[pos + 1]
            if e in _SIMPLE_ESCAPES:
                buf.append(_SIMPLE_ESCAPES[e])
                pos += 2
                continue
            width = {"u": 4, "U": 8}.get(e)
            digits = line[pos + 2 : pos + 2 + width] if width else ""
            if not width or not re.fullmatch(r"[0-9a-fA-F]+", digits) or len(digits) != width:
                raise LogfmtError(f"bad escape at {pos}: {line!r}")
            buf.append(chr(int(digits, 16)))
            pos += 2 + width
            continue
        if not c.isprintable():
            raise LogfmtError(f"raw unprintable {c!r} in a quoted value at {pos}: {line!r}")
        buf.append(c)
        pos += 1
    raise LogfmtError(f"unterminated quoted value: {line!r}")


def test_the_parser_is_strict() -> None:
    assert parse_logfmt('a=1 b="x y" c=""') == {"a": "1", "b": "x y", "c": ""}
    for bad in (
        "a=1 loose",  # a keyless word
        "a=",  # an empty bare value
        "a=1  b=2",  # two spaces
        'a="x',  # unterminated
        'a=x"y',  # a quote in a bare value
        "a=1 a=2",  # a key twice
        'a="\\q"',  # an unknown escape
        'a="\n"',  # a raw newline
        "a=1 ",  # a trailing space
        "flood wait",
    ):
        with pytest.raises(LogfmtError):
            parse_logfmt(bad)


# --- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("flagged by panel", '"flagged by panel"'),
        ("", '""'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("two\nlines", '"two\\nlines"'),
        ("C:\\path", '"C:\\\\path"'),
        ("tab\there", '"tab\\there"'),
        ("line\u2028sep", '"line\\u2028sep"'),
        ("plain-word_1.2", "plain-word_1.2"),
        ("Grüße", "Grüße"),
        (37, "37"),
        (37.0, "37"),
        (12.5, "12.5"),
        (True, "true"),
        (False, "false"),
        (None, '""'),
    ],
)
def test_logfmt_value_quotes_what_must_be_quoted(value: str | float | None, text: str) -> None:
    assert logfmt_value(value) == text


#: Any str at all, lone surrogates and every control and separator character included.
ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()))


@given(ANY_TEXT)
def test_any_str_round_trips_through_logfmt(value: str) -> None:
    line = f"k={logfmt_value(value)}"
    assert len(line.splitlines()) == 1 and "\n" not in line and "\r" not in line
    assert parse_logfmt(line) == {"k": value}


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), ANY_TEXT))
def test_any_fields_round_trip_through_a_formatted_line(fields: dict[str, str]) -> None:
    record = _record(LogEvent("e", fields))
    line = LogfmtFormatter().format(record)
    assert len(line.splitlines()) == 1
    parsed = parse_logfmt(line)
    renamed = {(f"{k}_" if k in ("ts", "level", "logger", "event", "msg", "exc") else k): v
               for k, v in fields.items()}  # fmt: skip
    assert {k: v for k, v in parsed.items() if k not in ("ts", "level", "logger", "event")} == (
        renamed
    )
    assert parsed["event"] == "e"
    as_json = json.loads(JsonFormatter().format(record))
    assert {k: v for k, v in as_json.items() if k not in ("ts", "level", "logger", "event")} == (
        renamed
    )


@given(ANY_TEXT)
def test_any_foreign_message_is_one_msg_value(text: str) -> None:
    record = logging.LogRecord("telethon.x", logging.WARNING, __file__, 1, "%s", (text,), None)
    line = LogfmtFormatter().format(record)
    parsed = parse_logfmt(line)
    assert parsed["event"] == "log" and "msg" in parsed
    assert "\n" not in line and len(line.splitlines()) == 1
    json_line = JsonFormatter().format(record)
    assert len(json_line.splitlines()) == 1 and json.loads(json_line)["event"] == "log"


# --- lines ----------------------------------------------------------------------------------------


def _record(
    msg: object, name: str = "mtpoold.pool", level: int = logging.INFO
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


@pytest.mark.parametrize(
    ("unix_s", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_800_000_000.9, "2027-01-15T08:00:00Z"),
        (253_402_300_799, "9999-12-31T23:59:59Z"),
        (1e17, "9999-12-31T23:59:59Z"),  # gmtime: OSError EOVERFLOW
        (1e20, "9999-12-31T23:59:59Z"),  # past time_t
        (1e308, "9999-12-31T23:59:59Z"),  # gmtime: OverflowError
        (math.inf, "9999-12-31T23:59:59Z"),
        (math.nan, "9999-12-31T23:59:59Z"),
        (-1e308, "1970-01-01T00:00:00Z"),
    ],
)
def test_iso_utc_writes_any_time_never_raises(unix_s: float, text: str) -> None:
    assert iso_utc(unix_s) == text


def test_a_line_is_ts_level_logger_event_then_the_fields() -> None:
    record = _record(
        LogEvent("flood_wait", {"account": "a1", "seconds": 37.0, "until": iso_utc(0), "x": None})
    )
    record.created, record.msecs = 1_800_000_000.25, 250.0
    line = LogfmtFormatter().format(record)
    assert line == (
        "ts=2027-01-15T08:00:00.250Z level=info logger=mtpoold.pool event=flood_wait"
        " account=a1 seconds=37 until=1970-01-01T00:00:00Z"
    )
    assert json.loads(JsonFormatter().format(record)) == {
        "ts": "2027-01-15T08:00:00.250Z",
        "level": "info",
        "logger": "mtpoold.pool",
        "event": "flood_wait",
        "account": "a1",
        "seconds": 37.0,
        "until": "1970-01-01T00:00:00Z",
    }


def test_a_record_not_from_log_event_is_event_log_with_its_text_as_msg() -> None:
    # what `test_cli.test_logfmt_formatter` checked of the old formatter, in the new style
    record = logging.LogRecord("other", logging.WARNING, __file__, 1, 'say "hi"\nthere', (), None)
    line = LogfmtFormatter().format(record)
    assert line.endswith(' level=warning logger=other event=log msg="say \\"hi\\"\\nthere"')
    assert parse_logfmt(line)["msg"] == 'say "hi"\nthere'
    record = logging.LogRecord("mtpoold.x", logging.INFO, __file__, 1, "event a=%s", ("1",), None)
    assert LogfmtFormatter().format(record).endswith(' event=log msg="event a=1"')


def test_a_traceback_is_one_quoted_redacted_exc_value() -> None:
    secret = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGh"  # looks like a session string
    try:
        raise RuntimeError(f"boom with {secret}")
    except RuntimeError:
        record = logging.LogRecord(
            "mtpoold.share", logging.ERROR, __file__, 1, LogEvent("flight_failed", {}), (),
            sys.exc_info(),
        )  # fmt: skip
    line = LogfmtFormatter().format(record)
    assert len(line.splitlines()) == 1 and secret not in line
    exc = parse_logfmt(line)["exc"]
    assert exc.startswith("Traceback (most recent call last):\n  File ")
    assert exc.endswith("RuntimeError: boom with [redacted]")
    assert json.loads(JsonFormatter().format(record))["exc"] == exc


def test_a_field_named_like_a_line_key_gets_a_suffix() -> None:
    line = LogfmtFormatter().format(_record(LogEvent("e", {"ts": "x", "msg": "y"})))
    parsed = parse_logfmt(line)
    assert parsed["ts_"] == "x" and parsed["msg_"] == "y" and parsed["ts"] != "x"


def test_str_of_an_event_is_its_logfmt_without_the_line_head() -> None:
    event = LogEvent("account_disabled", {"account": "a1", "reason": "flagged by panel"})
    assert str(event) == 'event=account_disabled account=a1 reason="flagged by panel"'


# --- log_event ------------------------------------------------------------------------------------


class _Counting(str):
    renders = 0

    def __str__(self) -> str:
        type(self).renders += 1
        return str.__str__(self)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    logger = logging.getLogger("mtpoold.test_logformat")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def test_nothing_is_built_or_rendered_while_the_level_is_off(
    captured: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, stream = captured
    made: list[logging.LogRecord] = []
    make = logger.makeRecord

    def spy(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)  # type: ignore[arg-type]
        made.append(record)
        return record

    monkeypatch.setattr(logger, "makeRecord", spy)
    _Counting.renders = 0
    log_event(logger, logging.DEBUG, "flight", method=_Counting("help.getConfig"))
    assert made == [] and _Counting.renders == 0 and stream.getvalue() == ""
    log_event(logger, logging.INFO, "flight", method=_Counting("help.getConfig"))
    assert len(made) == 1 and _Counting.renders >= 1  # our handler, and pytest's own
    assert stream.getvalue().endswith(" event=flight method=help.getConfig\n")


def test_log_event_points_the_record_at_its_caller(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, _ = captured
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logger.addHandler(keep)
    try:
        log_event(logger, logging.WARNING, "x")
    finally:
        logger.removeHandler(keep)
    (record,) = records
    assert record.filename == "test_logformat.py" and record.funcName.startswith("test_log_event")


# --- configure_logging ----------------------------------------------------------------------------


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, sys.excepthook
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
        sys.excepthook = hook


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_configure_logging_tags_telethon_records_with_account_and_proxy(
    log_format: str, restore_root: None
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", log_format, stream=stream)
    configure_logging("INFO", log_format, stream=stream)  # idempotent: still one handler
    telethon = logging.getLogger("telethon.network.connection.connection")
    with aio_context_for("acc-1", "de-1"):
        telethon.warning("Server closed the connection: %s", "0 bytes read")
    telethon.warning("outside any account")
    telethon.info("below Telethon's WARNING floor")
    log_event(logging.getLogger("mtpoold.pool"), logging.INFO, "call", account="acc-2")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    parsed = [parse_logfmt(line) if log_format == "logfmt" else json.loads(line) for line in lines]
    inside, outside, ours = parsed
    assert (inside["event"], inside["account"], inside["proxy"]) == ("log", "acc-1", "de-1")
    assert inside["msg"] == "Server closed the connection: 0 bytes read"
    assert "account" not in outside and outside["msg"] == "outside any account"
    assert (ours["event"], ours["account"]) == ("call", "acc-2") and "proxy" not in ours


def test_configure_logging_refuses_an_unknown_format(restore_root: None) -> None:
    with pytest.raises(ValueError, match="logfmt, json"):
        configure_logging("INFO", "xml")


def test_an_uncaught_exception_is_one_critical_line(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    assert sys.excepthook is log_uncaught
    try:
        raise KeyError("no such account")
    except KeyError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = stream.getvalue().splitlines()
    parsed = parse_logfmt(line)
    assert (parsed["level"], parsed["event"], parsed["error"]) == (
        "critical",
        "uncaught_exception",
        "KeyError",
    )
    assert parsed["exc"].startswith("Traceback") and "no such account" in parsed["exc"]
