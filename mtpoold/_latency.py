"""Latency histograms with fixed buckets, recorded where the time passes (lane slots, gate).

Plain Python (scheduling core): no locks, no tasks, nothing to await. Recording one value is a
`bisect.bisect_left` over the bucket bounds and two additions, cheap enough for every call
start. The snapshot (`HistogramStatistics`) is what `mtpoold._stats` carries and what
`mtpoold._metrics` turns into a Prometheus histogram. Every time here is in seconds
(Prometheus' base unit).
"""

from __future__ import annotations

import bisect
import math
from typing import Final, final

import attrs

__all__ = ["LATENCY_BUCKETS_S", "Histogram", "HistogramStatistics"]

#: Upper bounds of the buckets, seconds (a value ``v`` falls in the first bucket with
#: ``v <= bound``; larger ones only in ``+Inf``). From 5 ms (a free gate's jitter is 50 to
#: 150 ms) to 180 s (`mtpoold._config.PolicyConfig.job_deadline_s`' default): a wait or a call
#: longer than a job may last needs no finer bucket.
LATENCY_BUCKETS_S: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0,
)  # fmt: skip


@attrs.frozen(kw_only=True)
class HistogramStatistics:
    """A `Histogram` snapshot, in Prometheus' shape.

    Attributes:
        bounds_s: Upper bounds of the finite buckets, seconds, ascending.
        counts: Observations per bucket, *not* cumulative: ``counts[i]`` fell in
            ``(bounds_s[i-1], bounds_s[i]]``; the last entry (``len(bounds_s)``) counts those
            above every bound (``+Inf``). So ``len(counts) == len(bounds_s) + 1``.
        sum_s: Sum of every observed value, seconds.
        count: Number of observations (``sum(counts)``).
    """

    bounds_s: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS_S) + 1)
    sum_s: float = 0.0
    count: int = 0


@final
class Histogram:
    """Counts observed durations in fixed buckets (see `LATENCY_BUCKETS_S`).

    Args:
        bounds_s: Upper bounds of the finite buckets, seconds, strictly ascending, finite.

    Raises:
        ValueError: if the bounds are empty, not strictly ascending or not finite.
    """

    __slots__ = ("_bounds", "_counts", "_snapshot", "_sum")

    def __init__(self, bounds_s: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        if not bounds_s or any(not math.isfinite(b) for b in bounds_s):
            raise ValueError(f"bucket bounds must be finite and non-empty, got {bounds_s!r}")
        if any(a >= b for a, b in zip(bounds_s, bounds_s[1:], strict=False)):
            raise ValueError(f"bucket bounds must be strictly ascending, got {bounds_s!r}")
        self._bounds = tuple(float(b) for b in bounds_s)
        self._counts = [0] * (len(bounds_s) + 1)
        self._sum = 0.0
        #: The last snapshot, until the next observation (10,000 lanes' statistics).
        self._snapshot: HistogramStatistics | None = None

    def __repr__(self) -> str:
        return f"<Histogram count={sum(self._counts)} sum_s={self._sum:.3f}>"

    def observe(self, value_s: float) -> None:
        """Count one duration, seconds (a negative one, from a clock step, counts as 0)."""
        value_s = max(0.0, value_s)
        self._counts[bisect.bisect_left(self._bounds, value_s)] += 1
        self._sum += value_s
        self._snapshot = None

    def statistics(self) -> HistogramStatistics:
        """Return a frozen snapshot (the counts per bucket, not cumulative); the same object
        until the next `observe`."""
        snapshot = self._snapshot
        if snapshot is None:
            counts = tuple(self._counts)
            snapshot = self._snapshot = HistogramStatistics(
                bounds_s=self._bounds, counts=counts, sum_s=self._sum, count=sum(counts)
            )
        return snapshot
