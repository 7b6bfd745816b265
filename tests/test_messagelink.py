"""`mtpoold._messagelink.message_id_of_link`: the message a link names, for get_messages."""

from __future__ import annotations

import pytest

from mtpoold._links import parse_link
from mtpoold._messagelink import message_id_of_link


@pytest.mark.parametrize(
    ("link", "message_id"),
    [
        ("https://t.me/durov/123", 123),
        ("t.me/durov/123", 123),
        ("http://www.t.me/durov/7?single", 7),
        ("https://telegram.me/durov/9?comment=4", 9),
        ("t.me/s/durov/55", 55),
        ("t.me/c/123456/7", 7),
        ("https://t.me/c/123456/99/7", 7),  # a forum topic's message: the last number
        ("t.me/mtpoold_chat/2/3", 3),
        ("tg://resolve?domain=durov&post=12", 12),
        ("tg://privatepost?channel=123456&post=8", 8),
        (f"t.me/durov/{2**31 - 1}", 2**31 - 1),
    ],
)
def test_message_links_name_their_message(link: str, message_id: int) -> None:
    assert message_id_of_link(link) == message_id
    parse_link(link)  # and the peer part still parses as before


@pytest.mark.parametrize(
    "peer",
    [
        "https://t.me/durov",
        "@durov",
        "durov",
        "t.me/c/123456",
        "t.me/+AbCdEfGh",
        "t.me/joinchat/AbCdEfGh",
        "t.me/durov/0",
        f"t.me/durov/{2**31}",
        "t.me/durov/12x",
        "t.me/durov/1/2/3",
        "https://example.com/durov/12",
        "tg://resolve?domain=durov",
        "tg://join?invite=AbCd&post=3",
        "t.me/durov/" + "9" * 600,
        12345,
        -1002001,
    ],
)
def test_other_peers_name_no_message(peer: str | int) -> None:
    assert message_id_of_link(peer) is None
