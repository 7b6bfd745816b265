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


@pytest.mark.parametrize(
    ("link", "shown"),
    [
        ("t.me/durov/0", "0"),
        (f"t.me/durov/{2**31}", str(2**31)),
        ("https://t.me/durov/99999999999", "99999999999"),
        ("t.me/c/123456/1/99999999999", "99999999999"),
        ("tg://resolve?domain=durov&post=99999999999", "99999999999"),
        ("t.me/durov/" + "9" * 40, "9" * 20 + "…"),
    ],
)
def test_a_message_link_with_an_id_out_of_int32_is_refused_for_its_id(
    link: str, shown: str
) -> None:
    """Not "no message link" (the pool would then say ``ids: required``): the id is wrong."""
    with pytest.raises(ValueError) as info:
        message_id_of_link(link)
    assert str(info.value) == (
        f"the message link's message id {shown} is out of range (message ids are 1..{2**31 - 1})"
    )
