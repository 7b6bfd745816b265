"""Peer look-ups: what `resolve`, `get_messages` and ``invoke``'s peer arguments send.

`PeerLookup` turns what users name a peer with (`mtpoold._links.parse_link`) into Telethon's
Input* objects and answers the `resolve` / `get_messages` jobs with the summaries of
`mtpoold._summaries`, choosing which look-up calls go on the wire. It is handed the client's
two ways to reach Telegram — one request (``invoke``, through the account's bridge and wire
governor) and Telethon's ``get_input_entity`` (its entity cache first) — and knows nothing
of connections.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, final

import attrs
from telethon import utils as tl_utils
from telethon.tl import functions as tl_functions
from telethon.tl import types as tl_types
from telethon.tl.tlobject import TLObject

from ._errors import ErrorClass, JobFailed, redact
from ._links import check_message_ids, parse_link
from ._summaries import invite_summary, message_summaries, peer_summary
from ._tljson import PeerKind

__all__ = ["PeerLookup"]


@final
@attrs.define(eq=False)
class PeerLookup:
    """One account's peer look-ups, over its client's calls.

    Args:
        invoke: Sends one TL request and returns its result (``TelethonClient._invoke``).
        input_entity: Telethon's ``get_input_entity`` through the bridge: the session's
            entity cache first, else a look-up call of Telethon's own.
    """

    invoke: Callable[[TLObject], Awaitable[Any]]
    input_entity: Callable[[Any], Awaitable[Any]]

    async def resolve(self, link_or_username: str) -> dict[str, Any]:
        """Resolve a username, link, invite or id to a peer summary.

        Makes one look-up call (``contacts.resolveUsername``, ``users.getUsers``,
        ``channels.getChannels``, ``messages.getChats``, ``contacts.resolvePhone`` or
        ``messages.checkChatInvite``) and, for the counts, one ``channels.getFullChannel`` /
        ``users.getFullUser`` / ``messages.getFullChat``.

        Returns:
            `mtpoold._summaries.peer_summary` (or `invite_summary` for invites to chats this
            account has not joined).

        Raises:
            JobFailed: INVALID_ARGUMENT if the input names no peer.
            Exception: Telethon's errors, for `classify` (``USERNAME_NOT_OCCUPIED`` ->
                PEER_NOT_FOUND, ...).
        """
        kind, value = parse_link(link_or_username)
        if kind == "invite":
            invite = await self.invoke(tl_functions.messages.CheckChatInviteRequest(str(value)))
            if isinstance(invite, tl_types.ChatInviteAlready | tl_types.ChatInvitePeek):
                summary = await self._entity_summary(invite.chat)
                summary["private"] = True
                return summary
            return invite_summary(invite)
        entity = await self._fetch_entity(kind, value)
        return await self._entity_summary(entity)

    async def get_messages(self, peer: str | int, ids: Sequence[int]) -> dict[str, Any]:
        """Fetch messages of one chat by id and summarize them.

        Args:
            peer: The chat: ``"@name"``, a t.me link or a marked id.
            ids: Up to `mtpoold._links.MAX_MESSAGE_IDS` message ids.

        Returns:
            `mtpoold._summaries.message_summaries`, keyed by ``str(id)``.

        Channels and supergroups are read with ``channels.getMessages``, which checks the
        peer itself; users and basic chats with ``messages.getMessages``, after
        ``users.getUsers`` / ``messages.getChats`` confirmed the peer exists for this account.

        Raises:
            JobFailed: INVALID_ARGUMENT for bad ids or peer.
            Exception: Telethon's errors, for `classify` (an unknown chat's
                ``CHAT_ID_INVALID`` / ``PEER_ID_INVALID``, or ``ValueError("Cannot find any
                entity ...")`` for a user or chat Telegram does not return: PEER_NOT_FOUND).
        """
        id_list = check_message_ids(ids)
        input_peer = await self.input_peer(peer, PeerKind.PEER)
        wanted = [tl_types.InputMessageID(i) for i in id_list]
        if isinstance(input_peer, tl_types.InputPeerChannel | tl_types.InputPeerChannelFromMessage):
            request: Any = tl_functions.channels.GetMessagesRequest(
                tl_utils.get_input_channel(input_peer), wanted
            )
            result = await self.invoke(request)
            messages = list(getattr(result, "messages", ()))
        else:
            # messages.getMessages takes no peer, so Telegram never says the peer is unknown:
            # check it exists for this account first, or a typo reads as "no such messages".
            await self._check_peer_exists(input_peer, peer)
            result = await self.invoke(tl_functions.messages.GetMessagesRequest(wanted))
            messages = list(getattr(result, "messages", ()))
            if not isinstance(input_peer, tl_types.InputPeerSelf):
                # messages.getMessages reads the account's whole inbox: keep this chat's only
                chat_id = tl_utils.get_peer_id(input_peer)
                messages = [
                    m
                    for m in messages
                    if getattr(m, "peer_id", None) is not None
                    and tl_utils.get_peer_id(m.peer_id) == chat_id
                ]
        return message_summaries(id_list, messages)

    async def _check_peer_exists(self, input_peer: Any, value: str | int) -> None:
        """Raise unless Telegram returns the user or basic chat `input_peer` to this account."""
        if isinstance(input_peer, tl_types.InputPeerSelf):
            return
        if isinstance(input_peer, tl_types.InputPeerChat):
            chats = await self.invoke(tl_functions.messages.GetChatsRequest([input_peer.chat_id]))
            found = [
                c
                for c in getattr(chats, "chats", ())
                if getattr(c, "id", None) == input_peer.chat_id
            ]
        elif isinstance(input_peer, tl_types.InputPeerUser | tl_types.InputPeerUserFromMessage):
            users = await self.invoke(
                tl_functions.users.GetUsersRequest([tl_utils.get_input_user(input_peer)])
            )
            found = [u for u in users if getattr(u, "id", None) == input_peer.user_id]
        else:
            return
        _first(found, redact(str(value)))

    async def input_peer(self, value: str | int, kind: PeerKind) -> TLObject:
        """Turn a peer reference into an Input* object of ``kind`` with this account's cache."""
        link_kind, parsed = parse_link(value)
        if link_kind == "self":
            input_peer: Any = tl_types.InputPeerSelf()
        elif link_kind == "invite":
            invite = await self.invoke(tl_functions.messages.CheckChatInviteRequest(str(parsed)))
            chat = getattr(invite, "chat", None)
            if chat is None:
                raise ValueError(
                    "Cannot find any entity corresponding to this invite: the account has not"
                    " joined its chat"
                )
            input_peer = tl_utils.get_input_peer(chat)
        else:
            target: Any
            if link_kind == "username":
                target = str(parsed)
            elif link_kind == "phone":
                target = "+" + str(parsed)
            elif link_kind == "user_id":
                target = tl_types.PeerUser(int(parsed))
            elif link_kind == "chat_id":
                target = tl_types.PeerChat(int(parsed))
            else:
                target = tl_types.PeerChannel(int(parsed))
            input_peer = await self.input_entity(target)
        try:
            if kind is PeerKind.USER:
                return tl_utils.get_input_user(input_peer)
            if kind is PeerKind.CHANNEL:
                return tl_utils.get_input_channel(input_peer)
            if kind is PeerKind.DIALOG_PEER:
                return tl_utils.get_input_dialog(input_peer)
            return tl_utils.get_input_peer(input_peer)
        except TypeError:
            raise JobFailed(
                ErrorClass.INVALID_ARGUMENT,
                f"peer {redact(str(value))!r} is not a {kind.value.replace('_', ' ')}",
            ) from None

    async def _fetch_entity(self, kind: str, value: str | int) -> Any:
        """One call that returns the full User/Chat/Channel object for a parsed link."""
        if kind in ("username", "phone"):
            if kind == "username":
                request: Any = tl_functions.contacts.ResolveUsernameRequest(str(value))
            else:
                request = tl_functions.contacts.ResolvePhoneRequest(str(value))
            resolved = await self.invoke(request)
            return _entity_in(resolved.peer, resolved.users, resolved.chats)
        if kind == "self":
            users = await self.invoke(
                tl_functions.users.GetUsersRequest([tl_types.InputUserSelf()])
            )
            return _first(users, value)
        if kind == "chat_id":
            chats = await self.invoke(tl_functions.messages.GetChatsRequest([int(value)]))
            return _first(getattr(chats, "chats", ()), value)
        if kind == "user_id":
            input_user = await self.input_peer(int(value), PeerKind.USER)
            users = await self.invoke(tl_functions.users.GetUsersRequest([input_user]))
            return _first(users, value)
        input_channel = await self.input_peer(
            tl_utils.get_peer_id(tl_types.PeerChannel(int(value))), PeerKind.CHANNEL
        )
        chats = await self.invoke(tl_functions.channels.GetChannelsRequest([input_channel]))
        return _first(getattr(chats, "chats", ()), value)

    async def _entity_summary(self, entity: Any) -> dict[str, Any]:
        full: Any = None
        if isinstance(entity, tl_types.Channel):
            try:
                full = await self.invoke(
                    tl_functions.channels.GetFullChannelRequest(tl_utils.get_input_channel(entity))
                )
            except Exception as exc:
                if type(exc).__name__ != "ChannelPrivateError":
                    raise
                summary = peer_summary(entity)
                summary["private"] = True
                return summary
        elif isinstance(entity, tl_types.User):
            full = await self.invoke(
                tl_functions.users.GetFullUserRequest(tl_utils.get_input_user(entity))
            )
        elif isinstance(entity, tl_types.Chat):
            full = await self.invoke(tl_functions.messages.GetFullChatRequest(entity.id))
        return peer_summary(entity, full)


def _entity_in(peer: Any, users: Sequence[Any], chats: Sequence[Any]) -> Any:
    if isinstance(peer, tl_types.PeerUser):
        pool, wanted = users, peer.user_id
    elif isinstance(peer, tl_types.PeerChannel):
        pool, wanted = chats, peer.channel_id
    else:
        pool, wanted = chats, getattr(peer, "chat_id", None)
    for entity in pool:
        if getattr(entity, "id", None) == wanted:
            return entity
    raise ValueError("Cannot find any entity corresponding to the resolved peer")


def _first(entities: Sequence[Any], value: object) -> Any:
    for entity in entities:
        if not isinstance(entity, tl_types.UserEmpty | tl_types.ChatEmpty):
            return entity
    raise ValueError(f"Cannot find any entity corresponding to {value!r}")
