"""The command line's websocket client (`mtpoold._rpcclient`): daemon targets."""

from __future__ import annotations

import pytest

from mtpoold._rpcclient import parse_target, target_from_listen


def test_targets() -> None:
    assert str(target_from_listen("0.0.0.0:8765")) == "ws://127.0.0.1:8765/"
    assert str(target_from_listen("[::]:8765")) == "ws://[::1]:8765/"
    assert str(target_from_listen("unix:/run/m.sock")) == "unix:/run/m.sock"
    assert parse_target("127.0.0.1:5").port == 5
    # the HTTP POST endpoint is on the same address: an http:// URL names the same target
    assert parse_target("http://x:1/rpc") == parse_target("ws://x:1/")
    with pytest.raises(ValueError, match="only ws://, http:// and unix:"):
        parse_target("https://x:1/")
