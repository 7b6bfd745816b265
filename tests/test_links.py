"""Link parsing, peer keys and the pool's peer and message-id checks (`mtpoold._links`)."""

from __future__ import annotations

from typing import Any

import pytest

from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._links import (
    MAX_MESSAGE_ID,
    MAX_MESSAGE_IDS,
    check_message_ids,
    check_peer,
    parse_link,
    peer_key,
)

# --- parse_link --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@durov", ("username", "durov")),
        ("durov", ("username", "durov")),
        ("  @Durov_Bot ", ("username", "Durov_Bot")),
        ("t.me/durov", ("username", "durov")),
        ("https://t.me/durov", ("username", "durov")),
        ("http://www.t.me/durov/", ("username", "durov")),
        ("https://t.me/durov/123", ("username", "durov")),
        ("https://t.me/durov/123?single", ("username", "durov")),
        ("https://telegram.me/durov", ("username", "durov")),
        ("https://telegram.dog/durov", ("username", "durov")),
        ("https://t.me/s/durov", ("username", "durov")),
        ("https://durov.t.me", ("username", "durov")),
        ("tg://resolve?domain=durov&post=1", ("username", "durov")),
        ("t.me/c/12345/67", ("channel_id", 12345)),
        ("https://t.me/c/1234567890/1", ("channel_id", 1234567890)),
        ("tg://privatepost?channel=12345&post=6", ("channel_id", 12345)),
        ("t.me/+AbCdEf_12-x", ("invite", "AbCdEf_12-x")),
        ("https://t.me/joinchat/AbCdEf12", ("invite", "AbCdEf12")),
        ("tg://join?invite=AbCdEf12", ("invite", "AbCdEf12")),
        ("https://t.me/+15551234567", ("phone", "15551234567")),
        ("tg://resolve?phone=15551234567", ("phone", "15551234567")),
        ("+15551234567", ("phone", "15551234567")),
        ("15551234567", ("phone", "15551234567")),
        ("+1 (555) 123-4567", ("phone", "15551234567")),
        ("1234567", ("phone", "1234567")),
        ("12345", ("phone", "12345")),
        (12345, ("user_id", 12345)),
        ("tg://user?id=12345", ("user_id", 12345)),
        ("-12345", ("chat_id", 12345)),
        (-12345, ("chat_id", 12345)),
        ("-1001234567890", ("channel_id", 1234567890)),
        (-1001234567890, ("channel_id", 1234567890)),
        ("me", ("self", "me")),
        ("self", ("self", "me")),
    ],
)
def test_parse_link(text: str | int, expected: tuple[str, str | int]) -> None:
    assert parse_link(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "@",
        "@ab",
        "du rov",
        "durov!",
        "1durov",
        "du__rov",
        "https://example.com/durov",
        "ftp://t.me/durov",
        "t.me/",
        "t.me/c/",
        "t.me/c/abc/1",
        "t.me/joinchat",
        "t.me/+",
        "t.me/share/url?url=x",
        "t.me/addstickers/Animals",
        "tg://settings",
        "0",
        "+0123456",
        "1234567890123456",
        "t.me/+0123",
        "tg://user?id=0",
        -1000000000000,
        True,
        None,
        "x" * 600,
    ],
)
def test_parse_link_invalid(text: Any) -> None:
    with pytest.raises(JobFailed, match=r"^INVALID_ARGUMENT: invalid peer ") as info:
        parse_link(text)
    assert info.value.error_class is ErrorClass.INVALID_ARGUMENT


IDS_RANGE = r"^INVALID_ARGUMENT: ids: message ids must be integers 1\.\.2147483647: "


def test_check_message_ids() -> None:
    assert check_message_ids((3, 1, 2)) == [3, 1, 2]
    assert len(check_message_ids(list(range(1, MAX_MESSAGE_IDS + 1)))) == MAX_MESSAGE_IDS
    for bad, pattern in [
        ([], r"must not be empty"),
        ("123", r"must be a list"),
        (list(range(1, MAX_MESSAGE_IDS + 2)), rf"at most {MAX_MESSAGE_IDS} ids per job, got 101"),
        (
            [1, 0, -5, True, "7"],
            rf"{IDS_RANGE}0, -5, True, '7'$",
        ),
        (
            [2**31 - 1, 2**31],
            rf"{IDS_RANGE}2147483648$",
        ),
        (
            [2**64],
            rf"{IDS_RANGE}18446744073709551616$",
        ),
    ]:
        with pytest.raises(JobFailed, match=pattern) as info:
            check_message_ids(bad)  # type: ignore[arg-type]
        assert info.value.error_class is ErrorClass.INVALID_ARGUMENT
    assert check_message_ids([MAX_MESSAGE_ID]) == [2**31 - 1]


