"""Rate classes: TL functions Telegram limits together, and their request budgets.

Plain Python (part of the scheduling core, no Telethon). Telegram floods *per method* — a
``FLOOD_WAIT_X`` answer "is required (caused by ResolveUsernameRequest)" and the same account
still gets ``channels.getMessages`` served — so a flood cools one (account, rate class), not
the account (`mtpoold._dispatch.Dispatcher.cool_down_class`). A rate class groups the functions
whose limits go together; each may carry budget windows (at most N requests per window, per
account), counted where requests go on the wire (`mtpoold._budget.RequestGuard`).

Sources of the shipped defaults (Telegram publishes no limits for user accounts; the error
reference only says a 420 FLOOD is "the maximum allowed number of attempts to invoke the given
method with the given input parameters", https://core.telegram.org/api/errors#420-flood):

- ``resolve`` 50 per hour, 200 per day: the figures issue 12 asks for ("resolve: 50 per hour,
  200 per day"), below what pools report as the point where ResolveUsername floods of many
  hours start: axisrow/tg_content_factory issues #551/#790 and PR #647 (a fresh session firing
  160+ resolveUsername calls in seconds escalated 3 s -> 26 s -> 66,230 s; their limiter caps
  30 per 60 s), the same incidents as PyPI ``telethon-floodgate``; #1368 reports 53,123 s.
- ``join`` 20 per hour, 50 per day: ``telethon-floodgate``'s "channel_lifecycle" bucket (3 per
  5 min, i.e. 36 per hour) rounded down, and Telegram's own cap of 500 channels per account
  and 50 created per day (limits.tginfo.me).
- ``send`` 30 per minute: ``telethon-floodgate``'s "send" bucket (30 per min); Telegram's
  bot FAQ (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this)
  asks for at most about one message per second per chat and 20 per minute per group.
- ``read``, ``full_info``, ``other``: no budget (flood scopes only). Tests and benchmarks run
  hundreds of reads on fresh accounts; Telegram's read limits are far higher.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, Protocol, final

import attrs

__all__ = [
    "DEFAULT_RATE_CLASSES",
    "EXEMPT_FUNCTIONS",
    "FULL_INFO",
    "JOIN",
    "OTHER",
    "READ",
    "RESOLVE",
    "SEND",
    "RateClass",
    "RateClassTable",
    "RateClasses",
    "normalize_tl_name",
    "rate_class_of",
]

RESOLVE: Final = "resolve"
READ: Final = "read"
FULL_INFO: Final = "full_info"
JOIN: Final = "join"
SEND: Final = "send"
OTHER: Final = "other"

#: Budget window names in the config and their lengths, seconds.
WINDOWS: Final[Mapping[str, float]] = {"per_minute": 60.0, "per_hour": 3600.0, "per_day": 86400.0}

#: Requests that are never guarded (no class, no budget): the keepalive ping is the pool's
#: own traffic, and a ping refused would drop a healthy connection.
EXEMPT_FUNCTIONS: Final = frozenset({"ping", "pingdelaydisconnect"})


@attrs.frozen
class RateClass:
    """One rate class.

    Attributes:
        name: The class name (``resolve``, ``read``, ...).
        functions: Normalized TL names (`normalize_tl_name`) in the class.
        windows: Budget windows ``(window_s, limit)``, seconds and requests per account; empty:
            no budget.
    """

    name: str
    functions: frozenset[str]
    windows: tuple[tuple[float, int], ...] = ()


def _fns(*names: str) -> frozenset[str]:
    return frozenset(normalize_tl_name(n) for n in names)


def normalize_tl_name(name: str) -> str:
    """The one spelling of a TL function name the tables use: ``namespace.method``, lower case,
    without Telethon's ``Request`` suffix.

    Accepts what ``invoke`` accepts (``contacts.ResolveUsername``, ``contacts.resolveUsername``,
    ``contacts.ResolveUsernameRequest``) and Telethon's bare class name
    (``ResolveUsernameRequest``, answered by `RateClasses.class_of` through its bare index).
    """
    text = name.strip().lower()
    if text.endswith("request") and text not in ("messages.hidechatjoinrequest",):
        text = text[: -len("request")]
    return text


#: Shipped rate classes (sources in the module docstring). Every function not named here is
#: ``other``.
DEFAULT_RATE_CLASSES: Final[Mapping[str, RateClass]] = {
    RESOLVE: RateClass(
        RESOLVE,
        _fns(
            "contacts.resolveUsername",
            "contacts.resolvePhone",
            "messages.checkChatInvite",
            "contacts.search",
        ),
        ((3600.0, 50), (86400.0, 200)),
    ),
    READ: RateClass(
        READ,
        _fns(
            "channels.getMessages",
            "messages.getMessages",
            "messages.getHistory",
            "messages.search",
            "messages.getReplies",
            "messages.getMessagesViews",
            "channels.getChannels",
            "messages.getChats",
            "users.getUsers",
        ),
    ),
    FULL_INFO: RateClass(
        FULL_INFO,
        _fns("channels.getFullChannel", "users.getFullUser", "messages.getFullChat"),
    ),
    JOIN: RateClass(
        JOIN,
        _fns("channels.joinChannel", "messages.importChatInvite", "channels.leaveChannel"),
        ((3600.0, 20), (86400.0, 50)),
    ),
    SEND: RateClass(
        SEND,
        _fns(
            "messages.sendMessage",
            "messages.sendMedia",
            "messages.sendMultiMedia",
            "messages.forwardMessages",
            "messages.sendReaction",
        ),
        ((60.0, 30),),
    ),
    OTHER: RateClass(OTHER, frozenset()),
}


class RateClassTable(Protocol):
    """What a config table ``[rate_classes.NAME]`` says (`mtpoold._config.RateClassConfig`):
    ``functions`` moved into the class, budget limits per window (None: keep the shipped
    one; 0: no limit in that window)."""

    @property
    def name(self) -> str: ...
    @property
    def functions(self) -> tuple[str, ...]: ...
    @property
    def per_minute(self) -> int | None: ...
    @property
    def per_hour(self) -> int | None: ...
    @property
    def per_day(self) -> int | None: ...


@final
class RateClasses:
    """The table in force: TL function -> rate class, and each class's budget windows.

    Built from `DEFAULT_RATE_CLASSES` and the config's ``[rate_classes.NAME]`` tables
    (`from_overrides`). Look-ups are O(1).
    """

    def __init__(self, classes: Mapping[str, RateClass]) -> None:
        self.classes: dict[str, RateClass] = dict(classes)
        self.classes.setdefault(OTHER, RateClass(OTHER, frozenset()))
        self._by_name: dict[str, str] = {}
        bare: dict[str, set[str]] = {}
        for rc in self.classes.values():
            for fn in rc.functions:
                self._by_name[fn] = rc.name
                bare.setdefault(fn.rpartition(".")[2], set()).add(rc.name)
        # a bare method name (Telethon's class name has no namespace) names its class when
        # every function of that name is in the same one (messages./channels.getMessages)
        self._by_bare = {m: next(iter(cs)) for m, cs in bare.items() if len(cs) == 1}

    @classmethod
    def from_overrides(cls, overrides: Iterable[RateClassTable]) -> RateClasses:
        """The shipped classes with the config's tables applied, in order.

        A table for a shipped class changes the windows it names (0 turns a window off) and
        moves the functions it lists into the class; a table for a new class creates it.
        """
        classes = dict(DEFAULT_RATE_CLASSES)
        for o in overrides:
            moved = _fns(*o.functions)
            for name, rc in list(classes.items()):
                if rc.functions & moved:
                    classes[name] = attrs.evolve(rc, functions=rc.functions - moved)
            base = classes.get(o.name, RateClass(o.name, frozenset()))
            windows = dict(base.windows)
            for window_name, window_s in WINDOWS.items():
                limit = getattr(o, window_name)
                if limit is None:
                    continue
                if limit == 0:
                    windows.pop(window_s, None)
                else:
                    windows[window_s] = limit
            classes[o.name] = RateClass(
                o.name, base.functions | moved, tuple(sorted(windows.items()))
            )
        return cls(classes)

    def class_of(self, tl_name: str) -> str | None:
        """The rate class of a TL function (any spelling `normalize_tl_name` accepts);
        ``other`` when no class names it; None for `EXEMPT_FUNCTIONS` (never guarded)."""
        key = normalize_tl_name(tl_name)
        found = self._by_name.get(key)
        if found is not None:
            return found
        method = key.rpartition(".")[2]
        if method in EXEMPT_FUNCTIONS:
            return None
        if "." not in key:
            return self._by_bare.get(method, OTHER)
        return OTHER

    def windows(self, rate_class: str) -> tuple[tuple[float, int], ...]:
        """The budget windows of a class, ``((window_s, limit), ...)``; empty: none."""
        rc = self.classes.get(rate_class)
        return rc.windows if rc is not None else ()

    def job_classes(self, method: str) -> frozenset[str]:
        """The classes a job's own calls need on any account: ``resolve`` jobs ``resolve`` and
        ``full_info`` (a look-up, then the full info for the counts), ``get_messages`` jobs
        ``read``, ``invoke`` jobs their function's class (none for exempt functions)."""
        if method == "resolve":
            return frozenset({RESOLVE, FULL_INFO})
        if method == "get_messages":
            return frozenset({READ})
        found = self.class_of(method)
        return frozenset() if found is None else frozenset({found})


_DEFAULT_TABLE: Final = RateClasses(DEFAULT_RATE_CLASSES)


def rate_class_of(tl_name: str) -> str | None:
    """The shipped rate class of a TL function: ``"contacts.ResolveUsername"``,
    ``"contacts.resolveUsername"`` and ``"ResolveUsernameRequest"`` all give ``"resolve"``;
    unknown functions ``"other"``; the keepalive ping None (never guarded)."""
    return _DEFAULT_TABLE.class_of(tl_name)
