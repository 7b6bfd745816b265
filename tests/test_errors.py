"""The error vocabulary (`mtpoold._errors`): ErrorClass, JobFailed, ConfigError, redact, leaves."""

from __future__ import annotations

import pickle

from mtpoold._errors import (
    ConfigError,
    ErrorClass,
    JobFailed,
    MtpooldError,
    redact,
)


def test_redact_keeps_ordinary_words_and_cuts_long_text() -> None:
    assert redact("Connection reset by peer") == "Connection reset by peer"
    assert redact("averyveryveryveryverylongusernamexx") == "averyveryveryveryverylongusernamexx"
    long = "word " * 200
    out = redact(long, limit=50)
    assert len(out) == 50
    assert out.endswith("…")


def test_ErrorClass_value_is_name() -> None:
    assert all(c.value == c.name for c in ErrorClass)
    assert {c.name for c in ErrorClass} == {
        "FLOOD_WAIT",
        "PEER_FLOOD",
        "STREAM_CLOSED",
        "PROXY_UNAVAILABLE",
        "SESSION_REVOKED",
        "PEER_NOT_FOUND",
        "DEADLINE_EXCEEDED",
        "GENERIC",
        "PROTOCOL_ERROR",
        "ACCOUNT_RESTRICTED",
        "WRONG_DC",
        "UNSUPPORTED_REPLY",
        "NO_ACCOUNT_AVAILABLE",
        "INVALID_ARGUMENT",
        "SHUTTING_DOWN",
        "CANCELLED",
    }


def test_JobFailed_fields_and_str() -> None:
    exc = JobFailed(
        ErrorClass.FLOOD_WAIT, "FLOOD_WAIT_37", retry_after_s=37.0, account="acc-1", attempts=2
    )
    assert isinstance(exc, MtpooldError)
    assert (exc.error_class, exc.message, exc.retry_after_s, exc.account, exc.attempts) == (
        ErrorClass.FLOOD_WAIT,
        "FLOOD_WAIT_37",
        37.0,
        "acc-1",
        2,
    )
    assert str(exc) == "FLOOD_WAIT: FLOOD_WAIT_37 (account acc-1, 2 attempts, retry after 37 s)"
    bare = JobFailed(ErrorClass.NO_ACCOUNT_AVAILABLE, "no account can serve", retry_after_s=12.5)
    assert str(bare) == "NO_ACCOUNT_AVAILABLE: no account can serve (retry after 12.5 s)"
    assert (bare.account, bare.attempts) == (None, 0)
    again = pickle.loads(pickle.dumps(exc))
    assert (again.error_class, again.retry_after_s, again.account, again.attempts) == (
        ErrorClass.FLOOD_WAIT,
        37.0,
        "acc-1",
        2,
    )


def test_ConfigError_lists_every_problem() -> None:
    exc = ConfigError(["a.b: missing", "c[0].d: unknown key"])
    assert isinstance(exc, MtpooldError)
    assert exc.problems == ("a.b: missing", "c[0].d: unknown key")
    assert str(exc) == "invalid config, 2 problems:\n  a.b: missing\n  c[0].d: unknown key"
    assert str(ConfigError(["x: missing"])) == "invalid config: x: missing"


def test_redact_replaces_bytes_reprs() -> None:
    assert redact("x b'\\x05Alice' y") == "x <6 bytes> y"
    assert redact("read b\"it's\" and b''") == "read <4 bytes> and <0 bytes>"
    assert redact("cut b'\\x00Alice 7916") == "cut <bytes>"
    assert redact("bytearray(b'abc')") == "bytearray(<3 bytes>)"
    # ordinary text with a b' is left alone, unless it could be a repr cut off at the end
    assert redact("Bob's job's b's ok; bytearray(b'Alice')") == (
        "Bob's job's b's ok; bytearray(<5 bytes>)"
    )
    assert redact("Bob's job's b's ok") == "Bob's job's <bytes>"  # rather too much than a leak


def test_leaves_flattens_nested_exception_groups_in_order() -> None:
    from mtpoold._errors import leaves

    a, b, c = ValueError("a"), KeyError("b"), OSError("c")
    nested = BaseExceptionGroup("outer", [a, ExceptionGroup("inner", [b, c])])
    assert leaves(nested) == [a, b, c]
    assert leaves(a) == [a]
