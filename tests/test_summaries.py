"""Job vocabulary summaries on hand-built Telethon types (`mtpoold._summaries`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from telethon.tl import types

from mtpoold._errors import JobFailed
from mtpoold._summaries import invite_summary, message_summaries, peer_summary

UTC = dt.UTC
DATE = dt.datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)


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
