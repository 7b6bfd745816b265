"""The normalized answers of `resolve` and `get_messages` jobs, as pure functions over TL.

`resolve` and `get_messages` answer with small, stable dicts instead of raw TL: they are built
here from hand-buildable ``telethon.tl.types`` objects (no network, easy to test), and
`mtpoold._lookup` feeds them what the account fetched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from telethon import utils as tl_utils
from telethon.tl import types as tl_types
from telethon.tl.tlobject import TLObject

from ._errors import ErrorClass, JobFailed
from ._tljson import format_datetime

__all__ = [
    "invite_summary",
    "message_summaries",
    "peer_summary",
    "primary_username",
]

# --- peer_summary ------------------------------------------------------------------------------


def primary_username(entity: Any) -> str | None:
    """The username a user or channel is reached by: ``username``, else its first active
    collectible one (``usernames``); None if it has none."""
    username = getattr(entity, "username", None)
    if username:
        return str(username)
    for u in getattr(entity, "usernames", None) or ():
        if getattr(u, "active", False) and getattr(u, "username", None):
            return str(u.username)
    return None


def _full_object(full: TLObject | None) -> Any:
    """The ChannelFull / ChatFull / UserFull inside ``messages.ChatFull`` / ``users.UserFull``."""
    if full is None:
        return None
    inner = getattr(full, "full_chat", None) or getattr(full, "full_user", None)
    return inner if inner is not None else full


def peer_summary(entity: TLObject, full: TLObject | None = None) -> dict[str, Any]:
    """Summarize a user, bot, chat or channel for a `resolve` job.

    Args:
        entity: ``types.User``, ``types.Channel``, ``types.Chat``, ``types.ChannelForbidden``,
            ``types.ChatForbidden`` or ``types.UserEmpty``.
        full: Optional ``messages.ChatFull`` / ``types.ChannelFull`` / ``types.ChatFull`` /
            ``users.UserFull`` / ``types.UserFull`` with counts and the about text.

    Returns:
        ``{"kind": "user"|"bot"|"channel"|"supergroup"|"chat", "id": bare Telegram id,
        "peer_id": marked id (users id, chats -id, channels -100…id; accepted back by
        `parse_link`), "username": str|None, "name" (users) or "title" (chats/channels),
        "participants_count": int|None (subscribers of a channel, from ``full`` when
        given), "verified", "scam", "fake": bool, "private": bool (no public username, or
        the chat is forbidden/private to this account), "about": str|None (from ``full``)}``.

    Raises:
        JobFailed: INVALID_ARGUMENT if `entity` is not a peer.
    """
    inner = _full_object(full)
    about = getattr(inner, "about", None) if inner is not None else None
    if isinstance(entity, tl_types.User | tl_types.UserEmpty):
        parts = (getattr(entity, "first_name", None), getattr(entity, "last_name", None))
        name = " ".join(p for p in parts if p)
        username = primary_username(entity)
        return {
            "kind": "bot" if getattr(entity, "bot", False) else "user",
            "id": entity.id,
            "peer_id": entity.id,
            "username": username,
            "name": name or None,
            "participants_count": None,
            "verified": bool(getattr(entity, "verified", False)),
            "scam": bool(getattr(entity, "scam", False)),
            "fake": bool(getattr(entity, "fake", False)),
            "private": username is None,
            "about": about,
        }
    if isinstance(entity, tl_types.Channel | tl_types.ChannelForbidden):
        forbidden = isinstance(entity, tl_types.ChannelForbidden)
        supergroup = bool(
            getattr(entity, "megagroup", False) or getattr(entity, "gigagroup", False)
        )
        username = None if forbidden else primary_username(entity)
        count = getattr(inner, "participants_count", None) if inner is not None else None
        if count is None:
            count = getattr(entity, "participants_count", None)
        return {
            "kind": "supergroup" if supergroup else "channel",
            "id": entity.id,
            "peer_id": tl_utils.get_peer_id(tl_types.PeerChannel(entity.id)),
            "username": username,
            "title": entity.title,
            "participants_count": count,
            "verified": bool(getattr(entity, "verified", False)),
            "scam": bool(getattr(entity, "scam", False)),
            "fake": bool(getattr(entity, "fake", False)),
            "private": forbidden or username is None,
            "about": about,
        }
    if isinstance(entity, tl_types.Chat | tl_types.ChatForbidden | tl_types.ChatEmpty):
        count = getattr(entity, "participants_count", None)
        participants = getattr(inner, "participants", None) if inner is not None else None
        if count is None and isinstance(participants, tl_types.ChatParticipants):
            count = len(participants.participants)
        return {
            "kind": "chat",
            "id": entity.id,
            "peer_id": tl_utils.get_peer_id(tl_types.PeerChat(entity.id)),
            "username": None,
            "title": getattr(entity, "title", None),
            "participants_count": count,
            "verified": False,
            "scam": False,
            "fake": False,
            "private": True,
            "about": about,
        }
    raise JobFailed(ErrorClass.INVALID_ARGUMENT, f"not a peer: {type(entity).__name__}")


def invite_summary(invite: TLObject) -> dict[str, Any]:
    """Summarize the answer to ``messages.checkChatInvite`` for a `resolve` job.

    Args:
        invite: ``ChatInviteAlready`` / ``ChatInvitePeek`` (the account sees the chat: its
            `peer_summary`, marked private) or ``ChatInvite`` (it does not: what the invite
            shows, with ``id``/``peer_id`` None).

    Returns:
        The same keys as `peer_summary`, ``private`` always True.

    Raises:
        JobFailed: INVALID_ARGUMENT for any other object.
    """
    if isinstance(invite, tl_types.ChatInviteAlready | tl_types.ChatInvitePeek):
        summary = peer_summary(invite.chat)
        summary["private"] = True
        return summary
    if isinstance(invite, tl_types.ChatInvite):
        if invite.broadcast:
            kind = "channel"
        elif invite.megagroup:
            kind = "supergroup"
        else:
            kind = "chat"
        return {
            "kind": kind,
            "id": None,
            "peer_id": None,
            "username": None,
            "title": invite.title,
            "participants_count": invite.participants_count,
            "verified": bool(invite.verified),
            "scam": bool(invite.scam),
            "fake": bool(invite.fake),
            "private": True,
            "about": getattr(invite, "about", None),
        }
    raise JobFailed(ErrorClass.INVALID_ARGUMENT, f"not a chat invite: {type(invite).__name__}")


# --- message_summaries -------------------------------------------------------------------------


def _reaction_key(reaction: Any) -> str:
    if isinstance(reaction, tl_types.ReactionEmoji):
        return str(reaction.emoticon)
    if isinstance(reaction, tl_types.ReactionCustomEmoji):
        return f"custom:{reaction.document_id}"
    if isinstance(reaction, tl_types.ReactionPaid):
        return "paid"
    return type(reaction).__name__


def message_summaries(ids: Iterable[int], messages: Iterable[TLObject | None]) -> dict[str, Any]:
    """Summarize the messages a `get_messages` job asked for.

    Args:
        ids: The ids asked for, in the order of the answer.
        messages: What Telegram returned (``Message``, ``MessageService``, ``MessageEmpty``,
            or None), in any order; extra messages are ignored.

    Returns:
        ``{str(id): summary}`` for every id asked for, where a summary is
        ``{"exists": True, "date": ISO 8601 UTC "…Z"|None, "text": str, "views": int|None,
        "forwards": int|None, "replies": int|None, "reactions": total int|None,
        "reaction_counts": {emoji or "custom:<document id>" or "paid": count}|None,
        "edit_date": ISO|None, "service": bool}`` and missing or deleted messages
        (``MessageEmpty`` or absent) are ``{"exists": False}``.
    """
    by_id: dict[int, Any] = {}
    for message in messages:
        if message is None or isinstance(message, tl_types.MessageEmpty):
            continue
        if isinstance(message, tl_types.Message | tl_types.MessageService):
            by_id[message.id] = message
    result: dict[str, Any] = {}
    for message_id in ids:
        message = by_id.get(message_id)
        result[str(message_id)] = {"exists": False} if message is None else _summary(message)
    return result


def _summary(message: Any) -> dict[str, Any]:
    service = isinstance(message, tl_types.MessageService)
    replies = getattr(message, "replies", None)
    reactions = getattr(message, "reactions", None)
    counts: dict[str, int] | None = None
    total: int | None = None
    if isinstance(reactions, tl_types.MessageReactions):
        counts = {}
        for rc in reactions.results or ():
            key = _reaction_key(rc.reaction)
            counts[key] = counts.get(key, 0) + int(rc.count)
        total = sum(counts.values())
    date = getattr(message, "date", None)
    edit_date = getattr(message, "edit_date", None)
    return {
        "exists": True,
        "date": format_datetime(date) if date is not None else None,
        "text": "" if service else (getattr(message, "message", None) or ""),
        "views": getattr(message, "views", None),
        "forwards": getattr(message, "forwards", None),
        "replies": replies.replies if isinstance(replies, tl_types.MessageReplies) else None,
        "reactions": total,
        "reaction_counts": counts,
        "edit_date": format_datetime(edit_date) if edit_date is not None else None,
        "service": service,
    }