@pytest.mark.parametrize(
    "peer",
    [
        "@", "", "   ", "https://evil.com/x", "user:5001", "@пользователь", "@café_bar",
        "t.me/joinchat", "t.me/c/abc/1", "t.me/c/²/1", "t.me/+", "@ab", "a" * 600, 0,
        2**63, -(10**12), -(10**12 + 2**63), "99999999999999999999", True, None, 1.5,
        "tg://resolve?domain=%D0%B0bc", "https://t.me/addstickers/x",
    ],
)  # fmt: skip
def test_check_peer_rejects_what_parse_link_rejects(peer: Any) -> None:
    with pytest.raises(JobFailed, match=r"^INVALID_ARGUMENT: peer: invalid peer ") as info:
        check_peer(peer)
    assert info.value.error_class is ErrorClass.INVALID_ARGUMENT


def test_check_peer_names_the_argument_and_accepts_peers() -> None:
    with pytest.raises(
        JobFailed,
        match=r"^INVALID_ARGUMENT: link_or_username: invalid peer '@': not a valid username$",
    ):
        check_peer("@", argument="link_or_username")
    for ok in ("@durov", "t.me/durov/5", "t.me/+AbCd1234", "+15551234567", 1002, -1, -1006001,
               "-1001234567890", "me", "tg://resolve?domain=durov", "t.me/c/6001/1"):  # fmt: skip
        check_peer(ok)


def test_peer_key_one_spelling_per_peer() -> None:
    assert peer_key("@Durov") == peer_key("https://t.me/durov/12") == "username:durov"
    assert peer_key(5) == "user_id:5"
    assert peer_key(-7) == "chat_id:7"
    assert peer_key(-1001234567890) == "channel_id:1234567890"
    assert peer_key("t.me/+AbCd1234") is None  # invites
    assert peer_key("+15551234567") is None  # phone numbers are personal data
    assert peer_key("me") is None and peer_key("@") is None


# --- the forms as Telethon reads them ---------------------------------------------------------

#: Where mtpoold reads a string differently from Telethon 1.45, on purpose (docs/CONTRACTS.md,
#: "Peer forms"): marked ids written as strings, Telegram's t.me/+<phone> links, tg:// links.
DEVIATIONS = {
    "-12345": ("chat_id", 12345),
    "-1001234567890": ("channel_id", 1234567890),
    "t.me/+15551234567": ("phone", "15551234567"),
    "tg://resolve?domain=durov": ("username", "durov"),
    "t.me/@durov": ("username", "durov"),  # Telethon: an invite hash "durov"
}


@pytest.mark.parametrize(
    "text",
    [
        "+1234567", "1234567", "+1 (555) 123-4567", "15551234567", "@durov", "durov",
        "@Durov_Bot", "t.me/durov", "https://t.me/durov", "telegram.me/durov",
        "https://telegram.dog/durov", "t.me/+AbCdEf_12-x", "t.me/joinchat/AbCd12",
        "https://t.me/joinchat/AbCdEf12", "tg://join?invite=AbCdEf12", *DEVIATIONS,
    ],
)  # fmt: skip
def test_string_forms_go_where_telethon_sends_them(text: str) -> None:
    """Telethon's `get_entity(str)`: `utils.parse_phone` first (a phone number), then
    `utils.parse_username` (an invite hash, or a username, lower-cased)."""
    from telethon import utils

    phone = utils.parse_phone(text)
    username, is_invite = utils.parse_username(text)
    telethon: tuple[str, str | int] | None = None  # tg://resolve: Telethon reads no peer
    if phone:
        telethon = ("phone", phone)
    elif is_invite:
        telethon = ("invite", username)
    elif username:
        telethon = ("username", username)
    kind, value = parse_link(text)
    ours = (kind, value.lower() if kind == "username" else value)  # type: ignore[union-attr]
    if text in DEVIATIONS:
        assert ours == DEVIATIONS[text] != telethon
    else:
        assert ours == telethon is not None


def test_phone_numbers_stay_out_of_errors_and_keys() -> None:
    from mtpoold._links import is_phone, shown_peer

    for phone in ("+15551234567", "15551234567", "t.me/+15551234567", "+1 (555) 123-4567"):
        assert is_phone(phone) and peer_key(phone) is None
        assert shown_peer(phone) == "<phone number>"
    assert shown_peer("@durov") == "@durov" and not is_phone(12345)
    for near in ("+15551234567x", "1555123456789012345"):
        with pytest.raises(JobFailed) as info:
            parse_link(near)
        assert "5551234" not in info.value.message
