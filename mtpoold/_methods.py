"""The job vocabulary's normalized results, as pure functions over Telethon's TL objects.

`resolve` and `get_messages` jobs answer with small, stable dicts instead of raw TL: they are
built here from hand-buildable ``telethon.tl.types`` objects (no network, easy to test), and
`mtpoold._client` feeds them what the account fetched. `parse_link` turns what users paste
(``@name``, ``t.me`` links, invite links, numeric ids) into something an account can resolve.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal

from telethon import utils as tl_utils
from telethon.tl import types as tl_types
from telethon.tl.tlobject import TLObject

from ._errors import ErrorClass, JobFailed
from ._tljson import format_datetime

__all__ = [
    "LinkKind",
    "MAX_MESSAGE_ID",
    "MAX_MESSAGE_IDS",
    "check_message_ids",
    "check_peer",
    "invite_summary",
    "message_summaries",
    "parse_link",
    "peer_key",
    "peer_summary",
]

LinkKind = Literal["username", "invite", "phone", "user_id", "chat_id", "channel_id", "self"]

MAX_MESSAGE_IDS: Final = 100  # ids per get_messages job: one messages.getMessages call
MAX_MESSAGE_ID: Final = 2**31 - 1  # message ids are TL int (int32)
MAX_PEER_ID: Final = 2**63 - 1  # bare user/chat/channel ids are TL long (int64)
MAX_LINK_CHARS: Final = 512

# ASCII only: Telegram usernames are a-z, 0-9 and _ (re.ASCII keeps \w from matching "é").
_USERNAME_RE: Final = re.compile(r"^[A-Za-z](?:(?!__)\w){2,30}[A-Za-z0-9]$", re.ASCII)
_INVITE_HASH_RE: Final = re.compile(r"^[A-Za-z0-9_-]{4,64}$", re.ASCII)
_TG_HOSTS: Final = frozenset({"t.me", "telegram.me", "telegram.dog"})
# t.me path segments that are not usernames (addstickers/..., proxy?..., share/url?...)
_RESERVED_PATHS: Final = frozenset(
    {
        "addemoji", "addlist", "addstickers", "addtheme", "auth", "bg", "boost", "confirmphone",
        "contact", "giftcode", "invoice", "iv", "login", "m", "proxy", "setlanguage", "share",
        "socks", "addpremium", "nft", "stars", "premium", "multigift",
    }
)  # fmt: skip
_CHANNEL_ID_OFFSET: Final = 1_000_000_000_000  # "-100" marking: marked = -(offset + id)


def _invalid(link: object, why: str) -> JobFailed:
    text = str(link)
    if len(text) > 80:
        text = text[:79] + "…"
    return JobFailed(ErrorClass.INVALID_ARGUMENT, f"invalid peer {text!r}: {why}")


# --- parse_link -------------------------------------------------------------------------------


def check_peer(peer: str | int, *, argument: str = "peer") -> None:
    """Check that `peer` names a peer, without a network: what `parse_link` rejects.

    Pure and cheap: the pool calls it before it schedules a `resolve` or `get_messages` job,
    so ``"@"``, ``""``, ``"https://evil.com/x"``, ``"user:5001"``, a non-ASCII username or an
    id out of range never takes an account.

    Args:
        peer: A username, t.me / tg:// link, invite link, phone number or marked id.
        argument: The job argument's name, for the message.

    Raises:
        JobFailed: INVALID_ARGUMENT ``<argument>: invalid peer '<peer>': <why>``.
    """
    try:
        parse_link(peer)
    except JobFailed as exc:
        raise JobFailed(exc.error_class, f"{argument}: {exc.message}") from None


def peer_key(link_or_username: str | int) -> str | None:
    """The one spelling of a peer reference that every account shares, or None.

    ``"@Durov"``, ``"t.me/durov/12"`` -> ``"username:durov"`` (Telegram compares usernames
    case-insensitively); ids -> ``"user_id:5"``, ``"chat_id:7"``, ``"channel_id:12345"``.
    Invites, phone numbers (personal data) and ``me`` (a different peer per account) have
    none. Never raises: a reference `parse_link` refuses has no key either.
    """
    try:
        kind, value = parse_link(link_or_username)
    except JobFailed:
        return None
    if kind == "username":
        return f"username:{str(value).lower()}"
    if kind in ("user_id", "chat_id", "channel_id"):
        return f"{kind}:{value}"
    return None


def parse_link(link_or_username: str | int) -> tuple[LinkKind, str | int]:
    """Parse what a user gives to name a peer.

    ======================================  =========================
    input                                   result
    ======================================  =========================
    ``"@durov"``, ``"durov"``               ``("username", "durov")``
    ``"t.me/durov"``, ``"https://t.me/durov/123"``, ``"t.me/s/durov"``, ``"tg://resolve?domain=durov"``
                                            ``("username", "durov")``
    ``"t.me/c/12345/67"``                   ``("channel_id", 12345)``
    ``"t.me/+AbCd…"``, ``"t.me/joinchat/AbCd…"``, ``"tg://join?invite=AbCd…"``
                                            ``("invite", "AbCd…")`` (private)
    ``"t.me/+15551234567"``, ``"+15551234567"``
                                            ``("phone", "15551234567")``
    ``12345``, ``"12345"``                  ``("user_id", 12345)``
    ``-12345``                              ``("chat_id", 12345)``
    ``-10012345``                           ``("channel_id", 12345)``
    ``"me"``, ``"self"``                    ``("self", "me")``
    ======================================  =========================

    Message ids in links (``/123``) are ignored: the result names the peer. Usernames keep
    the case they were written in (Telegram compares them case-insensitively).

    Args:
        link_or_username: The text (or an int id).

    Returns:
        ``(kind, value)``; ``value`` is an int for the ``*_id`` kinds, else a string.

    Raises:
        JobFailed: INVALID_ARGUMENT if the input names no peer.
    """
    if isinstance(link_or_username, bool):
        raise _invalid(link_or_username, "not a username, link or id")
    if isinstance(link_or_username, int):
        return _parse_id(link_or_username)
    if not isinstance(link_or_username, str):
        raise _invalid(link_or_username, "not a username, link or id")
    text = link_or_username.strip()
    if not text or len(text) > MAX_LINK_CHARS:
        raise _invalid(link_or_username, "empty or too long")
    if text.lower() in ("me", "self"):
        return ("self", "me")
    if re.fullmatch(r"-?\d{1,20}", text, re.ASCII):
        return _parse_id(int(text))
    if re.fullmatch(r"\+\d{5,16}", text, re.ASCII):
        return ("phone", text[1:])
    if text.startswith("@"):
        return ("username", _username(text[1:], link_or_username))
    if text.lower().startswith("tg://"):
        return _parse_tg_url(text, link_or_username)
    lowered = text.lower()
    if "/" in text or any(lowered.startswith(h) for h in _TG_HOSTS) or lowered.startswith("www."):
        return _parse_url(text, link_or_username)
    return ("username", _username(text, link_or_username))


def _parse_id(value: int) -> tuple[LinkKind, int]:
    if 0 < value <= MAX_PEER_ID:
        return ("user_id", value)
    if value <= -_CHANNEL_ID_OFFSET:
        channel_id = -value - _CHANNEL_ID_OFFSET
        if 0 < channel_id <= MAX_PEER_ID:
            return ("channel_id", channel_id)
    elif value < 0:
        return ("chat_id", -value)
    raise _invalid(value, "not a valid peer id")


def _digits(text: str) -> bool:
    """ASCII decimal digits only (``str.isdigit`` also takes "²" and "٣")."""
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def _username(name: str, original: object) -> str:
    if not _USERNAME_RE.match(name):
        raise _invalid(original, "not a valid username")
    return name


def _parse_url(text: str, original: object) -> tuple[LinkKind, str | int]:
    if "://" not in text:
        text = "https://" + text
    try:
        url = urllib.parse.urlsplit(text)
    except ValueError:
        raise _invalid(original, "not a valid link") from None
    host = (url.hostname or "").lower().removeprefix("www.")
    if url.scheme.lower() not in ("http", "https"):
        raise _invalid(original, "not a t.me link")
    parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
    if host.endswith(".t.me") and host.count(".") == 2:  # https://durov.t.me
        return ("username", _username(host.split(".")[0], original))
    if host not in _TG_HOSTS:
        raise _invalid(original, "not a t.me link")
    if not parts:
        raise _invalid(original, "link names no peer")
    head = parts[0]
    if head.startswith("+"):
        rest = head[1:]
        if _digits(rest):
            return ("phone", rest)
        return ("invite", _invite(rest, original))
    lowered = head.lower()
    if lowered == "joinchat":
        if len(parts) < 2:
            raise _invalid(original, "invite link without hash")
        return ("invite", _invite(parts[1], original))
    if lowered == "c":
        if len(parts) < 2 or not _digits(parts[1]) or not 0 < int(parts[1]) <= MAX_PEER_ID:
            raise _invalid(original, "t.me/c/ link needs a channel id")
        return ("channel_id", int(parts[1]))
    if lowered == "s" and len(parts) >= 2:  # public channel preview, t.me/s/name
        return ("username", _username(parts[1], original))
    if lowered in _RESERVED_PATHS:
        raise _invalid(original, f"t.me/{head} links name no peer")
    return ("username", _username(head, original))


def _parse_tg_url(text: str, original: object) -> tuple[LinkKind, str | int]:
    url = urllib.parse.urlsplit(text)
    query = urllib.parse.parse_qs(url.query)
    action = (url.netloc or url.path.strip("/")).lower()
    if action == "resolve":
        if "domain" in query:
            return ("username", _username(query["domain"][0], original))
        if "phone" in query and _digits(query["phone"][0]):
            return ("phone", query["phone"][0])
    if action == "join" and "invite" in query:
        return ("invite", _invite(query["invite"][0], original))
    if action == "privatepost" and "channel" in query and _digits(query["channel"][0]):
        channel_id = int(query["channel"][0])
        if 0 < channel_id <= MAX_PEER_ID:
            return ("channel_id", channel_id)
    raise _invalid(original, "unsupported tg:// link")


def _invite(invite_hash: str, original: object) -> str:
    if not _INVITE_HASH_RE.match(invite_hash):
        raise _invalid(original, "not a valid invite hash")
    return invite_hash


# --- peer_summary ------------------------------------------------------------------------------


def _primary_username(entity: Any) -> str | None:
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
        username = _primary_username(entity)
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
        username = None if forbidden else _primary_username(entity)
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


def check_message_ids(ids: Sequence[int], *, argument: str = "ids") -> list[int]:
    """Validate the ids of a `get_messages` job, without a network (the pool calls it before
    it schedules the job).

    Args:
        ids: The message ids.
        argument: The job argument's name, for the message.

    Returns:
        The ids as a list, order kept.

    Raises:
        JobFailed: INVALID_ARGUMENT naming `argument` if `ids` is not a list, is empty, is
            longer than `MAX_MESSAGE_IDS`, or holds anything but ints 1..`MAX_MESSAGE_ID`
            (booleans are not ids).
    """
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise JobFailed(ErrorClass.INVALID_ARGUMENT, f"{argument} must be a list of message ids")
    out = list(ids)
    if not out:
        raise JobFailed(ErrorClass.INVALID_ARGUMENT, f"{argument} must not be empty")
    if len(out) > MAX_MESSAGE_IDS:
        raise JobFailed(
            ErrorClass.INVALID_ARGUMENT,
            f"{argument}: at most {MAX_MESSAGE_IDS} ids per job, got {len(out)}",
        )
    bad = [
        i
        for i in out
        if isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= MAX_MESSAGE_ID
    ]
    if bad:
        raise JobFailed(
            ErrorClass.INVALID_ARGUMENT,
            f"{argument}: message ids must be integers 1..{MAX_MESSAGE_ID}: "
            + ", ".join(repr(b)[:24] for b in bad[:5]),
        )
    return out


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
