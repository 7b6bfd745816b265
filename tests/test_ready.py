"""ReadyIndex: the scheduler's O(log proxies) choice, on MockClock.

State changes go through the dispatcher's verbs (`mtpoold._dispatch.Dispatcher`), the one
writer of scheduling state; the index is the dispatcher's own (``Dispatcher.ready``).
"""

from __future__ import annotations

import collections

import trio
import trio.testing

from mtpoold._account import AccountWorker
from mtpoold._dispatch import Dispatcher
from mtpoold._lane import ProxyLane
from mtpoold._ready import ReadyIndex


def make_fleet(
    nursery: trio.Nursery, lanes: int, per_lane: int, interval_s: float = 2.0
) -> tuple[Dispatcher, list[AccountWorker]]:
    accounts: dict[str, AccountWorker] = {}
    by_key: dict[str, ProxyLane] = {}
    lane_accounts: dict[str, collections.OrderedDict[str, AccountWorker]] = {}
    for li in range(lanes):
        lane = ProxyLane(key=f"k{li}", name=f"p{li}", type="socks5", interval_s=interval_s)
        by_key[lane.key] = lane
        on_lane = lane_accounts[lane.key] = collections.OrderedDict()
        for ai in range(per_lane):
            acc = AccountWorker(
                id=f"a{li}.{ai}", lane=lane, client_factory=lambda: None, nursery=nursery
            )
            accounts[acc.id] = on_lane[acc.id] = acc
    d = Dispatcher(accounts, by_key, lane_accounts)
    for acc in accounts.values():
        d.add(acc)
    return d, list(accounts.values())


def use(d: Dispatcher, acc: AccountWorker) -> None:
    """Take and give back: what an attempt does around its call."""
    d.reserve(acc)
    d.release(acc)


async def test_ReadyIndex_cycles_accounts_least_recently_used_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, accounts = make_fleet(nursery, lanes=3, per_lane=2, interval_s=0.0)
        index = d.ready
        seen = []
        for _ in range(12):
            acc = index.best()
            assert acc is not None
            seen.append(acc.id)
            use(d, acc)
            await trio.sleep(1)
        assert sorted(seen[:6]) == sorted(a.id for a in accounts)
        assert seen[6:] == seen[:6]


async def test_ReadyIndex_prefers_a_lane_that_can_start_now(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, accounts = make_fleet(nursery, lanes=2, per_lane=3, interval_s=10.0)
        index = d.ready
        busy_lane = accounts[0].lane
        async with busy_lane.slot():  # p0 just started a call: its next start is 10 s out
            pass
        d.reserve(accounts[0])
        # p1 can start now, then 10 s later; p0 only 20 s from now (one started, one queued)
        for _ in range(2):
            acc = index.best()
            assert acc is not None and acc.lane.name == "p1"
            d.reserve(acc)
        acc = index.best()
        assert acc is not None
        d.reserve(acc)
        # p1's third account or p0 (both at +20 s); once p1 is exhausted, p0 is all that is left
        while (acc := index.best()) is not None and acc.lane.name == "p1":
            d.reserve(acc)
        assert acc is not None and acc.lane is busy_lane


async def test_ReadyIndex_avoid_cooldown_and_disable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, (a, b) = make_fleet(nursery, lanes=1, per_lane=2, interval_s=0.0)
        index = d.ready
        assert index.best(avoid={a.id}) is b
        d.reserve(b)
        d.cool_down(b, trio.current_time() + 37)
        d.release(b)  # parked until its cooldown ends
        assert index.next_cooldown_end_at() == trio.current_time() + 37
        assert index.best(avoid={a.id}) is None
        d.disable(a, "test")
        assert index.best() is None
        await trio.sleep(37)
        assert index.best() is b


async def test_ReadyIndex_heaps_stay_bounded_over_many_decisions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, _ = make_fleet(nursery, lanes=50, per_lane=4, interval_s=0.0)
        index: ReadyIndex = d.ready
        for _ in range(5000):
            acc = index.best()
            assert acc is not None
            use(d, acc)
            await trio.sleep(0.01)
        assert len(index._ready) + len(index._future) <= 2 * 50 + 64


async def test_ReadyIndex_spreads_a_burst_over_fresh_lanes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three never-used proxies with three accounts each: a burst of three jobs goes to three
    # different proxies, not three accounts queued behind one gate.
    async with trio.open_nursery() as nursery:
        d, _ = make_fleet(nursery, lanes=3, per_lane=3, interval_s=2.0)
        lanes = set()
        for _ in range(3):
            acc = d.ready.best()
            assert acc is not None
            lanes.add(acc.lane.name)
            d.reserve(acc)
        assert lanes == {"p0", "p1", "p2"}
