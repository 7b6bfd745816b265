"""PeerLookup with a peer memory, over a fake ``invoke`` (no network): which requests it sends.

The same paths through real Telethon and the loopback DC are in tests/test_e2e_peers.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from telethon import errors as tl_errors
from telethon.tl import functions as fn
from telethon.tl import types as tl

from mtpoold._errors import JobFailed
from mtpoold._lookup import PeerLookup, peers_in
from mtpoold._peermemory import PeerMemory
from mtpoold._store import StoredPeer
from mtpoold._tljson import PeerKind

CHANNEL = tl.Channel(
    id=2001, title="News", photo=tl.ChatPhotoEmpty(), date=None, access_hash=0xAA,
    broadcast=True, username="News",
)  # fmt: skip
FULL = tl.messages.ChatFull(
    full_chat=tl.ChannelFull(
        id=2001, about="a", read_inbox_max_id=0, read_outbox_max_id=0, unread_count=0,
        chat_photo=tl.PhotoEmpty(id=0), notify_settings=tl.PeerNotifySettings(), bot_info=[],
        pts=1, participants_count=7,
    ),
    chats=[CHANNEL],
    users=[],
)  # fmt: skip
MESSAGE = tl.Message(id=1, peer_id=tl.PeerChannel(2001), date=None, message="x")
MESSAGES = tl.messages.ChannelMessages(
    pts=1, count=1, messages=[MESSAGE], topics=[], chats=[CHANNEL], users=[]
)


class Telegram:
    """Answers by request type; every result is harvested, as the client's hook does."""

    def __init__(self, book: Any, answers: dict[type, Any]) -> None:
        self.book, self.answers, self.sent = book, answers, []

    async def invoke(self, request: Any) -> Any:
        self.sent.append(type(request).__name__.removesuffix("Request"))
        answer = self.answers[type(request)]
        if callable(answer) and not isinstance(answer, type):
            answer = answer(request)
        if isinstance(answer, BaseException):
            raise answer
        self.book.learn(peers_in(answer, "a1"))
        return answer

    async def input_entity(self, target: Any) -> Any:
        raise AssertionError(f"Telethon's look-up was not expected: {target!r}")


def _lookup(answers: dict[type, Any]) -> tuple[PeerLookup, Telegram]:
    book = PeerMemory().book("a1")
    telegram = Telegram(book, answers)
    return PeerLookup(telegram.invoke, telegram.input_entity, book=book), telegram


RESOLVED = tl.contacts.ResolvedPeer(peer=tl.PeerChannel(2001), chats=[CHANNEL], users=[])


async def test_a_known_channel_costs_no_look_up() -> None:
    lookup, telegram = _lookup(
        {
            fn.contacts.ResolveUsernameRequest: RESOLVED,
            fn.channels.GetFullChannelRequest: FULL,
            fn.channels.GetMessagesRequest: MESSAGES,
        }
    )
    assert (await lookup.resolve("@news"))["participants_count"] == 7
    assert (await lookup.resolve("t.me/NEWS"))["peer_id"] == -1000000002001
    assert (await lookup.get_messages(-1000000002001, [1]))["1"]["exists"] is True
    assert telegram.sent == ["ResolveUsername", "GetFullChannel", "GetFullChannel", "GetMessages"]


async def test_a_stale_hash_is_forgotten_and_looked_up_once_more() -> None:
    lookup, telegram = _lookup(
        {
            fn.contacts.ResolveUsernameRequest: RESOLVED,
            fn.channels.GetMessagesRequest: lambda r: (
                MESSAGES if r.channel.access_hash == 0xAA else tl_errors.ChannelInvalidError(r)
            ),
        }
    )
    assert lookup.book is not None
    lookup.book.learn([StoredPeer("", "channel", 2001, 0xBAD, "news", 0.0)])
    assert (await lookup.get_messages("@news", [1]))["1"]["exists"] is True
    assert telegram.sent == ["GetMessages", "ResolveUsername", "GetMessages"]
    known = lookup.book.get("username:news")
    assert known is not None and known.access_hash == 0xAA


async def test_a_username_that_moved_is_asked_for_again() -> None:
    moved = tl.Channel(
        id=2001, title="News", photo=tl.ChatPhotoEmpty(), date=None, access_hash=0xAA,
        broadcast=True, username="renamed",
    )  # fmt: skip
    other = tl.Channel(
        id=3001, title="Other", photo=tl.ChatPhotoEmpty(), date=None, access_hash=0xCC,
        broadcast=True, username="news",
    )  # fmt: skip
    full_of = {
        2001: tl.messages.ChatFull(full_chat=FULL.full_chat, chats=[moved], users=[]),
        3001: tl.messages.ChatFull(full_chat=FULL.full_chat, chats=[other], users=[]),
    }
    lookup, telegram = _lookup(
        {
            fn.contacts.ResolveUsernameRequest: tl.contacts.ResolvedPeer(
                peer=tl.PeerChannel(3001), chats=[other], users=[]
            ),
            fn.channels.GetFullChannelRequest: lambda r: full_of[r.channel.channel_id],
        }
    )
    assert lookup.book is not None
    lookup.book.learn([StoredPeer("", "channel", 2001, 0xAA, "news", 0.0)])
    assert (await lookup.resolve("@news"))["id"] == 3001
    assert telegram.sent == ["GetFullChannel", "ResolveUsername", "GetFullChannel"]


