"""The one parser of ``daemon.listen`` addresses (`mtpoold._listen`)."""

from __future__ import annotations

import pytest

from mtpoold._server import (
    parse_listen,
)


def test_parse_listen() -> None:
    assert str(parse_listen("127.0.0.1:8765")) == "127.0.0.1:8765"
    assert parse_listen("[::1]:9").host == "::1"
    assert str(parse_listen("[::1]:9")) == "[::1]:9"
    assert parse_listen("unix:/run/x.sock").path == "/run/x.sock"
    for bad, match in [
        ("8765", "expected HOST:PORT"),
        ("host:x", "is not a number"),
        ("::1:80", "brackets"),
        ("h:70000", "0..65535"),
        ("unix:", "empty unix socket path"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_listen(bad)
