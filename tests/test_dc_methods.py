"""The loopback DC answers every supported method with the fixture world's data."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio_asyncio
from telethon import errors, functions, types

from mtpoold.testing.dc import DC, open_dc, open_telethon_client

aio = trio_asyncio.aio_as_trio
ALICE = "15550000001"
NEWS = types.InputChannel(2001, 0x2001AA)
CHAT = types.InputChannel(2002, 0x2002BB)
PRIVATE = types.InputChannel(2003, 0x2003CC)


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc() as dc, trio_asyncio.open_loop():
        yield dc


async def test_DC_get_config_points_at_itself(dc: DC) -> None:
    async with open_telethon_client(dc) as client:
        config = await aio(client)(functions.help.GetConfigRequest())
        nearest = await aio(client)(functions.help.GetNearestDcRequest())
    assert config.this_dc == dc.dc_id == 2
    assert [(o.id, o.ip_address, o.port) for o in config.dc_options] == [(2, dc.host, dc.port)]
    assert (nearest.this_dc, nearest.nearest_dc) == (2, 2)


async def test_DC_session_string_is_authorized(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        assert await aio(client.is_user_authorized)()
        me = await aio(client.get_me)()
        state = await aio(client)(functions.updates.GetStateRequest())
    assert (me.id, me.username, me.phone, me.is_self) == (1001, "alice_test", ALICE, True)
    assert state.pts == 1
    assert dc.counters(ALICE)["updates.GetState"] >= 2  # connect's _on_login + ours


async def test_DC_users(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        users = await aio(client)(
            functions.users.GetUsersRequest(
                [
                    types.InputUser(1002, 0x1002BB),
                    types.InputUser(1005, 0x1005EE),
                    types.InputUser(1006, 0x1006FF),
                ]
            )
        )
        bob_input = types.InputUser(1002, 0x1002BB)
        full = await aio(client)(functions.users.GetFullUserRequest(bob_input))
        with pytest.raises(errors.UserIdInvalidError):
            await aio(client)(functions.users.GetUsersRequest([types.InputUser(1002, 1)]))
        with pytest.raises(errors.UserIdInvalidError):
            await aio(client)(functions.users.GetFullUserRequest(types.InputUser(9999, 1)))
    bob, erin, bot = users
    assert (bob.username, bob.verified, bob.phone) == ("bob_test", True, None)
    assert erin.deleted and erin.first_name is None
    assert bot.bot and bot.username == "mtpoold_test_bot"
    assert full.full_user.id == 1002 and full.users[0].first_name == "Bob"


async def test_DC_resolve_username(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        call = aio(client)
        news = await call(functions.contacts.ResolveUsernameRequest("mtpoold_news"))
        bob = await call(functions.contacts.ResolveUsernameRequest("Bob_Test"))
        with pytest.raises(errors.UsernameNotOccupiedError):
            await call(functions.contacts.ResolveUsernameRequest("nobody_here"))
        entity = await aio(client.get_entity)("@mtpoold_chat")
    assert news.peer == types.PeerChannel(2001)
    assert (news.chats[0].title, news.chats[0].broadcast, news.chats[0].verified) == (
        "mtpoold News",
        True,
        True,
    )
    assert news.chats[0].participants_count == 12345
    assert bob.users[0].id == 1002
    assert entity.megagroup and entity.id == 2002


async def test_DC_resolve_phone(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        call = aio(client)
        bob = await call(functions.contacts.ResolvePhoneRequest("15550000002"))
        carol = await call(functions.contacts.ResolvePhoneRequest("+15550000003"))
        with pytest.raises(errors.PhoneNotOccupiedError):
            await call(functions.contacts.ResolvePhoneRequest("15559999999"))
        with pytest.raises(errors.PhoneNotOccupiedError):  # erin: deactivated
            await call(functions.contacts.ResolvePhoneRequest("15550000005"))
    assert bob.peer == types.PeerUser(1002) and bob.users[0].username == "bob_test"
    assert bob.users[0].phone == "15550000002"  # Telegram shows it to whoever knew it
    assert carol.peer == types.PeerUser(1003) and carol.users[0].first_name == "Carol"


async def test_DC_chat_invites(dc: DC) -> None:
    """checkChatInvite: a preview for non-members, the chat for members, EXPIRED / INVALID;
    importChatInvite joins (and says USER_ALREADY_PARTICIPANT after)."""
    check = functions.messages.CheckChatInviteRequest
    async with (
        open_telethon_client(dc, ALICE) as alice,
        open_telethon_client(dc, "15550000002") as bob,
    ):
        preview = await aio(alice)(check("PrivInvite123"))
        already = await aio(bob)(check("PrivInvite123"))
        member = await aio(alice)(check("ChatInvite456"))
        with pytest.raises(errors.InviteHashExpiredError):
            await aio(alice)(check("OldInvite789"))
        with pytest.raises(errors.InviteHashInvalidError):
            await aio(alice)(check("NoSuchInvite0"))
        joined = await aio(alice)(functions.messages.ImportChatInviteRequest("PrivInvite123"))
        after = await aio(alice)(check("PrivInvite123"))
        with pytest.raises(errors.UserAlreadyParticipantError):
            await aio(alice)(functions.messages.ImportChatInviteRequest("PrivInvite123"))
    assert isinstance(preview, types.ChatInvite)
    assert (preview.title, preview.participants_count, preview.about) == (
        "Secret Club",
        7,
        "Members only",
    )
    assert preview.broadcast and preview.channel and not preview.public
    assert isinstance(already, types.ChatInviteAlready) and isinstance(already.chat, types.Channel)
    assert already.chat.id == 2003
    assert isinstance(member, types.ChatInviteAlready) and member.chat.username == "mtpoold_chat"
    assert joined.chats[0].id == 2003
    assert isinstance(after, types.ChatInviteAlready)


async def test_DC_channels(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        call = aio(client)
        chats = await call(functions.channels.GetChannelsRequest([NEWS, PRIVATE]))
        full = await call(functions.channels.GetFullChannelRequest(NEWS))
        with pytest.raises(errors.ChannelInvalidError):
            await call(functions.channels.GetFullChannelRequest(types.InputChannel(2001, 5)))
        with pytest.raises(errors.ChannelPrivateError):
            await call(functions.channels.GetFullChannelRequest(PRIVATE))
    news, private = chats.chats
    assert news.username == "mtpoold_news"
    assert isinstance(private, types.ChannelForbidden) and private.title == "Secret Club"
    assert full.full_chat.participants_count == 12345 and full.full_chat.about == "Test channel"


async def test_DC_messages(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        call = aio(client)
        got = await call(
            functions.channels.GetMessagesRequest(
                NEWS, [types.InputMessageID(2), types.InputMessageID(99)]
            )
        )
        views = await call(
            functions.messages.GetMessagesViewsRequest(
                types.InputPeerChannel(2001, 0x2001AA), [1, 3], False
            )
        )
        plain = await call(functions.messages.GetMessagesRequest([types.InputMessageID(1)]))
        history = await call(
            functions.messages.GetHistoryRequest(
                types.InputPeerChannel(2001, 0x2001AA), 4, None, 0, 2, 0, 0, 0
            )
        )
        chat = await aio(client.get_messages)("mtpoold_chat", limit=10)
        with pytest.raises(errors.ChannelInvalidError):
            await call(
                functions.messages.GetHistoryRequest(
                    types.InputPeerChannel(2001, 1), 0, None, 0, 2, 0, 0, 0
                )
            )
        with pytest.raises(errors.PeerIdInvalidError):
            await call(
                functions.messages.GetHistoryRequest(
                    types.InputPeerUser(1002, 1), 0, None, 0, 2, 0, 0, 0
                )
            )
    m2, missing = got.messages
    assert (m2.id, m2.message, m2.views, m2.forwards, m2.replies.replies) == (
        2,
        "News post #2",
        2000,
        20,
        2,
    )
    reactions = {(r.reaction.emoticon, r.count) for r in m2.reactions.results}
    assert reactions == {("👍", 10), ("🔥", 2)}
    assert isinstance(missing, types.MessageEmpty)
    assert [v.views for v in views.views] == [1000, 3000]
    assert isinstance(plain.messages[0], types.MessageEmpty)
    assert [m.id for m in history.messages] == [3, 2] and history.count == 5
    assert [m.id for m in chat] == [3, 2, 1] and chat[0].sender_id == 1001


async def test_DC_unauthorized_key(dc: DC) -> None:
    async with open_telethon_client(dc) as client:
        assert not await aio(client.is_user_authorized)()
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await aio(client)(functions.contacts.ResolveUsernameRequest("mtpoold_news"))
        # help.* needs no user
        await aio(client)(functions.help.GetNearestDcRequest())


async def test_DC_deactivated_account(dc: DC) -> None:
    async with open_telethon_client(dc, "15550000005") as client:
        assert await aio(client.get_me)() is None
        with pytest.raises(errors.UserDeactivatedError):
            await aio(client)(functions.contacts.ResolveUsernameRequest("mtpoold_news"))


async def test_DC_unknown_method_is_METHOD_INVALID(dc: DC) -> None:
    class Bogus(functions.TLRequest):  # type: ignore[misc]
        CONSTRUCTOR_ID = 0x0BADF00D
        SUBCLASS_OF_ID = 0

        def _bytes(self) -> bytes:
            return b"\x0d\xf0\xad\x0b"

        @staticmethod
        def read_result(reader):  # type: ignore[no-untyped-def]
            return reader.tgread_object()

    async with open_telethon_client(dc, ALICE) as client:
        with pytest.raises(errors.MethodInvalidError):
            await aio(client)(Bogus())
        # known to Telethon, not implemented by the DC
        with pytest.raises(errors.MethodInvalidError):
            await aio(client)(functions.messages.GetDialogFiltersRequest())
        # the connection still works
        assert (await aio(client.get_me)()).id == 1001


async def test_DC_unknown_basic_chats_and_users_answer_like_telegram(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        call = aio(client)
        with pytest.raises(errors.ChatIdInvalidError):
            await call(functions.messages.GetChatsRequest([1006001]))
        with pytest.raises(errors.ChatIdInvalidError):
            await call(functions.messages.GetFullChatRequest(1))
        assert (await call(functions.messages.GetChatsRequest([]))).chats == []
        # users that do not exist are left out; a known user with a wrong hash is an error
        users = await call(
            functions.users.GetUsersRequest(
                [types.InputUser(9999, 0), types.InputUser(1002, 0x1002BB)]
            )
        )
        assert [u.id for u in users] == [1002]
        assert await call(functions.users.GetUsersRequest([types.InputUser(9999, 0)])) == []
