"""The per-proxy rate gate: FIFO start slots at least ``interval_s`` apart, without polling."""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING, Final, final

import attrs
import trio

from ._jobs import JobPhase
from ._promptwake import PromptWake
from ._stats import GateStatistics

if TYPE_CHECKING:
    from ._jobs import JobProgress

#: Jitter added to every reserved start, in seconds (50–150 ms, so that bursts from many callers
#: do not line up on the wire; provenance: docs/ARCHITECTURE.md, "Where the PHP system's
#: numbers went").
DEFAULT_JITTER_S: Final = (0.05, 0.15)


@final
# Validators run at construction and in `set_interval`, not on every attribute write: a
# hooked ``__setattr__`` would run on each start's ``_last_start_at`` update.
@attrs.define(eq=False, repr=False, on_setattr=attrs.setters.NO_OP)
class RateGate:
    """Admits call starts on one proxy in arrival order, never closer than ``interval_s``.

    This is *not* a token bucket and not a :class:`trio.CapacityLimiter`: it bounds the
    *rate of starts*, not the number of calls in flight. Each waiter, once it reaches the
    head of the FIFO queue, reserves its start time::

        start_at = max(arrival_at + jitter, previous_start_at + interval_s)

    where ``jitter`` is drawn uniformly from ``jitter_s`` (seconds) and ``arrival_at`` is when
    the caller called :meth:`wait_for_slot`. It then sleeps exactly
    until ``start_at`` (`mtpoold._promptwake.PromptWake`: a timed sleep, then a few ms of
    checkpoints) — no polling loop. The jitter is part of
    the reservation and the next reservation counts from this call's *real* start, so no
    two starts are ever closer than ``interval_s``, jitter included.

    A gate with ``interval_s == 0`` admits everyone at once, without jitter.

    Why the jitter sits inside the ``max``: added on top (``max(now, prev + interval) +
    jitter``) it would stretch every gap of a saturated gate to ``interval + jitter`` and cap
    utilization at ``2 / 2.1 = 95 %`` for the default 2 s interval. Inside the ``max`` it
    still spreads the starts of an idle gate by 50–150 ms (so bursts on many proxies do not
    line up), while a saturated gate starts exactly once per ``interval_s``.

    Only the head of the queue holds a reservation, so a waiter cancelled before its slot
    frees that slot for the next waiter instead of wasting it.

    Time comes from :func:`trio.current_time`, so tests drive the gate with
    :class:`trio.testing.MockClock`.

    Args:
        interval_s: Minimum seconds between two starts; a float honoured to the
            millisecond (0.5 and 1.5 work as written). The default's provenance:
            ``docs/ARCHITECTURE.md``, "Where the PHP system's numbers went".
        jitter_s: ``(low, high)`` seconds of uniform jitter added to each start.
        rng: Source of the jitter; pass a seeded :class:`random.Random` for reproducible runs.
        wake: Sleeps until the start on time (`mtpoold._promptwake.PromptWake`: a few ms of
            checkpoints before it, within a CPU budget), so a late wake-up does not push
            every later slot back.

    Raises:
        ValueError: if ``interval_s`` is negative or the jitter range is invalid.
    """

    interval_s: float = attrs.field(default=2.0)
    jitter_s: tuple[float, float] = attrs.field(default=DEFAULT_JITTER_S)
    rng: random.Random = attrs.field(factory=random.Random)
    wake: PromptWake = attrs.field(factory=PromptWake)
    _queue: deque[trio.Event] = attrs.field(init=False, factory=deque)
    _last_start_at: float = attrs.field(init=False, default=float("-inf"))
    _starts: int = attrs.field(init=False, default=0)

    @interval_s.validator
    def _check_interval(self, _: attrs.Attribute[float], value: float) -> None:
        if value < 0:
            raise ValueError(f"interval_s must be >= 0, got {value!r}")

    @jitter_s.validator
    def _check_jitter(
        self, _: attrs.Attribute[tuple[float, float]], value: tuple[float, float]
    ) -> None:
        low, high = value
        if not 0 <= low <= high:
            raise ValueError(f"jitter_s must satisfy 0 <= low <= high, got {value!r}")

    def set_interval(self, interval_s: float) -> None:
        """Change ``interval_s`` (seconds, >= 0) for the starts reserved from now on.

        Raises:
            ValueError: ``interval_s`` is negative.
        """
        self._check_interval(None, interval_s)  # type: ignore[arg-type]
        self.interval_s = interval_s

    def __repr__(self) -> str:
        return (
            f"<RateGate interval_s={self.interval_s} waiting={len(self._queue)} "
            f"starts={self._starts}>"
        )

    async def wait_for_slot(self, progress: JobProgress | None = None) -> float:
        """Wait for this caller's start slot and return the start time (trio clock, seconds).

        ``progress``: the job's `mtpoold._jobs.JobProgress`, told when it queues (``turn``:
        its place, for `eta`). Always a cancel point; a schedule point too unless the lane
        is ungated (``interval_s`` 0) and nobody is queued, where the slot is taken at once.
        Cancellation is safe at any point: a cancelled waiter leaves the queue and, if it held
        the head reservation, the next waiter reserves afresh from the previous real start, so
        no slot is wasted.

        Returns:
            The :func:`trio.current_time` at which the slot began.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        arrival_at = trio.current_time()
        low, high = self.jitter_s
        if not self._queue and self.interval_s <= 0:
            # An ungated lane with nobody queued: the slot is now, in arrival order. No Event
            # and no `sleep_until` of a past instant (which trio delivers as a cancellation
            # caught inside it: most of an ungated lane's per-call cost). No schedule point
            # either: the lane's capacity limiter, taken just before, gave one.
            self._last_start_at = arrival_at
            self._starts += 1
            return arrival_at
        turn = trio.Event()
        self._queue.append(turn)
        if self._queue[0] is turn:
            turn.set()
        if progress is not None:
            progress.enter(JobPhase.WAITING_GATE, arrival_at, turn=turn)
        try:
            await turn.wait()
            # An ungated lane (interval 0) adds no jitter either: there is nothing to spread.
            jitter = self.rng.uniform(low, high) if high > 0 and self.interval_s > 0 else 0.0
            # Jitter counts from this caller's arrival, so a head cancelled before its slot
            # never delays the next one beyond its own jitter: the slot is not wasted.
            start_at = max(arrival_at + jitter, self._last_start_at + self.interval_s)
            await self.wake.sleep_until(start_at)
            # The real start may be later than the reservation (a busy event loop); the
            # next reservation counts from the real one.
            self._last_start_at = trio.current_time()
            self._starts += 1
            return self._last_start_at
        finally:
            self._leave(turn)

    def opens_at_once(self) -> bool:
        """Whether `wait_for_slot` would give a caller arriving now its slot with no wait:
        the gate is ungated (``interval_s`` 0) and nobody is queued."""
        return not self._queue and self.interval_s <= 0

    def _leave(self, turn: trio.Event) -> None:
        was_head = bool(self._queue) and self._queue[0] is turn
        try:
            self._queue.remove(turn)
        except ValueError:  # pragma: no cover - every waiter leaves exactly once
            return
        if was_head and self._queue:
            self._queue[0].set()

    def earliest_start_at(self, *, behind: int = 0) -> float:
        """Estimate when a new arrival could start, on the trio clock (seconds).

        The estimate is a lower bound: it counts one ``interval_s`` (at least the minimum
        jitter) for every waiter already queued and for ``behind`` more arrivals ahead of the
        new one.
        The scheduler uses it to prefer the lane that can start soonest and to refuse a
        job whose deadline falls before any possible start.
        """
        ahead = len(self._queue) + behind
        low = self.jitter_s[0] if self.interval_s > 0 else 0.0
        first_at = max(trio.current_time() + low, self._last_start_at + self.interval_s)
        return first_at + ahead * max(self.interval_s, low)

    def eta(self, turn: object) -> tuple[int, float] | None:
        """Where a waiter stands: its 1-based position in the FIFO queue and the seconds
        until its start slot (>= 0; for those behind the head a lower bound, one
        ``interval_s`` per waiter ahead), or None if ``turn`` is not queued. O(queue).

        Args:
            turn: The token `wait_for_slot` gave its ``progress`` (`JobProgress.turn`).
        """
        for index, queued in enumerate(self._queue):
            if queued is turn:
                first_at = self._last_start_at + self.interval_s
                slot_at = first_at + index * self.interval_s
                return index + 1, max(0.0, slot_at - trio.current_time())
        return None

    @property
    def last_start_at(self) -> float:
        """Trio time (seconds) of the last admitted start, ``-inf`` before the first."""
        return self._last_start_at

    @property
    def waiting(self) -> int:
        """Callers queued at the gate, including the one holding the head reservation."""
        return len(self._queue)

    @property
    def starts(self) -> int:
        """Starts admitted since the gate was made."""
        return self._starts

    def next_slot_in_s(self, now: float) -> float:
        """Seconds from ``now`` (trio clock) until the interval since the last start has
        elapsed, >= 0 (`GateStatistics.next_slot_in_s`, without building the snapshot)."""
        return max(0.0, self._last_start_at + self.interval_s - now)

    def statistics(self) -> GateStatistics:
        """Return a frozen snapshot: interval, waiters, seconds until the next free slot, starts."""
        next_slot = max(0.0, self._last_start_at + self.interval_s - trio.current_time())
        return GateStatistics(
            interval_s=self.interval_s,
            waiting=len(self._queue),
            next_slot_in_s=next_slot,
            starts=self._starts,
        )
