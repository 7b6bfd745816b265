"""Request budgets per (account, rate class), and the request guard every request passes.

Plain Python (scheduling core). The guard (`RequestGuard.admit`) is what the client calls before
each TL request goes on the wire: it refuses (`RateClassBlocked`, nothing sent) a request whose
(account, rate class) is cooling down after a FLOOD_WAIT or whose budget window is spent, and
otherwise counts it. Counting there — not per job — is what makes a ``resolve`` (two requests)
cost two, and a ``get_messages`` whose peer the account already knows cost no look-up.

Spends are kept as UNIX times (s) so they survive a restart (the pool writes them to the state
store); a window counts the spends of the last ``window_s`` seconds (sliding).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
from collections.abc import Callable, Collection, Iterable
from typing import final

from ._errors import RateClassBlocked
from ._rateclass import RateClasses

__all__ = ["BudgetBook", "RequestGuard", "WarmUp"]


@final
class WarmUp:
    """The warm-up ramp: an account new to the pool gets a fraction of each budget, growing
    linearly from ``start`` to 1 over ``days`` from when the pool first saw it.

    Why: pools report that fresh sessions flood far sooner than aged ones (a fresh session's
    burst of 160 resolves escalated to a 66,230 s flood, axisrow/tg_content_factory #551).
    """

    def __init__(self, days: float, start: float) -> None:
        self.period_s = max(0.0, days) * 86400.0
        self.start = min(1.0, max(0.0, start))

    def scale(self, age_s: float) -> float:
        """The fraction of its budgets an account ``age_s`` seconds in the pool gets, 0..1."""
        if self.period_s <= 0 or age_s >= self.period_s:
            return 1.0
        return self.start + (1.0 - self.start) * max(0.0, age_s) / self.period_s


@final
class BudgetBook:
    """Spends per (account, rate class) and what is left in each window.

    Args:
        classes: The rate classes in force (their windows).
        warmup: The warm-up ramp.

    Costs: a check or a spend is O(windows + spends that aged out); memory O(spends within
    the longest window), only for classes with a budget.
    """

    def __init__(self, classes: RateClasses, warmup: WarmUp) -> None:
        self.classes = classes
        self.warmup = warmup
        self._spent: dict[tuple[str, str], collections.deque[float]] = {}
        #: UNIX time (s) each account was first seen by the pool (persisted by the pool).
        self.first_seen: dict[str, float] = {}
        #: Spends not yet written to the state store: ``(account, class, UNIX s)``.
        self.unsaved: list[tuple[str, str, float]] = []
        self._budgeted = [name for name in classes.classes if classes.windows(name)]

    def _longest(self, rate_class: str) -> float:
        windows = self.classes.windows(rate_class)
        return max((w for w, _ in windows), default=0.0)

    def _prune(self, key: tuple[str, str], now_unix: float) -> collections.deque[float]:
        """The spends of ``key`` inside its longest window; an account that never spent gets
        an empty deque not kept in the book (a look-up must not grow it: `spenders` and the
        statistics walk what it keeps)."""
        spends = self._spent.get(key)
        if spends is None:
            return collections.deque()
        horizon = now_unix - self._longest(key[1])
        while spends and spends[0] <= horizon:
            spends.popleft()
        return spends

    def limits(self, account: str, rate_class: str, now_unix: float) -> list[tuple[float, int]]:
        """The account's windows for the class, ``[(window_s, limit)]``, warm-up applied (a
        limit never drops below 1)."""
        first = self.first_seen.get(account, now_unix)
        scale = self.warmup.scale(now_unix - first)
        return [
            (w, max(1, math.floor(limit * scale))) for w, limit in self.classes.windows(rate_class)
        ]

    def free_at_unix(self, account: str, rate_class: str, now_unix: float) -> float:
        """When (UNIX s) one more request of the class fits every window: ``now_unix`` (or
        earlier) if it fits now."""
        windows = self.limits(account, rate_class, now_unix)
        if not windows:
            return now_unix
        spends = self._prune((account, rate_class), now_unix)
        free_unix = now_unix
        for window_s, limit in windows:
            inside = [t for t in spends if t > now_unix - window_s]
            if len(inside) >= limit:
                free_unix = max(free_unix, inside[len(inside) - limit] + window_s)
        return free_unix

    def left(self, account: str, rate_class: str, now_unix: float) -> dict[float, int]:
        """Requests left per window (``{window_s: n}``); empty when the class has no budget."""
        spends = self._prune((account, rate_class), now_unix)
        return {
            w: max(0, limit - sum(1 for t in spends if t > now_unix - w))
            for w, limit in self.limits(account, rate_class, now_unix)
        }

    def spend(self, account: str, rate_class: str, now_unix: float) -> None:
        """Count one request of the class (only classes with a budget are kept)."""
        if not self.classes.windows(rate_class):
            return
        self._prune((account, rate_class), now_unix)
        self._spent.setdefault((account, rate_class), collections.deque()).append(now_unix)
        self.unsaved.append((account, rate_class, now_unix))

    def restore(self, spends: Iterable[tuple[str, str, float]], now_unix: float) -> None:
        """Load spends read from the state store (older than a window are dropped)."""
        for account, rate_class, at in sorted(spends, key=lambda s: s[2]):
            if at > now_unix - self._longest(rate_class):
                self._spent.setdefault((account, rate_class), collections.deque()).append(at)

    def take_unsaved(self) -> list[tuple[str, str, float]]:
        """The spends not yet persisted; the caller writes them."""
        out, self.unsaved = self.unsaved, []
        return out

    def adopt(self, old: BudgetBook) -> None:
        """Take over another book's spends and first-seen times (a reload changed limits)."""
        self.first_seen = old.first_seen
        self._spent = old._spent
        self.unsaved = old.unsaved + self.unsaved

    def forget(self, account: str) -> None:
        """Drop an account's spends and first-seen time (it was forgotten)."""
        self.first_seen.pop(account, None)
        for key in [k for k in self._spent if k[0] == account]:
            del self._spent[key]
        self.unsaved = [u for u in self.unsaved if u[0] != account]

    def spent_in_window(self, account: str, rate_class: str, now_unix: float) -> bool:
        """Whether the account has spends of the class inside its longest window."""
        if not self.classes.windows(rate_class) or (account, rate_class) not in self._spent:
            return False
        return bool(self._prune((account, rate_class), now_unix))

    def spenders(self, rate_class: str, now_unix: float) -> list[str]:
        """The accounts with spends of the class inside its longest window (O(accounts that
        ever spent a budgeted class), not O(accounts))."""
        return [
            account
            for (account, cls), spends in list(self._spent.items())
            if cls == rate_class and spends and self._prune((account, cls), now_unix)
        ]

    def budgeted(self) -> list[str]:
        """The classes that have a budget."""
        return self._budgeted

    def summed_limits(
        self, accounts: Collection[str], now_unix: float
    ) -> dict[tuple[str, float], int]:
        """Every budgeted ``(class, window_s)``: the sum over ``accounts`` of `limits` at
        ``now_unix`` (UNIX s), warm-up applied — exactly what summing `limits` account by
        account gives.

        Costs: the accounts' first-seen times read once; when the oldest and the newest have
        different limits, one sort of them, then per window O(distinct limits x log
        accounts): a limit only falls as the first-seen time grows (a younger account has a
        smaller warm-up scale), so the accounts that share a limit are one run of the sorted
        times, found by bisection. At 100,000 accounts the per-account sum was most of
        ``statistics(accounts=False)`` (bench/scale.py).
        """
        out: dict[tuple[str, float], int] = {}
        if not self._budgeted:
            return out
        # an account the book has not seen yet counts as first seen now (as `limits` does)
        firsts = list(map(self.first_seen.get, accounts, itertools.repeat(now_unix)))
        scale = self.warmup.scale
        n = len(firsts)
        oldest, newest = (min(firsts), max(firsts)) if firsts else (now_unix, now_unix)
        is_sorted = False
        for rate_class in self._budgeted:
            for window_s, base in self.classes.windows(rate_class):

                def neg_limit(first: float, base: int = base) -> int:
                    return -max(1, math.floor(base * scale(now_unix - first)))

                if neg_limit(oldest) == neg_limit(newest):  # one limit for all (monotone)
                    out[(rate_class, window_s)] = -neg_limit(oldest) * n
                    continue
                if not is_sorted:
                    firsts.sort()
                    is_sorted = True
                total, i = 0, 0
                while i < n:
                    limit = neg_limit(firsts[i])  # the run of accounts with this limit
                    j = bisect.bisect_right(firsts, limit, lo=i, key=neg_limit)
                    total += -limit * (j - i)
                    i = j
                out[(rate_class, window_s)] = total
        return out


