"""Job vocabulary summaries and link parsing, on hand-built Telethon types."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from telethon.tl import types

from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._methods import (
    MAX_MESSAGE_ID,
    MAX_MESSAGE_IDS,
    check_message_ids,
    check_peer,
    invite_summary,
    message_summaries,
    parse_link,
    peer_summary,
)

UTC = dt.UTC
DATE = dt.datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)


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
        ("+15551234567", ("phone", "15551234567")),
        ("12345", ("user_id", 12345)),
        (12345, ("user_id", 12345)),
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


# --- peer_summary ------------------------------------------------------------------------------


def _channel(**kw: Any) -> types.Channel:
    kw.setdefault("username", "news")
    return types.Channel(
        id=1234567890,
        title="News",
        photo=types.ChatPhotoEmpty(),
        date=DATE,
        access_hash=99,
        **kw,
    )


def _channel_full(count: int | None) -> types.messages.ChatFull:
    full = types.ChannelFull(
        id=1234567890,
        about="All the news",
        read_inbox_max_id=0,
        read_outbox_max_id=0,
        unread_count=0,
        chat_photo=types.PhotoEmpty(id=0),
        notify_settings=types.PeerNotifySettings(),
        bot_info=[],
        pts=1,
        participants_count=count,
    )
    return types.messages.ChatFull(full_chat=full, chats=[_channel()], users=[])


def test_peer_summary_channel_with_full() -> None:
    entity = _channel(broadcast=True, verified=True, participants_count=5)
    assert peer_summary(entity, _channel_full(1500)) == {
        "kind": "channel",
        "id": 1234567890,
        "peer_id": -1001234567890,
        "username": "news",
        "title": "News",
        "participants_count": 1500,
        "verified": True,
        "scam": False,
        "fake": False,
        "private": False,
        "about": "All the news",
    }


def test_peer_summary_channel_count_falls_back_to_entity() -> None:
    entity = _channel(broadcast=True, participants_count=5)
    assert peer_summary(entity)["participants_count"] == 5
    assert peer_summary(entity, _channel_full(None))["participants_count"] == 5
    assert peer_summary(entity, _channel_full(7).full_chat)["participants_count"] == 7


def test_peer_summary_supergroup_and_private() -> None:
    summary = peer_summary(_channel(megagroup=True, username=None, scam=True))
    assert summary["kind"] == "supergroup"
    assert summary["private"] is True
    assert summary["scam"] is True
    assert peer_summary(_channel(gigagroup=True))["kind"] == "supergroup"


def test_peer_summary_collectible_usernames() -> None:
    entity = _channel(
        username=None,
        usernames=[types.Username("old", active=False), types.Username("fancy", active=True)],
    )
    summary = peer_summary(entity)
    assert summary["username"] == "fancy"
    assert summary["private"] is False


def test_peer_summary_channel_forbidden() -> None:
    summary = peer_summary(types.ChannelForbidden(id=5, access_hash=1, title="Gone"))
    assert summary["kind"] == "channel"
    assert summary["private"] is True
    assert summary["title"] == "Gone"
    assert summary["peer_id"] == -1000000000005


def test_peer_summary_user_and_bot() -> None:
    user = types.User(id=777, first_name="Ann", last_name="Lee", username="ann", fake=True)
    full = types.users.UserFull(
        full_user=types.UserFull(
            id=777,
            settings=types.PeerSettings(),
            notify_settings=types.PeerNotifySettings(),
            common_chats_count=0,
            about="hi",
        ),
        chats=[],
        users=[user],
    )
    assert peer_summary(user, full) == {
        "kind": "user",
        "id": 777,
        "peer_id": 777,
        "username": "ann",
        "name": "Ann Lee",
        "participants_count": None,
        "verified": False,
        "scam": False,
        "fake": True,
        "private": False,
        "about": "hi",
    }
    bot = types.User(id=1, bot=True, first_name="Helper", username="helper_bot")
    assert peer_summary(bot)["kind"] == "bot"
    nameless = peer_summary(types.User(id=2))
    assert (nameless["name"], nameless["private"]) == (None, True)


def test_peer_summary_basic_chat() -> None:
    chat = types.Chat(
        id=42, title="Family", photo=types.ChatPhotoEmpty(), participants_count=4, date=DATE,
        version=1,
    )  # fmt: skip
    summary = peer_summary(chat)
    assert summary["kind"] == "chat"
    assert summary["peer_id"] == -42
    assert summary["participants_count"] == 4
    assert summary["private"] is True
    assert peer_summary(types.ChatForbidden(id=43, title="Old"))["title"] == "Old"


def test_peer_summary_rejects_non_peers() -> None:
    with pytest.raises(JobFailed, match=r"^INVALID_ARGUMENT: not a peer: PeerUser$"):
        peer_summary(types.PeerUser(1))


def test_invite_summary() -> None:
    invite = types.ChatInvite(
        title="Secret club",
        photo=types.PhotoEmpty(id=0),
        participants_count=12,
        color=0,
        channel=True,
        megagroup=True,
        about="shh",
    )
    assert invite_summary(invite) == {
        "kind": "supergroup",
        "id": None,
        "peer_id": None,
        "username": None,
        "title": "Secret club",
        "participants_count": 12,
        "verified": False,
        "scam": False,
        "fake": False,
        "private": True,
        "about": "shh",
    }
    already = invite_summary(types.ChatInviteAlready(chat=_channel(broadcast=True)))
    assert (already["kind"], already["private"], already["id"]) == ("channel", True, 1234567890)
    with pytest.raises(JobFailed):
        invite_summary(_channel())


# --- message_summaries -------------------------------------------------------------------------


def _message(msg_id: int, **kw: Any) -> types.Message:
    return types.Message(id=msg_id, peer_id=types.PeerChannel(1234567890), date=DATE, **kw)


def test_message_summaries() -> None:
    reactions = types.MessageReactions(
        results=[
            types.ReactionCount(reaction=types.ReactionEmoji("👍"), count=5),
            types.ReactionCount(reaction=types.ReactionCustomEmoji(document_id=99), count=2),
            types.ReactionCount(reaction=types.ReactionPaid(), count=1),
        ]
    )
    messages = [
        _message(
            1,
            message="hello",
            views=100,
            forwards=3,
            replies=types.MessageReplies(replies=4, replies_pts=0),
            reactions=reactions,
            edit_date=DATE + dt.timedelta(hours=1),
        ),
        types.MessageEmpty(id=2, peer_id=None),  # Telethon patches it with Message.__init__
        None,
        types.MessageService(
            id=4,
            peer_id=types.PeerChannel(1234567890),
            date=DATE,
            action=types.MessageActionPinMessage(),
        ),  # fmt: skip
        _message(99, message="not asked for"),
    ]
    assert message_summaries([1, 2, 3, 4], messages) == {
        "1": {
            "exists": True,
            "date": "2024-03-04T05:06:07Z",
            "text": "hello",
            "views": 100,
            "forwards": 3,
            "replies": 4,
            "reactions": 8,
            "reaction_counts": {"👍": 5, "custom:99": 2, "paid": 1},
            "edit_date": "2024-03-04T06:06:07Z",
            "service": False,
        },
        "2": {"exists": False},
        "3": {"exists": False},
        "4": {
            "exists": True,
            "date": "2024-03-04T05:06:07Z",
            "text": "",
            "views": None,
            "forwards": None,
            "replies": None,
            "reactions": None,
            "reaction_counts": None,
            "edit_date": None,
            "service": True,
        },
    }


def test_message_summaries_keeps_request_order_and_plain_text() -> None:
    out = message_summaries([3, 1], [_message(1), _message(3, message="x")])
    assert list(out) == ["3", "1"]
    assert out["1"]["text"] == ""
    assert out["3"]["text"] == "x"


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
