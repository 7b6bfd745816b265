"""The scheduler's index of free accounts: one decision in O(log proxies), not O(accounts)."""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Callable, Collection
from typing import Final, final

import trio

from ._account import AccountWorker
from ._lane import ProxyLane

#: Collections whose emptiness means nothing is avoided (a `Collection` of the caller's may
#: judge membership itself, as the dispatcher's class and chat filter does).
_PLAIN: Final = (tuple, frozenset, set, list, dict)


@final
class ReadyIndex:
    """Free accounts by lane, lanes ranked by when they could start, cooldowns by end time.

    The pool asks one question per scheduling decision — *which free account sits on the lane
    that can start soonest, least recently used first?* — and at 10,000 accounts on 1,000
    proxies it must not scan them all. So:

    * each lane keeps its free, schedulable accounts in an ordered dict, least recently used
      first (an account goes to the end when released after a call);
    * a lane's *start bound* is ``max(proxy cooldown end, last start + interval_s × (1 +
      accounts of the lane assigned to jobs))`` (a lane that never started counts from when
      it got its first job, less one interval). Lanes whose bound has passed can start at
      once: they sit in a *ready* heap keyed by the last assignment of their least recently
      used free account, so ties are broken by account LRU as the policy says. The others sit in
      a *future* heap keyed by the bound; when a decision finds a bound passed, the lane is
      promoted. Each lane has one live entry; stale ones are re-ranked or dropped lazily when
      they reach the top, so every update is O(log P);
    * accounts in a cooldown wait in a heap keyed by its end and return to their lane's free
      set when a decision finds the end passed.

    Disabled, retired, busy and held accounts (``held``: out of scheduling while a reload
    moves them) are in no free set. An account whose cooldown ends is returned to its free set
    lazily, by the next query; the dispatcher collects those with :meth:`take_returned` to hand
    them to waiting jobs. All times are trio clock seconds.
    """

    def __init__(self, parent: ReadyIndex | None = None) -> None:
        self._free: dict[str, collections.OrderedDict[str, AccountWorker]] = {}
        self._lanes: dict[str, ProxyLane] = {}
        self._ready: list[tuple[float, int, str]] = []  # (LRU account's last use, seq, lane)
        self._future: list[tuple[float, int, str]] = []  # (start bound, seq, lane)
        self._live: dict[str, int] = {}  # lane key -> seq of its one live heap entry
        self._live_ready: set[str] = set()  # lanes whose live entry is in the ready heap
        self._cooling: list[tuple[float, int, AccountWorker]] = []
        self._assigned: dict[str, int] = {}  # lane key -> accounts of it assigned (> 0)
        self._busy_since_at: dict[str, float] = {}  # lane key -> when its assigned count left 0
        # account id -> order of its last assignment: an exact LRU even when several calls
        # start at the same clock reading
        self._last_use: dict[str, int] = {}
        self._seq = itertools.count()
        #: Accounts out of scheduling (moving to new settings): never indexed as free.
        self.held: set[str] = set()
        self._returned: list[AccountWorker] = []  # back from a cooldown, see take_returned
        #: Sub-indexes (`add_side`): the free accounts that pass a filter, kept in step.
        self._sides: list[tuple[ReadyIndex, Callable[[AccountWorker], bool]]] = []
        if parent is not None:  # a side index: the parent's assignments, LRU and holds
            self._assigned = parent._assigned
            self._busy_since_at = parent._busy_since_at
            self._last_use = parent._last_use
            self.held = parent.held

    def __repr__(self) -> str:
        free = sum(len(f) for f in self._free.values())
        return (
            f"<ReadyIndex free={free} ready_lanes={len(self._ready)} "
            f"future_lanes={len(self._future)} cooling={len(self._cooling)}>"
        )

    # -- ranking -------------------------------------------------------------------------------

    def _bound_at(self, lane: ProxyLane) -> float:
        assigned = self._assigned.get(lane.key, 0)
        last_at = lane.last_start_at
        if assigned:  # a lane that never started still starts its assigned jobs in turn
            last_at = max(last_at, self._busy_since_at[lane.key] - lane.interval_s)
        return max(lane.cooldown_until_at, last_at + lane.interval_s * (1 + assigned))

    def _lru_key(self, key: str) -> float:
        first = next(iter(self._free[key]))
        return self._last_use.get(first, -1)

    def _rank(self, lane: ProxyLane, now: float) -> None:
        """(Re-)rank the lane as of ``now`` (the caller's clock reading, trio clock s): its
        previous heap entry, if any, becomes stale."""
        seq = next(self._seq)
        key = lane.key
        self._live[key] = seq
        bound_at = self._bound_at(lane)
        if bound_at <= now:
            heapq.heappush(self._ready, (self._lru_key(key), seq, key))
            self._live_ready.add(key)
        else:
            heapq.heappush(self._future, (bound_at, seq, key))
            self._live_ready.discard(key)
        if len(self._ready) + len(self._future) > 2 * len(self._live) + 64:
            self._compact()

    def _compact(self) -> None:
        """Drop stale heap entries: O(P), amortized over as many updates."""
        for heap in (self._ready, self._future):
            heap[:] = [e for e in heap if self._live.get(e[2]) == e[1]]
            heapq.heapify(heap)

    def _is_live(self, seq: int, key: str) -> bool:
        if self._live.get(key) != seq:
            return False
        if not self._free.get(key):
            del self._live[key]  # no free account left: unranked until one returns
            self._live_ready.discard(key)
            return False
        return True

    # -- updates -------------------------------------------------------------------------------

    def mark_free(self, acc: AccountWorker, *, now: float | None = None) -> None:
        """The account may take a call (added, released, enabled): index it.

        A disabled or retired account is ignored; one still cooling down waits in the
        cooldown heap until its end. ``now``: the caller's reading of the trio clock (s), if
        it has one (None: read here).
        """
        if acc.out_of_service or acc.id in self.held:
            return
        if now is None:
            now = trio.current_time()
        if acc.cooldown_until_at > now:
            heapq.heappush(self._cooling, (acc.cooldown_until_at, next(self._seq), acc))
            return
        lane = acc.lane
        self._lanes[lane.key] = lane
        free = self._free.setdefault(lane.key, collections.OrderedDict())
        first = next(iter(free), None)
        free.pop(acc.id, None)
        free[acc.id] = acc
        if lane.key not in self._live or next(iter(free)) != first:
            self._rank(lane, now)
        self._sort_into_sides(acc)

    def discard(self, acc: AccountWorker) -> None:
        """The account may not take calls (disabled, retired, moving, a new cooldown): drop it
        from its free set (a cooldown heap entry goes stale and is skipped)."""
        free = self._free.get(acc.lane.key)
        if free is not None and free.pop(acc.id, None) is not None and free:
            self._rank(acc.lane, trio.current_time())
        for side, _ in self._sides:
            side.discard(acc)

    def lane_changed(self, lane: ProxyLane) -> None:
        """The lane's proxy cooldown changed: re-rank it now (O(log lanes))."""
        if self._free.get(lane.key):
            self._rank(lane, trio.current_time())
        for side, _ in self._sides:
            side.lane_changed(lane)

    def add_side(self, allowed: Callable[[AccountWorker], bool]) -> ReadyIndex:
        """A sub-index of the free accounts for which ``allowed(acc)`` holds, kept in step with
        this one (every update is mirrored: O(sides × log lanes) more each). The caller calls
        `refilter` when ``allowed`` changes for a free account. Built in O(free accounts).

        Why: the dispatcher's picks for jobs that need a rate class many accounts are
        flooded on stay O(log proxies) instead of skipping every flooded account.
        """
        side = ReadyIndex(self)
        self._sides.append((side, allowed))
        for free in self._free.values():
            for acc in free.values():
                if allowed(acc):
                    side.mark_free(acc)
        return side

    def refilter(self, acc: AccountWorker) -> None:
        """``allowed`` of some side changed for ``acc``: put it in or take it out there."""
        if self.is_free(acc):
            self._sort_into_sides(acc)

    def _sort_into_sides(self, acc: AccountWorker) -> None:
        """A free ``acc`` goes into each side that allows it and out of the others."""
        for side, allowed in self._sides:
            if allowed(acc):
                side.mark_free(acc)
            else:
                side.discard(acc)

    def expire(self) -> None:
        """Return accounts whose cooldown ended to the free sets (and the sides') now."""
        self._expire_cooldowns()

    def assign(self, acc: AccountWorker) -> None:
        """A job took the account: it leaves the free set and its lane starts later."""
        key = acc.lane.key
        now = trio.current_time()
        assigned = self._assigned.get(key, 0)
        if not assigned:
            self._busy_since_at[key] = now
        self._assigned[key] = assigned + 1
        self._last_use[acc.id] = next(self._seq)
        free = self._free.get(key)
        if free is not None:
            free.pop(acc.id, None)
            if free:
                self._rank(acc.lane, now)
        for side, _ in self._sides:
            side.discard(acc)
            side.lane_changed(acc.lane)

    def unassign(self, acc: AccountWorker, lane: ProxyLane) -> None:
        """The job's attempt on the account ended (call :meth:`mark_free` after, if it may
        take calls again). ``lane`` is the lane it was assigned on."""
        assigned = self._assigned.get(lane.key, 0) - 1
        if assigned > 0:
            self._assigned[lane.key] = assigned
        else:
            self._assigned.pop(lane.key, None)
            self._busy_since_at.pop(lane.key, None)
        # The bound only falls here: a lane ranked ready stays ready under the same key
        # (its least recently used free account did not change), so its entry stands.
        if self._free.get(lane.key) and lane.key not in self._live_ready:
            self._rank(lane, trio.current_time())
        for side, _ in self._sides:
            side.lane_changed(lane)

    # -- queries -------------------------------------------------------------------------------

    def _stale(self, end_at: float, acc: AccountWorker) -> bool:
        """Whether a cooldown heap entry no longer stands for a free account cooling to
        ``end_at``."""
        return (
            acc.cooldown_until_at != end_at or acc.busy or acc.out_of_service or acc.id in self.held
        )

    def _expire_cooldowns(self) -> None:
        if not self._cooling:  # the common case: no clock reading
            return
        now = trio.current_time()
        while self._cooling and self._cooling[0][0] <= now:
            end_at, _, acc = heapq.heappop(self._cooling)
            if self._stale(end_at, acc) or self.is_free(acc):
                continue
            self.mark_free(acc)
            if self.is_free(acc):
                self._returned.append(acc)

    def take_returned(self) -> list[AccountWorker]:
        """The accounts whose cooldown ended and that went back to their free set since the
        last call (some may have been assigned meanwhile: check :meth:`is_free`)."""
        self._expire_cooldowns()
        returned, self._returned = self._returned, []
        return returned

    def has_returned(self) -> bool:
        """Whether accounts back from a cooldown wait for :meth:`take_returned`."""
        self._expire_cooldowns()
        return bool(self._returned)

    def next_cooldown_end_at(self, exclude: Collection[str] = ()) -> float:
        """When the next free account cooling down comes back, leaving out the ids in
        ``exclude`` (``inf`` if none). O(log accounts) amortized, plus O(len(exclude) × log)."""
        self._expire_cooldowns()
        skipped: list[tuple[float, int, AccountWorker]] = []
        end_at = float("inf")
        while self._cooling:
            top = self._cooling[0]
            if self._stale(top[0], top[2]):
                heapq.heappop(self._cooling)
                continue
            if top[2].id in exclude:
                skipped.append(heapq.heappop(self._cooling))
                continue
            end_at = top[0]
            break
        for entry in skipped:
            heapq.heappush(self._cooling, entry)
        return end_at

    def is_free(self, acc: AccountWorker) -> bool:
        """Whether ``acc`` sits in its lane's free set (free and not cooling down itself)."""
        return acc.id in self._free.get(acc.lane.key, ())

    def free_on(self, lane_key: str) -> list[AccountWorker]:
        """The free accounts of a lane, least recently used first."""
        return list(self._free.get(lane_key, {}).values())

    def start_bound_at(self, lane: ProxyLane) -> float:
        """The lane's start bound (see the class docstring), trio clock seconds."""
        return self._bound_at(lane)

    def last_use(self, acc: AccountWorker) -> int:
        """The order of the account's last assignment (smaller: longer ago; -1: never)."""
        return self._last_use.get(acc.id, -1)

    def assigned_on(self, lane_key: str) -> int:
        """Accounts of the lane currently assigned to jobs."""
        return self._assigned.get(lane_key, 0)

    @property
    def assigned(self) -> int:
        """Accounts currently assigned to jobs."""
        return sum(self._assigned.values())

    def best(
        self, avoid: Collection[str] = (), *, now: float | None = None
    ) -> AccountWorker | None:
        """The least recently used free account on a lane that can start soonest.

        Among lanes that can start now, the one whose least recently used free account was
        used longest ago; if none can, the lane with the smallest start bound. Accounts in
        ``avoid`` (those that already failed the job) are skipped. O(log lanes) amortized;
        the account is not assigned (see :meth:`assign`). ``now``: the caller's reading of
        the trio clock (s), if it has one (None: read here).
        """
        self._expire_cooldowns()
        if now is None:
            now = trio.current_time()
        while self._future and self._future[0][0] <= now:  # promote lanes whose bound passed
            _, seq, key = heapq.heappop(self._future)
            if self._is_live(seq, key):
                self._rank(self._lanes[key], now)
        skipped: list[tuple[list[tuple[float, int, str]], tuple[float, int, str]]] = []
        found: AccountWorker | None = None
        for heap, ready in ((self._ready, True), (self._future, False)):
            while heap and found is None:
                rank, seq, key = heap[0]
                if not self._is_live(seq, key):
                    heapq.heappop(heap)
                    continue
                bound_at = self._bound_at(self._lanes[key])
                if (bound_at <= now) != ready or (not ready and bound_at != rank):
                    heapq.heappop(heap)
                    self._rank(self._lanes[key], now)
                    continue
                if ready and self._lru_key(key) != rank:
                    heapq.heapreplace(heap, (self._lru_key(key), seq, key))
                    continue
                free = self._free[key].values()
                if not avoid and type(avoid) in _PLAIN:  # nothing to skip: live, so one is free
                    found = next(iter(free))
                else:  # (a filter judged on membership may be empty and still exclude)
                    found = next((a for a in free if a.id not in avoid), None)
                if found is None:
                    skipped.append((heap, heapq.heappop(heap)))
            if found is not None:
                break
        for heap, entry in skipped:
            heapq.heappush(heap, entry)
        return found
