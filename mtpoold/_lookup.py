"""Peer look-ups: what `resolve`, `get_messages` and ``invoke``'s peer arguments send.

`PeerLookup` turns what users name a peer with (`mtpoold._links.parse_link`) into Telethon's
Input* objects and answers the `resolve` / `get_messages` jobs with the summaries of
`mtpoold._summaries`, choosing which look-up calls go on the wire. It is handed the client's
ways to reach Telegram — one request (``invoke``, through the account's bridge and wire
governor), Telethon's ``get_input_entity`` (its entity cache first) and Telethon's session
cache alone (no network) — and knows nothing of connections.

With the account's peer memory (`mtpoold._peermemory.AccountPeers`, handed over by
`set_peer_book`; ``[economy] peer_memory``), a peer the account has seen costs no look-up:
its ``InputPeerUser`` / ``InputPeerChannel`` is built from the remembered access hash (no
``contacts.resolveUsername``, no ``users.getUsers`` / ``channels.getChannels`` first), and
`resolve` of a known channel or user sends only its ``channels.getFullChannel`` /
``users.getFullUser``. Every user and channel with an access hash in any result is
remembered (`peers_in`, fed by the client's hook on Telethon's ``_call``). When Telegram
calls a remembered peer invalid (`STALE_PEER_ERRORS`), or the result shows a remembered
username now belongs to another peer, the peer is forgotten and looked up once more within
the same call. Without a book everything is as before the peer memory existed.

Phone numbers (``"+15551234567"``, ``"15551234567"``: `mtpoold._links.parse_link`) are
looked up with ``contacts.resolvePhone`` (rate class ``resolve``) every time: they have no
`peer_key`, so neither the peer memory nor job sharing keeps them (a hash of a phone number
would be no protection — the numbers are few enough to hash them all — and a phone look-up is
rare); the user found is remembered by its id and username like any other. Errors show a
phone number as ``<phone number>`` (`mtpoold._links.shown_peer`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar, final

import attrs
from telethon import errors as tl_errors
from telethon import utils as tl_utils
from telethon.tl import functions as tl_functions
from telethon.tl import types as tl_types
from telethon.tl.tlobject import TLObject

from ._errors import ErrorClass, JobFailed, redact
from ._links import check_message_ids, parse_link, peer_key, shown_peer
from ._peermemory import AccountPeers, StoredPeer
from ._summaries import invite_summary, message_summaries, peer_summary, primary_username
from ._tljson import PeerKind

__all__ = ["STALE_PEER_ERRORS", "PeerLookup", "peers_in"]

T = TypeVar("T")

#: RPC errors that say a remembered peer (its access hash, or the peer a username named)
#: is no longer valid for this account: forget it and look it up again. CHANNEL_PRIVATE is
#: not one (the hash is fine; the account may not read the channel).
STALE_PEER_ERRORS: Final = frozenset(
    {"CHANNEL_INVALID", "PEER_ID_INVALID", "USER_ID_INVALID", "USERNAME_INVALID",
     "USERNAME_NOT_OCCUPIED", "INPUT_USER_DEACTIVATED"}
)  # fmt: skip

# Telethon's generated error classes keep no RPC message on the instance: match them by class.
_STALE_CLASSES: Final = tuple(
    tl_errors.rpc_errors_dict[name]
    for name in sorted(STALE_PEER_ERRORS)
    if name in tl_errors.rpc_errors_dict
)

#: ``(key, peer)`` taken from the peer memory during one operation.
Used = list[tuple[str, StoredPeer]]


def peers_in(result: Any, account_id: str) -> list[StoredPeer]:
    """Every user and channel with an access hash in a TL result, as peer-memory records.

    Looks where Telethon's session cache looks (``MemorySession._entities_to_rows``): a list
    of entities, or an object's ``user``, ``chat``, ``chats`` and ``users``. ``min``
    entities (whose hash is only good inside the message they came with) and basic chats
    (no hash) are left out; ``ChannelForbidden`` is kept (its hash still names it). Names,
    phone numbers and text are never read. ``seen_unix`` is 0 (the memory sets it).
    """
    if isinstance(result, list):
        entities: list[Any] = result
    elif isinstance(result, TLObject):
        entities = []
        for attr in ("user", "chat"):
            if (e := getattr(result, attr, None)) is not None:
                entities.append(e)
        for attr in ("chats", "users"):
            if isinstance(found := getattr(result, attr, None), list):
                entities.extend(found)
    else:
        return []
    out: list[StoredPeer] = []
    for e in entities:
        if getattr(e, "min", False) or getattr(e, "access_hash", None) is None:
            continue
        if isinstance(e, tl_types.User):
            kind = "user"
        elif isinstance(e, tl_types.Channel | tl_types.ChannelForbidden):
            kind = "channel"
        else:
            continue
        username = primary_username(e)
        out.append(
            StoredPeer(account_id, kind, e.id, e.access_hash, username and username.lower(), 0.0)
        )
    return out


def _input_of(peer: StoredPeer) -> TLObject:
    if peer.kind == "channel":
        return tl_types.InputPeerChannel(peer.peer_id, peer.access_hash)
    return tl_types.InputPeerUser(peer.peer_id, peer.access_hash)


def _stale(exc: Exception) -> bool:
    """Whether ``exc`` says a remembered peer is invalid (see `STALE_PEER_ERRORS`)."""
    if isinstance(exc, _STALE_CLASSES):
        return True
    if isinstance(exc, tl_errors.RPCError):  # one Telethon has no class for: its message
        return vars(exc).get("message") in STALE_PEER_ERRORS
    # a user Telegram leaves out of users.getUsers (see _check_peer_exists, _first)
    return isinstance(exc, ValueError) and str(exc).startswith("Cannot find any entity")


@final
@attrs.define(eq=False)
class PeerLookup:
    """One account's peer look-ups, over its client's calls.

    Args:
        invoke: Sends one TL request and returns its result (``TelethonClient._invoke``).
        input_entity: Telethon's ``get_input_entity`` through the bridge: the session's
            entity cache first, else a look-up call of Telethon's own.
        cached_entity: Telethon's session cache alone (no network): the Input* object for
            a username or peer, or None.
        book: The account's peer memory, or None (``[economy] peer_memory = false``).
    """

    invoke: Callable[[TLObject], Awaitable[Any]]
    input_entity: Callable[[Any], Awaitable[Any]]
    cached_entity: Callable[[Any], Any] = lambda _target: None
    book: AccountPeers | None = None

    async def send(
        self, build: Callable[[Callable[..., Awaitable[TLObject]]], Awaitable[TLObject]]
    ) -> Any:
        """Build a request whose peer arguments are resolved with this account's peers, and
        send it (``invoke`` jobs); a remembered peer Telegram calls invalid is forgotten and
        the request built and sent once more.

        Args:
            build: ``build(resolve_peer)`` -> the request, where ``resolve_peer(value,
                kind)`` is what `mtpoold._tljson.build_request` takes.

        Raises:
            Exception: from ``build`` and ``invoke``, for `classify`.
        """

        async def once(memory: bool, used: Used) -> Any:
            async def resolve_peer(value: str | int, kind: PeerKind) -> TLObject:
                return await self._input_peer(value, kind, memory=memory, used=used)

            return await self.invoke(await build(resolve_peer))

        return await self._remembering(once)

    async def resolve(self, link_or_username: str) -> dict[str, Any]:
        """Resolve a username, link, invite or id to a peer summary.

        Makes one look-up call (``contacts.resolveUsername``, ``users.getUsers``,
        ``channels.getChannels``, ``messages.getChats``, ``contacts.resolvePhone`` or
        ``messages.checkChatInvite``) and, for the counts, one ``channels.getFullChannel`` /
        ``users.getFullUser`` / ``messages.getFullChat``; a user or channel in the peer
        memory only the latter (a private channel also ``channels.getChannels``).

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

        async def once(memory: bool, used: Used) -> dict[str, Any]:
            known = self._recall(link_or_username, memory, used)
            if known is not None:
                return await self._known_summary(known)
            entity = await self._fetch_entity(kind, value, memory=memory, used=used)
            return await self._entity_summary(entity)

        return await self._remembering(once)

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

        async def once(memory: bool, used: Used) -> dict[str, Any]:
            input_peer = await self._input_peer(peer, PeerKind.PEER, memory=memory, used=used)
            return await self._read_messages(input_peer, peer, id_list)

        return await self._remembering(once)

    async def _read_messages(
        self, input_peer: Any, peer: str | int, id_list: list[int]
    ) -> dict[str, Any]:
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
        _first(found, redact(shown_peer(value)))

    async def input_peer(self, value: str | int, kind: PeerKind) -> TLObject:
        """Turn a peer reference into an Input* object of ``kind``: the peer memory first,
        then Telethon's cache, then a look-up call.

        Raises:
            JobFailed: INVALID_ARGUMENT if the peer is not of ``kind``.
            Exception: the look-up's errors, for `classify`.
        """
        return await self._input_peer(value, kind, memory=True, used=[])

    def _recall(self, value: str | int, memory: bool, used: Used) -> StoredPeer | None:
        """The remembered peer ``value`` names (noted in ``used``), or None."""
        if self.book is None or not memory:
            return None
        key = peer_key(value)
        known = self.book.get(key) if key is not None else None
        if known is not None and key is not None:
            used.append((key, known))
        return known

    async def _remembering(self, once: Callable[[bool, Used], Awaitable[T]]) -> T:
        """Run ``once(memory=True, used)``; if a remembered peer it used turned out stale
        (Telegram called it invalid, or the answer showed its username now names another
        peer), forget it and run ``once(memory=False, ...)``: a look-up on the wire, past
        Telethon's session cache too (``memory=True`` again only when the memory already
        holds the username's new peer)."""
        book = self.book
        if book is None:
            return await once(False, [])
        used: Used = []
        try:
            result = await once(True, used)
        except Exception as exc:
            if not used or not _stale(exc):
                raise
            for key, _ in used:
                book.forget(key)
            return await once(False, [])
        for key, peer in used:
            now = book.get(key)
            if key.startswith("username:") and (
                now is None or (now.kind, now.peer_id) != (peer.kind, peer.peer_id)
            ):
                # The answer came from the peer that used to have the username (the result
                # showed it without): ask again, by the peer the memory holds for it now, else
                # on the wire — not Telethon's session cache, whose rows are never dropped
                # and still name the old peer.
                return await once(now is not None, [])
        return result

    async def _input_peer(
        self, value: str | int, kind: PeerKind, *, memory: bool, used: Used
    ) -> TLObject:
        link_kind, parsed = parse_link(value)
        known = self._recall(value, memory, used)
        if known is not None:
            input_peer: Any = _input_of(known)
        elif link_kind == "username" and self.book is not None:
            input_peer = await self._username_peer(str(parsed), cache=memory)
        elif link_kind == "self":
            input_peer = tl_types.InputPeerSelf()
        elif link_kind == "phone":
            input_peer = await self._phone_peer(str(parsed))
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
                f"peer {redact(shown_peer(value))!r} is not a {kind.value.replace('_', ' ')}",
            ) from None

    async def _username_peer(self, username: str, *, cache: bool) -> Any:
        """With a peer memory: Telethon's session cache (no network; unless ``cache`` is
        False, when a remembered hash was just found stale: a session file may hold it too),
        else ``contacts.resolveUsername`` through ``invoke`` (what it returns is remembered)."""
        cached = self.cached_entity(username) if cache else None
        if cached is not None:
            if self.book is not None and isinstance(
                cached, tl_types.InputPeerUser | tl_types.InputPeerChannel
            ):
                kind = "user" if isinstance(cached, tl_types.InputPeerUser) else "channel"
                peer_id = cached.user_id if kind == "user" else cached.channel_id
                self.book.learn(
                    [StoredPeer("", kind, peer_id, cached.access_hash, username.lower(), 0.0)]
                )
            return cached
        resolved = await self.invoke(tl_functions.contacts.ResolveUsernameRequest(username))
        return tl_utils.get_input_peer(_entity_in(resolved.peer, resolved.users, resolved.chats))

    async def _phone_peer(self, phone: str) -> Any:
        """The user with phone number ``phone`` (digits): Telethon's session cache (no
        network), else ``contacts.resolvePhone`` through ``invoke``. Not Telethon's own
        ``get_input_entity("+…")``, which reads the whole ``contacts.getContacts`` list and
        finds only the account's contacts."""
        cached = self.cached_entity("+" + phone)
        if isinstance(cached, tl_types.InputPeerUser):
            return cached
        resolved = await self.invoke(tl_functions.contacts.ResolvePhoneRequest(phone))
        return tl_utils.get_input_peer(_entity_in(resolved.peer, resolved.users, resolved.chats))

    async def _known_summary(self, known: StoredPeer) -> dict[str, Any]:
        """`resolve` of a remembered user or channel: its full info alone (one call); a
        private channel also ``channels.getChannels`` for what it shows."""
        if known.kind == "user":
            full = await self.invoke(
                tl_functions.users.GetFullUserRequest(
                    tl_types.InputUser(known.peer_id, known.access_hash)
                )
            )
            entity = _entity_in(tl_types.PeerUser(known.peer_id), full.users, full.chats)
            return peer_summary(entity, full)
        channel = tl_types.InputChannel(known.peer_id, known.access_hash)
        try:
            full = await self.invoke(tl_functions.channels.GetFullChannelRequest(channel))
        except tl_errors.ChannelPrivateError:
            chats = await self.invoke(tl_functions.channels.GetChannelsRequest([channel]))
            summary = peer_summary(_first(getattr(chats, "chats", ()), known.peer_id))
            summary["private"] = True
            return summary
        entity = _entity_in(tl_types.PeerChannel(known.peer_id), full.users, full.chats)
        return peer_summary(entity, full)

    async def _fetch_entity(
        self, kind: str, value: str | int, *, memory: bool = True, used: Used | None = None
    ) -> Any:
        """One call that returns the full User/Chat/Channel object for a parsed link."""
        used = [] if used is None else used
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
            input_user = await self._input_peer(int(value), PeerKind.USER, memory=memory, used=used)
            users = await self.invoke(tl_functions.users.GetUsersRequest([input_user]))
            return _first(users, value)
        input_channel = await self._input_peer(
            tl_utils.get_peer_id(tl_types.PeerChannel(int(value))),
            PeerKind.CHANNEL,
            memory=memory,
            used=used,
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
