"""Telegram's limits, as the loopback DC models them: per-method budgets, floods, slow mode.

Three kinds of limit, each answering the error Telegram answers, for the one thing Telegram
limits:

- **Budgets** (:class:`Limit`, ``[[limits]]`` in the world file, :meth:`Limits.add`): at most
  ``requests`` calls of one TL method per ``window_s`` seconds, per account (a sliding window).
  A call over budget is answered ``420 FLOOD_WAIT_X`` for that method only (other methods of
  the same account are served), X = whole seconds until the oldest call counted in the window
  leaves it (rounded up, at least 1); with several budgets on one method, the longest wait.
- **Floods** (:class:`Flood`, ``[[floods]]``, :meth:`Limits.flood`): one account flooded on one
  method until a given time — every call of it answered ``FLOOD_WAIT_X``, X = whole seconds
  left. The benchmark floods an account on ``contacts.ResolveUsername`` for 24 h this way.
- **Slow mode** (``Channel.slowmode_s``, :meth:`Limits.set_slowmode`): in a supergroup with
  slow mode, a user may send one message per ``slowmode_s`` seconds; an earlier send is
  answered ``420 SLOWMODE_WAIT_X`` (X = seconds until that user may send in that chat again).
  Other chats and other users are not affected.

Decision: **a refused call does not count** — not against a budget, not against slow mode —
so X always counts down to the same moment, "until the window frees", and asking again early
changes nothing. That is the contract clients build on: Telegram documents FLOOD_WAIT_X as
"wait X seconds" and Telethon's handling (sleep X, then retry once) only works if asking does
not extend X; SLOWMODE_WAIT_X likewise names the wait until the next allowed send. (Telegram
may punish sustained hammering with longer floods; the DC does not model that.)

Scripted faults (``dc.faults``) come first: a call a fault rule takes is neither counted nor
refused by the limits. Limits apply to logged-in accounts only (keys not logged in are never
limited).

Time is the DC's clock: ``trio.current_time()`` of the run serving it, so tests that run the
DC in-process may use trio's ``MockClock`` (``mock_clock.jump``) and cross a 24 h flood.
Every call still reaches ``dc.counters(user)`` (refused ones too: they were sent);
:meth:`Limits.refused` counts the refusals.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, Final, final

import attrs

#: The error code Telegram answers FLOOD_WAIT_X and SLOWMODE_WAIT_X with.
FLOOD_CODE: Final = 420


def _positive_number(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"'{attribute.name}' must be a number > 0: {value!r}")


def _at_least_one(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or value < 1:
        raise ValueError(f"'{attribute.name}' must be an integer >= 1: {value!r}")


@functools.cache
def _known_methods() -> dict[str, str]:
    """lower-case TL name -> Telethon's spelling, for every TL function Telethon knows."""
    from telethon.tl import TLRequest
    from telethon.tl.alltlobjects import tlobjects

    out: dict[str, str] = {}
    for cls in tlobjects.values():
        if isinstance(cls, type) and issubclass(cls, TLRequest):
            name = cls.__name__.removesuffix("Request")
            module = cls.__module__.removeprefix("telethon.tl.functions").lstrip(".")
            spelled = f"{module}.{name}" if module else name
            out[spelled.lower()] = spelled
    return out


def method_spelling(name: str) -> str:
    """Telethon's spelling of a TL function name, as ``dc.counters`` and ``dc.faults`` use it.

    Accepts Telegram's schema spelling (``contacts.resolveUsername``) and Telethon's
    (``contacts.ResolveUsername``), case-insensitively.

    Raises:
        ValueError: if no TL function has that name.
    """
    spelled = _known_methods().get(name.strip().lower()) if isinstance(name, str) else None
    if spelled is None:
        raise ValueError(f"not a TL function name: {name!r}")
    return spelled


def _method_converter(name: str) -> str:
    return method_spelling(name)


@attrs.frozen(kw_only=True)
class Limit:
    """A budget: at most ``requests`` calls of ``method`` per ``window_s`` seconds, per account.

    Attributes:
        method: TL function, Telethon's spelling (``contacts.ResolveUsername``; the schema's
            ``contacts.resolveUsername`` is accepted and normalised).
        requests: calls admitted per window, >= 1.
        window_s: the sliding window, seconds, > 0.
        user: the account it applies to (user id, or phone as a string); ``None``: every
            account, each counted on its own.

    Raises:
        ValueError: on an unknown method or a bad number.
    """

    method: str = attrs.field(converter=_method_converter)
    requests: int = attrs.field(validator=_at_least_one)
    window_s: float = attrs.field(validator=_positive_number)
    user: int | str | None = None


