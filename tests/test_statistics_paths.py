"""The summary's fast paths give what the per-account rules give (issue 14: 100,000 accounts).

`count_states` against `AccountWorker.state`, `BudgetBook.summed_limits` against summing
`BudgetBook.limits`, a lane's snapshot at rest reused only while nothing moved, a histogram's
snapshot kept until the next observation. No timing: the speed is bench/scale.py's.
"""

from __future__ import annotations

import collections
import math
import random

import trio
import trio.testing

from mtpoold._account import AccountWorker, count_states
from mtpoold._budget import BudgetBook, WarmUp
from mtpoold._dispatch import Dispatcher
from mtpoold._errors import ErrorClass
from mtpoold._lane import ProxyLane
from mtpoold._latency import Histogram
from mtpoold._rateclass import RateClasses
from mtpoold._stats import AccountState


class _Client:
    def __init__(self, connected: bool) -> None:
        self.connected = connected

    def is_connected(self) -> bool:
        return self.connected


def _worker(nursery: trio.Nursery, lane: ProxyLane, i: int) -> AccountWorker:
    return AccountWorker(id=f"a{i}", lane=lane, client_factory=lambda: None, nursery=nursery)  # type: ignore[arg-type,return-value]


async def test_count_states_matches_state_account_by_account(nursery: trio.Nursery) -> None:
    lanes = {k: ProxyLane(key=k, name=k, type="socks5") for k in ("p", "q")}
    workers = [_worker(nursery, lanes["q" if i % 7 == 0 else "p"], i) for i in range(70)]
    accounts = {w.id: w for w in workers}
    by_lane: dict[str, collections.OrderedDict[str, AccountWorker]] = {
        k: collections.OrderedDict((w.id, w) for w in workers if w.lane is lane)
        for k, lane in lanes.items()
    }
    dispatch = Dispatcher(accounts, lanes, by_lane)
    for w in workers:
        dispatch.add(w)
    now = trio.current_time()
    dispatch.cool_down_lane(lanes["q"], now + 60, "PROXY_UNAVAILABLE")
    for i, w in enumerate(workers):
        kind = i % 10
        if kind == 1:
            dispatch.retire(w)
        elif kind == 2:
            dispatch.disable(w, "disabled by the operator")
        elif kind == 3:
            w._connecting = True
        elif kind == 4:
            await w._lock.acquire()  # busy: a call holds it
        elif kind == 5:
            dispatch.cool_down(w, now + 30, "FLOOD_WAIT")
        elif kind == 6:
            w._client = _Client(connected=True)  # type: ignore[assignment]
        elif kind == 7:
            w._client = _Client(connected=False)  # type: ignore[assignment]
        elif kind == 8:
            dispatch.cool_down(w, now - 1, "FLOOD_WAIT")  # over
        elif kind == 9:
            dispatch.hold_remote([w], "held by node n2")  # cluster mode: another node's
    expected = collections.Counter(w.state(now).value for w in workers)
    counts = count_states(workers, now)
    assert set(counts) == {s.value for s in AccountState}
    assert counts == {s.value: expected.get(s.value, 0) for s in AccountState}
    assert sum(counts.values()) == len(workers)
    assert all(counts[s.value] for s in AccountState)  # every branch taken at least once


def test_summed_limits_equal_the_sum_of_each_accounts_limits() -> None:
    rng = random.Random(14)
    book = BudgetBook(RateClasses.from_overrides([]), WarmUp(days=2, start=0.1))
    now = 10 * 86400.0
    accounts = [f"a{i}" for i in range(2000)]
    for acc in accounts[:1500]:  # the rest never seen: they count as first seen now
        book.first_seen[acc] = now - rng.choice([0.0, 3 * 86400.0, rng.uniform(0, 3 * 86400)])
    sums = book.summed_limits(accounts, now)
    assert set(sums) == {(c, w) for c in book.budgeted() for w, _ in book.classes.windows(c)}
    for (rate_class, window_s), total in sums.items():
        assert total == sum(dict(book.limits(a, rate_class, now))[window_s] for a in accounts)
    # one limit for all (a fresh fleet, or a warmed one): the same sums without a sort
    fresh = BudgetBook(RateClasses.from_overrides([]), WarmUp(days=2, start=0.5))
    for (rate_class, window_s), total in fresh.summed_limits(accounts, now).items():
        base = dict(fresh.classes.windows(rate_class))[window_s]
        assert total == len(accounts) * max(1, math.floor(base * 0.5))
    assert fresh.summed_limits([], now) == {k: 0 for k in sums}


async def test_a_lane_at_rest_gives_its_last_snapshot_until_something_moves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lane = ProxyLane(key="p", name="p", type="socks5", interval_s=1.0, jitter_s=(0.0, 0.0))
    first = lane.statistics()
    assert lane.statistics() is first  # nothing moved: the same snapshot
    async with lane.slot():
        during = lane.statistics()
        assert during.in_flight == 1 and during is not first
    after = lane.statistics()
    assert after.next_slot_in_s > 0 and after.calls == 1  # not at rest: built anew
    await trio.sleep(1.0)
    rested = lane.statistics()
    assert rested.next_slot_in_s == 0 and rested.calls == 1 and rested.gate_wait.count == 1
    assert rested.call_latency.count == 1 and lane.statistics() is rested
    lane.record_outcome(ErrorClass.PROXY_UNAVAILABLE)
    failed = lane.statistics()
    assert failed is not rested and failed.errors_by_class == {"PROXY_UNAVAILABLE": 1}
    assert failed.consecutive_failures == 1
    lane.reconfigure(capacity=3, interval_s=2.0)
    tuned = lane.statistics()
    assert (tuned.capacity, tuned.interval_s) == (3, 2.0)
    lane.name = "renamed"
    assert lane.statistics().name == "renamed"
    Dispatcher({}, {"p": lane}, {"p": collections.OrderedDict()}).cool_down_lane(
        lane, trio.current_time() + 5, "PROXY_UNAVAILABLE"
    )
    cooling = lane.statistics()
    assert cooling.cooldown_remaining_s == 5 and cooling.cooldown_cause == "PROXY_UNAVAILABLE"
    await trio.sleep(5)
    over = lane.statistics()
    assert over.cooldown_remaining_s == 0 and over.cooldown_cause is None


def test_a_histogram_snapshot_lasts_until_the_next_observation() -> None:
    h = Histogram()
    first = h.statistics()
    assert h.statistics() is first and first.count == 0
    h.observe(0.2)
    second = h.statistics()
    assert second is not first and second.count == 1 and second.sum_s == 0.2
    assert h.statistics() is second
