"""What users name peers and messages with, read without a network.

`parse_link` turns what users paste (``@name``, ``t.me`` links, invite links, phone numbers,
numeric ids) into a ``(kind, value)`` an account can look up; `peer_key` gives every peer
reference its one spelling shared by all accounts (routing, sharing, the peer memory);
`check_peer` and `check_message_ids` are the pool's checks before a `resolve` or
`get_messages` job takes an account; `shown_peer` is how errors show a peer (never a phone
number). Plain Python: no Telethon.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from typing import Final, Literal

from ._errors import ErrorClass, JobFailed

__all__ = [
    "LinkKind",
    "MAX_MESSAGE_ID",
    "MAX_MESSAGE_IDS",
    "MAX_PEER_ID",
    "MAX_PHONE_DIGITS",
    "check_message_ids",
    "check_peer",
    "is_phone",
    "parse_link",
    "peer_key",
    "shown_peer",
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
    # A long digit run in text that names no peer may still be someone's phone number.
    text = re.sub(r"\d{7,}", "<digits>", str(link), flags=re.ASCII)
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
    ``"+15551234567"``, ``"15551234567"``, ``"+1 (555) 123-4567"``, ``"t.me/+15551234567"``,
    ``"tg://resolve?phone=15551234567"``    ``("phone", "15551234567")``
    ``12345`` (an int), ``"tg://user?id=12345"``
                                            ``("user_id", 12345)``
    ``-12345``, ``"-12345"``                ``("chat_id", 12345)``
    ``-10012345``, ``"-10012345"``          ``("channel_id", 12345)``
    ``"me"``, ``"self"``                    ``("self", "me")``
    ======================================  =========================

    Strings are read the way Telethon reads them (``telethon.utils.parse_phone`` first, as
    ``TelegramClient.get_entity`` does): a string that is digits once ``+``, ``(``, ``)``,
    spaces and ``-`` are removed is a **phone number** — ``"12345"`` too; only an int is a
    user id. Three readings differ from Telethon's on purpose (docs/CONTRACTS.md, "Peer
    forms"): a string starting with ``-`` and then digits only is a marked chat/channel id
    (Telethon strips the ``-`` and takes a phone), ``t.me/+<digits>`` is a phone link as
    Telegram's link spec says (Telethon takes an invite hash; ``t.me/@name`` too, which is
    a username here), and the ``tg://`` links
    (``resolve?domain=`` / ``resolve?phone=`` / ``user?id=`` / ``join?invite=`` /
    ``privatepost?channel=``) are read as Telegram documents them (Telethon reads only
    ``tg://join``). Message ids in links (``/123``) are ignored: the result names the peer.
    Usernames keep the case they were written in (Telegram compares them
    case-insensitively).

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
    if re.fullmatch(r"-\d{1,20}", text, re.ASCII):
        return _parse_id(int(text))
    phone = _phone(text)
    if phone is not None:
        return ("phone", _e164(phone, link_or_username))
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


#: What Telethon's ``utils.parse_phone`` removes before it checks for digits.
_PHONE_SEPARATORS_RE: Final = re.compile(r"[+()\s-]")


def _phone(text: str) -> str | None:
    """The digits of a phone number written as Telethon's ``parse_phone`` accepts it
    (``+``, parentheses, spaces and ``-`` removed; ASCII digits only), else None."""
    digits = _PHONE_SEPARATORS_RE.sub("", text)
    if digits and digits.isascii() and digits.isdigit():
        return digits
    return None


#: ITU-T E.164: a phone number is at most 15 digits, country code first (never 0).
MAX_PHONE_DIGITS: Final = 15


def _e164(digits: str, original: object) -> str:
    if digits[0] == "0" or len(digits) > MAX_PHONE_DIGITS:
        raise _invalid(
            original,
            f"not a phone number in international format (country code first, at most"
            f" {MAX_PHONE_DIGITS} digits; a user id must be given as a number, not a string)",
        )
    return digits


def is_phone(peer: object) -> bool:
    """Whether `parse_link` reads ``peer`` as a phone number (personal data: never put it in
    a log line, an error, a status or a key; see `shown_peer`). Never raises."""
    try:
        return parse_link(peer)[0] == "phone"  # type: ignore[arg-type]
    except JobFailed:
        return False


def shown_peer(peer: object) -> str:
    """``peer`` as an error message or log line may show it: ``"<phone number>"`` for a
    phone number (personal data), else the text itself (the caller redacts and quotes)."""
    return "<phone number>" if is_phone(peer) else str(peer)


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
            return ("phone", _e164(rest, original))
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
    return ("username", _username(head.removeprefix("@"), original))  # t.me/@name: Telethon


def _parse_tg_url(text: str, original: object) -> tuple[LinkKind, str | int]:
    url = urllib.parse.urlsplit(text)
    query = urllib.parse.parse_qs(url.query)
    action = (url.netloc or url.path.strip("/")).lower()
    if action == "resolve":
        if "domain" in query:
            return ("username", _username(query["domain"][0], original))
        if "phone" in query and _digits(query["phone"][0]):
            return ("phone", _e164(query["phone"][0], original))
    if action == "user" and "id" in query and _digits(query["id"][0]):
        user_id = int(query["id"][0])
        if 0 < user_id <= MAX_PEER_ID:
            return ("user_id", user_id)
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


# --- check_message_ids --------------------------------------------------------------------------


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