@attrs.frozen(kw_only=True)
class Flood:
    """One account flooded on one method for ``seconds`` from when the DC starts serving.

    Attributes:
        user: user id, or phone as a string.
        method: TL function (spellings as :class:`Limit`).
        seconds: how long, seconds, > 0 (``86400`` for a day).
    """

    user: int | str
    method: str = attrs.field(converter=_method_converter)
    seconds: float = attrs.field(validator=_positive_number)


def wait_seconds(seconds: float) -> int:
    """The X of ``FLOOD_WAIT_X`` for a wait of ``seconds``: rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


@final
class Limits:
    """The limits of one DC (``dc.limits``): budgets, floods, slow mode, and their refusals.

    Use from the DC's Trio thread. Built by the :class:`~mtpoold.testing.dc.DC` from its
    world (``limits``, ``floods``, ``Channel.slowmode_s``); everything is also settable on a
    running DC. See the module docstring for what is answered when.

    Args:
        resolve_user: user id, phone or ``User`` -> user id (raises ``KeyError``).
        resolve_channel: channel id, username or ``Channel`` -> channel id (raises ``KeyError``).
        clock: the DC's clock, seconds (``trio.current_time``).
    """

    def __init__(
        self,
        *,
        resolve_user: Callable[[Any], int],
        resolve_channel: Callable[[Any], int],
        clock: Callable[[], float],
    ) -> None:
        self._resolve_user = resolve_user
        self._resolve_channel = resolve_channel
        self._clock = clock
        # method -> [(limit, user id or None)]
        self._budgets: dict[str, list[tuple[Limit, int | None]]] = {}
        # (id(limit), user id) -> arrival times of the calls admitted in its window, ascending
        self._windows: dict[tuple[int, int], collections.deque[float]] = {}
        self._floods: dict[tuple[int, str], float] = {}  # (user, method) -> until (clock s)
        self._slowmode: dict[int, int] = {}  # channel id -> seconds
        self._last_send: dict[tuple[int, int], float] = {}  # (user, channel) -> clock s
        self._refused: dict[int, collections.Counter[str]] = {}

    # -- configuration ----------------------------------------------------------------------

    def add(self, method: str, requests: int, window_s: float, *, user: Any = None) -> Limit:
        """Add a budget: at most ``requests`` calls of ``method`` per ``window_s`` seconds.

        Args:
            method: TL function (``contacts.ResolveUsername`` or ``contacts.resolveUsername``).
            requests: calls per window, >= 1.
            window_s: sliding window, seconds, > 0.
            user: only this account (phone, id or ``User``); ``None``: every account, each
                counted on its own.

        Returns:
            The :class:`Limit` (pass it to :meth:`remove`).

        Raises:
            ValueError: on an unknown method or bad numbers.
            KeyError: if ``user`` is not in the world.
        """
        user_id = None if user is None else self._resolve_user(user)
        limit = Limit(method=method, requests=requests, window_s=window_s, user=user_id)
        self._budgets.setdefault(limit.method, []).append((limit, user_id))
        return limit

    def remove(self, limit: Limit) -> None:
        """Remove a budget added by :meth:`add` (or from the world); unknown ones are ignored."""
        entries = self._budgets.get(limit.method, [])
        self._budgets[limit.method] = [e for e in entries if e[0] is not limit]
        for key in [k for k in self._windows if k[0] == id(limit)]:
            del self._windows[key]

    def budgets(self) -> list[Limit]:
        """Every budget in force, in the order added."""
        return [limit for entries in self._budgets.values() for limit, _ in entries]

    def flood(self, user: Any, method: str, seconds: float) -> None:
        """Flood ``user`` on ``method`` for ``seconds`` from now (replacing an earlier flood).

        Raises:
            ValueError: on an unknown method or ``seconds`` <= 0.
            KeyError: if ``user`` is not in the world.
        """
        spelled = method_spelling(method)
        if isinstance(seconds, bool) or not seconds > 0 or not math.isfinite(seconds):
            raise ValueError(f"seconds must be a number > 0: {seconds!r}")
        self._floods[(self._resolve_user(user), spelled)] = self._clock() + seconds

    def unflood(self, user: Any, method: str | None = None) -> None:
        """End ``user``'s flood on ``method`` (``None``: on every method).

        Raises:
            KeyError: if ``user`` is not in the world.
        """
        user_id = self._resolve_user(user)
        spelled = None if method is None else method_spelling(method)
        for key in [k for k in self._floods if k[0] == user_id and spelled in (None, k[1])]:
            del self._floods[key]

    def flood_left(self, user: Any, method: str) -> float:
        """Seconds until ``user`` may call ``method`` again (0.0: now), floods and budgets.

        Raises:
            KeyError: if ``user`` is not in the world.
            ValueError: on an unknown method.
        """
        return self._wait(self._resolve_user(user), method_spelling(method), self._clock())

    def set_slowmode(self, channel: Any, seconds: int) -> None:
        """Set the slow mode of a supergroup: one message per ``seconds`` per user (0: off).

        Raises:
            KeyError: if ``channel`` (id, username or ``Channel``) is not in the world.
            ValueError: if ``seconds`` < 0.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
            raise ValueError(f"slow mode seconds must be an integer >= 0: {seconds!r}")
        self._slowmode[self._resolve_channel(channel)] = seconds

    def slowmode_s(self, channel_id: int) -> int:
        """The slow mode of channel ``channel_id``, seconds (0: none)."""
        return self._slowmode.get(channel_id, 0)

    def refused(self, user: Any) -> collections.Counter[str]:
        """Calls of ``user`` the limits refused, per method (FLOOD_WAIT and SLOWMODE_WAIT).

        Raises:
            KeyError: if ``user`` is not in the world.
        """
        return collections.Counter(self._refused.get(self._resolve_user(user), {}))

    def clear(self) -> None:
        """Remove every budget, flood and slow-mode send time (channels' slow modes stay)."""
        self._budgets.clear()
        self._windows.clear()
        self._floods.clear()
        self._last_send.clear()

    def load(
        self, limits: Iterable[Limit], floods: Iterable[Flood], slowmodes: dict[int, int]
    ) -> None:
        """Install a world's budgets, floods (from now) and slow modes (used by the DC)."""
        for limit in limits:
            user_id = None if limit.user is None else self._resolve_user(limit.user)
            self._budgets.setdefault(limit.method, []).append((limit, user_id))
        for flood in floods:
            self.flood(flood.user, flood.method, flood.seconds)
        self._slowmode.update(slowmodes)

    # -- the DC's side -----------------------------------------------------------------------

    def _window(self, limit: Limit, user_id: int, now: float) -> collections.deque[float]:
        key = (id(limit), user_id)
        times = self._windows.get(key)
        if times is None:
            times = self._windows[key] = collections.deque()
        horizon = now - limit.window_s
        while times and times[0] <= horizon:
            times.popleft()
        return times

    def _wait(self, user_id: int, method: str, now: float) -> float:
        wait = max(0.0, self._floods.get((user_id, method), now) - now)
        for limit, only in self._budgets.get(method, ()):
            if only is not None and only != user_id:
                continue
            times = self._window(limit, user_id, now)
            if len(times) >= limit.requests:
                wait = max(wait, times[len(times) - limit.requests] + limit.window_s - now)
        return wait

    def admit(self, user_id: int | None, method: str) -> str | None:
        """Check one call; ``None`` admits (and counts) it, else the error message to answer
        with code :data:`FLOOD_CODE` (``"FLOOD_WAIT_X"``). Used by the DC for every call."""
        if user_id is None or (not self._budgets and not self._floods):
            return None
        now = self._clock()
        wait = self._wait(user_id, method, now)
        if wait > 0:
            self._refuse(user_id, method)
            return f"FLOOD_WAIT_{wait_seconds(wait)}"
        for limit, only in self._budgets.get(method, ()):
            if only is None or only == user_id:
                self._window(limit, user_id, now).append(now)
        return None

    def admit_send(self, user_id: int, channel_id: int, method: str) -> str | None:
        """Check a send to a chat against its slow mode; ``None`` admits (and records) it, else
        ``"SLOWMODE_WAIT_X"`` (code :data:`FLOOD_CODE`). Called by send handlers."""
        slow = self._slowmode.get(channel_id, 0)
        now = self._clock()
        if slow > 0:
            last = self._last_send.get((user_id, channel_id))
            if last is not None and now < last + slow:
                self._refuse(user_id, method)
                return f"SLOWMODE_WAIT_{wait_seconds(last + slow - now)}"
        self._last_send[(user_id, channel_id)] = now
        return None

    def _refuse(self, user_id: int, method: str) -> None:
        counter = self._refused.get(user_id)
        if counter is None:
            counter = self._refused[user_id] = collections.Counter()
        counter[method] += 1

    def __repr__(self) -> str:
        return (
            f"<Limits {len(self.budgets())} budgets, {len(self._floods)} floods,"
            f" {sum(1 for s in self._slowmode.values() if s)} slow-mode chats>"
        )
