"""Redis's clock seen from this node's trio clock: where a Redis instant falls locally.

A reservation names its start on Redis's clock (`mtpoold._clustergate.SharedGate`). The
script also returns Redis's ``TIME`` when it ran, and that instant lies, on our clock,
between the moment the request was sent and the moment its reply arrived. Each round trip
therefore bounds the offset ``local - redis`` from both sides::

    sent - redis_now  <=  offset  <=  received - redis_now

and the tightest bounds of the recent round trips pin it to about the fastest round trip
seen (well under a millisecond on loopback), however slow the current reply is. A start
placed at ``slot + high`` is never before the slot on any clock and at most ``high - low``
after it; sleeping "the delay from when the reply arrives" instead is late by the reply's
own travel time, which under load (36 ms at p99, bench/RESULTS.md "cluster") crowds the
next node's start.

Bounds older than `SAMPLE_MAX_AGE_S` are dropped (the two clocks drift apart slowly: Redis's
is the wall clock), and a round trip that contradicts the window (a wall-clock step, a
Redis that moved to another host) starts it afresh.
"""

from __future__ import annotations

import collections
import math
from typing import Final, final

__all__ = ["SAMPLE_MAX_AGE_S", "SAMPLES_MAX", "RedisClock"]

#: Seconds a round trip's bounds count (the clocks may drift by a few ppm meanwhile).
SAMPLE_MAX_AGE_S: Final = 30.0
#: Round trips kept at most.
SAMPLES_MAX: Final = 64


@final
class RedisClock:
    """Bounds on ``offset = trio clock - Redis clock`` (both in seconds) from round trips.

    One per Redis link (every gate of a node shares it). Not thread-safe; trio code only.
    """

    def __init__(self) -> None:
        # (received_at, low, high) per round trip, oldest first
        self._samples: collections.deque[tuple[float, float, float]] = collections.deque(
            maxlen=SAMPLES_MAX
        )
        self._low = float("-inf")
        self._high = float("inf")

    def observe(self, sent_at: float, received_at: float, redis_now_s: float) -> None:
        """Add one round trip: sent and received on the trio clock (s), and Redis's ``TIME``
        while the script ran (s, microsecond resolution)."""
        low, high = sent_at - redis_now_s, received_at - redis_now_s
        if low > self._high or high < self._low:
            self._samples.clear()  # contradicts the window: Redis's clock stepped or moved
        while self._samples and self._samples[0][0] < received_at - SAMPLE_MAX_AGE_S:
            self._samples.popleft()
        self._samples.append((received_at, low, high))
        self._low = max(s[1] for s in self._samples)
        self._high = min(s[2] for s in self._samples)

    def bounds(self) -> tuple[float, float]:
        """``(low, high)``: the offset lies between them (s); ``(-inf, inf)`` before any
        round trip."""
        return self._low, self._high

    def spread_s(self) -> float:
        """``high - low`` (s): how far apart the earliest and latest local instants of any
        Redis instant are now (`local_span`); ``inf`` before any round trip."""
        return self._high - self._low if self._samples else math.inf

    def local_span(self, redis_s: float) -> tuple[float, float]:
        """Where the Redis instant ``redis_s`` (s) falls on the trio clock: ``(earliest,
        latest)`` seconds. Raises ValueError before any round trip."""
        if not self._samples:
            raise ValueError("no round trip observed yet")
        return redis_s + self._low, redis_s + self._high
