"""Cluster mode: how late after its Redis slot a start may still go, chosen from this node's
own wake-up lateness.

A start reserved in Redis (`mtpoold._clustergate.SharedGate`) asks for a *window*: it will
go no later than ``window`` after the earliest instant its slot can have been, and Redis
hands the next caller, from any node, a slot at least ``interval + window`` after ours, so
two real starts through one proxy are never closer than ``interval``. A start found later
than its window (a busy core, a GC pause, a frozen process) is not made and another slot is
reserved (`mtpoold._lane.ProxyLane._shared_slot`): the whole slot is lost.

So the window trades two costs of a saturated proxy, per start: the window itself, always
paid, and a lost ``interval + window`` slot for each start later than it. With ``p(w)`` the
chance that a start is later than ``w``, a saturated proxy makes one start per
``(interval + w) / (1 - p(w))`` seconds; `StartWindow` picks the ``w`` that minimises that
(`ProxyLane._shared_slot` reports each wake-up's lateness). ``p`` comes from this node's last
`SAMPLES` wake-ups: a new wake-up is later than the one with k of them above it with chance
``(k + 1) / (n + 1)`` (order statistics, nothing assumed of the distribution), and past the
largest the chance falls off as an exponential whose scale is fitted to the top `TAIL_SHARE`
(their mean excess). The fitted tail matters: the largest of n wake-ups is exceeded by one
start in ``n + 1``, and at a 2 s interval each such miss costs 2 s, so a window set at the
largest lateness seen would lose more to misses than it saves. A node whose wake-ups are
prompt asks for a few milliseconds; one with a long tail for what the tail needs, up to
`CEILING_S`. The figures of a run are in ``bench/RESULTS.md`` ("cluster").
"""

from __future__ import annotations

import bisect
import collections
import math
from typing import Final, final

__all__ = [
    "CEILING_S",
    "DEFAULT_S",
    "FLOOR_S",
    "MIN_SAMPLES",
    "SAMPLES",
    "TAIL_SHARE",
    "StartWindow",
]

#: Wake-ups a window is chosen from (the most recent ones).
SAMPLES: Final = 512
#: Wake-ups needed before the window is chosen from them; until then it is `DEFAULT_S`.
MIN_SAMPLES: Final = 16
#: Seconds of window before `MIN_SAMPLES` wake-ups are known: wide enough for a loaded
#: host's usual tail (bench/RESULTS.md "cluster"), 0.5 % of a 2 s interval.
DEFAULT_S: Final = 0.010
#: The narrowest window, seconds: Redis's slots are whole milliseconds.
FLOOR_S: Final = 0.001
#: The widest window, seconds (and never more than a quarter of the interval): a node late
#: by more than this is late by accident, not by habit.
CEILING_S: Final = 0.050
#: The top share of the wake-ups the tail's exponential scale is fitted to (at least
#: `TAIL_MIN` of them).
TAIL_SHARE: Final = 0.05
TAIL_MIN: Final = 5
#: The smallest tail scale (s) the fit may give: samples the clock cannot tell apart.
TAIL_SCALE_MIN_S: Final = 0.0001
#: New wake-ups after which a chosen window is chosen again (at once after a miss).
REFRESH_EVERY: Final = 32


@final
class StartWindow:
    """One node's start window (s): `observe` each wake-up's lateness, ask `window_s`.

    One per node, shared by its lanes (lateness is the process's, not the proxy's). Not
    thread-safe; trio code only.
    """

    def __init__(self) -> None:
        self._late: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        self._fresh = 0
        self._chosen: dict[float, float] = {}  # interval_s -> window_s since the last refresh
        #: Starts observed later than the window they had (each lost its slot).
        self.missed = 0

    def __repr__(self) -> str:
        return f"<StartWindow samples={len(self._late)} missed={self.missed}>"

    def observe(self, late_s: float, window_s: float) -> bool:
        """Record one wake-up: ``late_s`` seconds after the earliest instant its slot can
        have been (negative counts as 0), which had ``window_s``. Returns whether it is
        inside the window (the start may go)."""
        late_s = max(0.0, late_s)
        self._late.append(late_s)
        self._fresh += 1
        inside = late_s <= window_s
        if not inside:
            self.missed += 1
        if self._fresh >= REFRESH_EVERY or not inside:
            self._fresh = 0
            self._chosen.clear()
        return inside

    def window_s(self, interval_s: float) -> float:
        """The window to reserve with on a proxy of ``interval_s`` (s > 0), seconds in
        [`FLOOR_S`, min(`CEILING_S`, interval / 4)]: the module's cost minimum over the
        recent wake-ups, `DEFAULT_S` (clamped alike) before `MIN_SAMPLES` of them."""
        chosen = self._chosen.get(interval_s)
        if chosen is None:
            chosen = self._chosen[interval_s] = self._choose(interval_s)
        return chosen

    def reserving(self, interval_s: float, spread_s: float) -> tuple[float, float]:
        """``(window, spread)`` seconds for a reservation on a proxy of ``interval_s`` (s > 0)
        when the node's Redis-clock bounds are ``spread_s`` wide (``inf`` before any round
        trip: counted as `DEFAULT_S`): the window Redis is asked for is that spread, which a
        start at the latest instant of its slot always spends, plus this node's wake-up
        allowance (`window_s`). `observe` is told the lateness past the spread."""
        if not math.isfinite(spread_s):
            spread_s = DEFAULT_S
        return spread_s + self.window_s(interval_s), spread_s

    def _choose(self, interval_s: float) -> float:
        high = max(FLOOR_S, min(CEILING_S, interval_s / 4))
        if len(self._late) < MIN_SAMPLES:
            return min(high, max(FLOOR_S, DEFAULT_S))
        late = sorted(self._late)
        n = len(late)
        top = late[-1]
        m = min(n - 1, max(TAIL_MIN, int(n * TAIL_SHARE)))
        scale = max(TAIL_SCALE_MIN_S, sum(late[n - m :]) / m - late[n - m - 1])

        def p_late(w: float) -> float:  # the chance the next start is later than w
            if w < top:  # k samples above w: the next one is above it with chance (k+1)/(n+1)
                return (n - bisect.bisect_right(late, w) + 1) / (n + 1)
            return math.exp(-(w - top) / scale) / (n + 1)  # past them all: the fitted tail

        # past the largest, (interval + w) / (1 - p) is least about where p'(w) = -1/interval
        beyond = top + scale * math.log(max(1.0, interval_s / (scale * (n + 1))))
        best_w, best_period = high, math.inf
        for w in sorted({min(high, max(FLOOR_S, w)) for w in (*late, beyond, high)}):
            period = (interval_s + w) / (1 - p_late(w))
            if period < best_period:
                best_w, best_period = w, period
        return best_w

    @property
    def samples(self) -> int:
        """Wake-ups recorded (at most `SAMPLES`)."""
        return len(self._late)
