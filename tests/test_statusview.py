"""The human tables of ``mtpoold status`` (`mtpoold._statusview`)."""

from __future__ import annotations

from mtpoold._statusview import format_duration


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, None, 12.5, 65, 3725, 90061)] == [
        "-",
        "-",
        "12.5s",
        "1m 05s",
        "1h 02m 05s",
        "1d 01h 01m",
    ]
