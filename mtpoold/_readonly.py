"""The read-only list: TL functions that never change anything on Telegram, so their answers may
be shared between jobs in flight and cached (`mtpoold._share`). Plain data, part of the core.

Rule: a function is on the list only if calling it twice, or once for two jobs, leaves Telegram
(and the account, and the other side of the chat) exactly as calling it once would — no read
marks, no view counts, no joins, no bot seeing a query, no single-use answer (a fresh SRP salt,
an ad impression), no update state moved. Only what is named here is ever shared or cached:
everything else — every function added to Telegram's schema later included — runs once per
job. `tests/test_share.py` checks the list against every TL function Telethon knows.

Sources: Telegram's method pages (core.telegram.org/method/<name>: "Returns …", "Get …" and
what each says it marks or counts), read against what the function's answer is for; the
``resolve`` and ``get_messages`` jobs make only functions on the list (contacts.resolveUsername,
channels.getFullChannel / users.getFullUser / messages.getFullChat, channels.getMessages,
messages.getMessages, users.getUsers, messages.getChats).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "NOT_READ_ONLY",
    "READ_ONLY",
    "READ_ONLY_JOBS",
    "READ_ONLY_UNLESS",
    "is_read_only",
    "tl_key",
]

#: The pool's own job kinds that only read: ``resolve`` (contacts.resolveUsername and a
#: getFull* of the peer) and ``get_messages`` (channels.getMessages, or users.getUsers /
#: messages.getChats + messages.getMessages).
READ_ONLY_JOBS: Final = frozenset({"resolve", "get_messages"})

_LOOK_UP = "looks a peer up; nothing is marked, joined or counted"
_READ_CHAT = "reads messages of a chat; marks nothing read (messages.readHistory does that)"
_INFO = "returns public information; changes nothing"
_SERVER = "returns server configuration; changes nothing"

#: TL function (``tl_key`` spelling: lower case, no ``Request``) -> why it is read-only.
READ_ONLY: Final[Mapping[str, str]] = {
    # peers
    "contacts.resolveusername": _LOOK_UP,
    "contacts.search": "searches public peers by name; changes nothing",
    "users.getusers": _LOOK_UP,
    "users.getfulluser": _LOOK_UP,
    "channels.getchannels": _LOOK_UP,
    "channels.getfullchannel": _LOOK_UP,
    "messages.getchats": _LOOK_UP,
    "messages.getfullchat": _LOOK_UP,
    "messages.checkchatinvite": "shows what an invite leads to; joining is"
    " messages.importChatInvite",
    "photos.getuserphotos": _INFO,
    "channels.getparticipants": "lists members; changes nothing",
    "channels.getparticipant": "one member's status; changes nothing",
    # messages
    "channels.getmessages": _READ_CHAT,
    "messages.getmessages": _READ_CHAT,
    "messages.gethistory": _READ_CHAT,
    "messages.getreplies": _READ_CHAT,
    "messages.getdiscussionmessage": _READ_CHAT,
    "messages.search": _READ_CHAT,
    "messages.searchglobal": _READ_CHAT,
    "messages.getsearchcounters": _READ_CHAT,
    "messages.getmessagesreactions": "reaction counts of messages; changes nothing",
    "messages.getmessagereactionslist": "who reacted; changes nothing",
    "messages.getpollresults": "poll results; voting is messages.sendVote",
    "messages.getpollvotes": "poll voters; changes nothing",
    "messages.getwebpage": _INFO,
    "messages.getstickerset": _INFO,
    "stats.getbroadcaststats": "channel statistics (admins); changes nothing",
    "stats.getmegagroupstats": "group statistics (admins); changes nothing",
    "stats.getmessagestats": "message statistics (admins); changes nothing",
    "stories.getpeerstories": "lists stories; viewing is stories.readStories /"
    " stories.incrementStoryViews",
    "stories.getstoriesbyid": "lists stories; viewing is stories.readStories",
    "stories.getpinnedstories": "lists stories; changes nothing",
    # the account's own lists (read only)
    "messages.getdialogs": "lists the account's chats; changes nothing",
    "messages.getpeerdialogs": "the account's dialog with peers; changes nothing",
    "contacts.getcontacts": "lists the account's contacts; changes nothing",
    # server configuration
    "help.getconfig": _SERVER,
    "help.getnearestdc": _SERVER,
    "help.getappconfig": _SERVER,
    "help.getcountrieslist": _SERVER,
    "help.getcdnconfig": _SERVER,
    "langpack.getlanguages": _SERVER,
}

#: Read-only only while an argument is false or absent: TL function -> (argument, why).
READ_ONLY_UNLESS: Final[Mapping[str, tuple[str, str]]] = {
    "messages.getmessagesviews": (
        "increment",
        "with increment=true it counts a view of each message (Telegram: 'Whether to mark the"
        " message as viewed and increment the view counter')",
    ),
}

#: Functions that look like reads and are not, with why: kept off the list on purpose (the
#: test checks that none of them is shareable). Not exhaustive: what is not on `READ_ONLY` is
#: not read-only, named here or not.
NOT_READ_ONLY: Final[Mapping[str, str]] = {
    "messages.readhistory": "marks a chat read",
    "channels.readhistory": "marks a channel read",
    "messages.readmentions": "marks mentions read",
    "messages.readreactions": "marks reactions read",
    "messages.readmessagecontents": "marks media as opened",
    "stories.readstories": "marks stories seen",
    "stories.incrementstoryviews": "counts story views",
    "messages.getbotcallbackanswer": "presses an inline button: the bot acts on it",
    "messages.getinlinebotresults": "sends the query to the bot",
    "messages.getsponsoredmessages": "serves ads: impressions are counted, answers single-use",
    "messages.getextendedmedia": "refreshes paid media, may send updates",
    "account.getpassword": "returns fresh SRP parameters each call (single use)",
    "account.gettmppassword": "creates a temporary password",
    "updates.getdifference": "moves the session's update state",
    "updates.getchanneldifference": "moves the session's update state",
    "updates.getstate": "part of the session's update state handling",
    "upload.getfile": "file bytes: large, DC-bound (FILE_MIGRATE), not worth a cache",
    "contacts.resolvephone": "read-only, but keys would hold phone numbers (personal data)",
    "channels.joinchannel": "joins",
    "messages.importchatinvite": "joins",
    "payments.getpaymentform": "opens a payment form",
}


#: Spellings of TL function names remembered by `tl_key` and `_entry` (pure functions asked
#: once or twice per job, for names `invoke` already checked against the schema).
_NAMES_CACHED: Final = 1024


@functools.lru_cache(maxsize=_NAMES_CACHED)
def tl_key(name: str) -> str:
    """The one spelling of a TL function name the read-only list uses.

    ``contacts.ResolveUsername``, ``contacts.resolveUsername`` and Telethon's
    ``contacts.ResolveUsernameRequest`` (also ``functions.contacts.…``) all give
    ``"contacts.resolveusername"``: namespace and name lower-cased, a trailing ``request``
    kept (see `is_read_only`, which tries the name with and without it, as
    `mtpoold._tljson.function_by_name` does). Remembered for the last `_NAMES_CACHED` names.
    """
    text = name.strip()
    for prefix in ("functions.", "tl."):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    return text.lower()


@functools.lru_cache(maxsize=_NAMES_CACHED)
def _entry(method: str) -> str | None:
    """The read-only list's key for ``method``, or None if it is on neither list (the lists
    are constants: remembered for the last `_NAMES_CACHED` names)."""
    key = tl_key(method)
    for candidate in (key, key.removesuffix("request")):
        if candidate in READ_ONLY or candidate in READ_ONLY_UNLESS:
            return candidate
    return None


def is_read_only(method: str, args: Mapping[str, Any] | None = None) -> bool:
    """Whether a call of ``method`` with ``args`` never changes anything on Telegram.

    Args:
        method: A TL function name as `mtpoold.Pool.invoke` takes it, or one of
            `READ_ONLY_JOBS`.
        args: Its JSON arguments (for `READ_ONLY_UNLESS`); None: none.

    Returns:
        True only for `READ_ONLY_JOBS`, functions on `READ_ONLY`, and functions on
        `READ_ONLY_UNLESS` whose argument is false or absent. Never raises.
    """
    if not isinstance(method, str):
        return False
    if method in READ_ONLY_JOBS:
        return True
    entry = _entry(method)
    if entry is None:
        return False
    if entry in READ_ONLY_UNLESS:
        argument, _ = READ_ONLY_UNLESS[entry]
        value = (args or {}).get(argument)
        return value is None or value is False
    return True