async def test_a_moved_username_is_asked_on_the_wire_past_telethons_cache() -> None:
    """Telethon's session cache never drops a row: after the answer showed the remembered
    peer without its username, the redo must not take the old peer from there."""
    moved = tl.Channel(
        id=2001, title="News", photo=tl.ChatPhotoEmpty(), date=None, access_hash=0xAA,
        broadcast=True, username=None,
    )  # fmt: skip
    other = tl.Channel(
        id=3001, title="Other", photo=tl.ChatPhotoEmpty(), date=None, access_hash=0xCC,
        broadcast=True, username="news",
    )  # fmt: skip
    book = PeerMemory().book("a1")
    telegram = Telegram(
        book,
        {
            fn.contacts.ResolveUsernameRequest: tl.contacts.ResolvedPeer(
                peer=tl.PeerChannel(3001), chats=[other], users=[]
            ),
            fn.channels.GetMessagesRequest: lambda r: tl.messages.ChannelMessages(
                pts=1, count=0, messages=[], topics=[], users=[],
                chats=[moved if r.channel.channel_id == 2001 else other],
            ),
        },
    )  # fmt: skip
    lookup = PeerLookup(
        telegram.invoke,
        telegram.input_entity,
        cached_entity=lambda _name: tl.InputPeerChannel(2001, 0xAA),  # the old row
        book=book,
    )
    book.learn([StoredPeer("", "channel", 2001, 0xAA, "news", 0.0)])
    await lookup.get_messages("@news", [1])
    assert telegram.sent == ["GetMessages", "ResolveUsername", "GetMessages"]
    known = book.get("username:news")
    assert known is not None and known.peer_id == 3001


async def test_private_errors_are_not_stale() -> None:
    lookup, telegram = _lookup(
        {fn.channels.GetMessagesRequest: tl_errors.ChannelPrivateError(None)}
    )
    assert lookup.book is not None
    lookup.book.learn([StoredPeer("", "channel", 2001, 0xAA, "news", 0.0)])
    with pytest.raises(tl_errors.ChannelPrivateError):
        await lookup.get_messages("@news", [1])
    assert telegram.sent == ["GetMessages"]
    assert lookup.book.get("username:news") is not None  # its hash is still good


def test_peers_in_reads_ids_hashes_and_usernames_only() -> None:
    me = tl.User(id=1, access_hash=5, first_name="Alice", phone="15550000001", username="Al")
    min_user = tl.User(id=2, access_hash=6, min=True, username="m")
    forbidden = tl.ChannelForbidden(id=9, access_hash=3, title="Secret")
    chat = tl.Chat(id=4, title="t", photo=tl.ChatPhotoEmpty(), participants_count=1, date=None,
                   version=1)  # fmt: skip
    result = tl.messages.Chats(chats=[forbidden, chat])
    assert peers_in(result, "a1") == [StoredPeer("a1", "channel", 9, 3, None, 0.0)]
    assert peers_in([me, min_user], "a1") == [StoredPeer("a1", "user", 1, 5, "al", 0.0)]
    assert peers_in(True, "a1") == []


BOB = tl.User(id=1002, access_hash=0xBB, first_name="Bob", username="bob_test")


async def test_a_phone_number_is_looked_up_with_resolvePhone_every_time() -> None:
    """``"+1555…"`` and ``"1555…"`` are phone numbers (Telethon's reading): one
    ``contacts.resolvePhone`` each time — not remembered (no key for a phone) — and the user
    found is remembered by id and username; as a peer, the session's cache comes first."""
    resolved = tl.contacts.ResolvedPeer(peer=tl.PeerUser(1002), chats=[], users=[BOB])
    full = tl.users.UserFull(
        full_user=tl.UserFull(
            id=1002, settings=tl.PeerSettings(), notify_settings=tl.PeerNotifySettings(),
            common_chats_count=0,
        ),
        chats=[], users=[BOB],
    )  # fmt: skip
    lookup, telegram = _lookup(
        {
            fn.contacts.ResolvePhoneRequest: resolved,
            fn.users.GetFullUserRequest: full,
            fn.users.GetUsersRequest: [BOB],
            fn.messages.GetMessagesRequest: tl.messages.Messages([], [], [], []),
        }
    )
    for spelling in ("+15550000002", "15550000002"):
        assert (await lookup.resolve(spelling))["id"] == 1002
    assert telegram.sent == ["ResolvePhone", "GetFullUser"] * 2
    assert lookup.book is not None and lookup.book.get("username:bob_test") is not None
    telegram.sent.clear()
    assert await lookup.get_messages("+15550000002", [1]) == {"1": {"exists": False}}
    assert telegram.sent == ["ResolvePhone", "GetUsers", "GetMessages"]
    # with Telethon's session cache knowing the number: no look-up at all
    cached = PeerLookup(
        telegram.invoke,
        telegram.input_entity,
        cached_entity=lambda target: (
            tl.InputPeerUser(1002, 0xBB) if target == "+15550000002" else None
        ),
    )
    telegram.sent.clear()
    assert await cached.input_peer("15550000002", PeerKind.USER) == tl.InputUser(1002, 0xBB)
    assert telegram.sent == []


async def test_errors_never_show_a_phone_number() -> None:
    lookup, _ = _lookup(
        {
            fn.contacts.ResolvePhoneRequest: tl.contacts.ResolvedPeer(
                peer=tl.PeerUser(1002), chats=[], users=[BOB]
            ),
        }
    )
    with pytest.raises(JobFailed) as info:
        await lookup.input_peer("+15550000002", PeerKind.CHANNEL)
    assert "<phone number>" in str(info.value) and "5550000002" not in str(info.value)