@final
class RequestGuard:
    """One account's guard, handed to its client (`mtpoold._account.SupportsRequestGuard`).

    Args:
        account: The account id.
        classes: The rate classes in force.
        flood_until_at: ``(account, class) -> trio clock s``: the class's FLOOD_WAIT cooldown end
            (`mtpoold._dispatch.Dispatcher.class_flood_until_at`).
        clock: The trio clock, seconds.
        wall_clock: UNIX time, seconds (budgets are kept in it).
        book: The budget book, or None (``[economy] budgets = false``).
        on_spent: Told after each counted request (the pool notes the account for saving).
    """

    def __init__(
        self,
        account: str,
        classes: RateClasses,
        flood_until_at: Callable[[str, str], float],
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        book: BudgetBook | None,
        on_spent: Callable[[str], None] | None = None,
    ) -> None:
        self.account = account
        self.classes = classes
        self._flood_until_at = flood_until_at
        self._clock = clock
        self._wall = wall_clock
        self.book = book
        self._on_spent = on_spent

    def admit(self, tl_name: str) -> None:
        """Let one request of TL function ``tl_name`` go on the wire, or refuse it.

        Raises:
            RateClassBlocked: the (account, class) is cooling down (``reason="flood"``) or a
                budget window is spent (``reason="budget"``); nothing was counted.
        """
        rate_class = self.classes.class_of(tl_name)
        if rate_class is None:
            return  # exempt (the keepalive ping)
        now = self._clock()
        until_at = self._flood_until_at(self.account, rate_class)
        if until_at > now:
            raise RateClassBlocked(self.account, rate_class, tl_name, until_at - now, "flood")
        if self.book is None or not self.classes.windows(rate_class):
            return  # no budget: nothing to count
        now_unix = self._wall()
        free_unix = self.book.free_at_unix(self.account, rate_class, now_unix)
        if free_unix > now_unix:
            raise RateClassBlocked(
                self.account, rate_class, tl_name, free_unix - now_unix, "budget"
            )
        self.book.spend(self.account, rate_class, now_unix)
        if self._on_spent is not None:
            self._on_spent(self.account)
