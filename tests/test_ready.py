"""ReadyIndex: the scheduler's O(log proxies) choice, on MockClock."""

from __future__ import annotations

import trio
import trio.testing

from mtpoold._account import AccountWorker
from mtpoold._lane import ProxyLane
from mtpoold._ready import ReadyIndex


def make_fleet(nursery: trio.Nursery, lanes: int, per_lane: int, interval_s: float = 2.0):
    index = ReadyIndex()
    accounts = []
    for li in range(lanes):
        lane = ProxyLane(key=f"k{li}", name=f"p{li}", type="socks5", interval_s=interval_s)
        for ai in range(per_lane):
            acc = AccountWorker(
                id=f"a{li}.{ai}", lane=lane, client_factory=lambda: None, nursery=nursery
            )
            accounts.append(acc)
            index.mark_free(acc)
    return index, accounts


def use(index: ReadyIndex, acc: AccountWorker) -> None:
    """Assign, 'call', release: what the pool does around one attempt."""
    index.assign(acc)
    acc.last_used = trio.current_time()
    index.unassign(acc, acc.lane)
    index.mark_free(acc)


async def test_ReadyIndex_cycles_accounts_least_recently_used_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        index, accounts = make_fleet(nursery, lanes=3, per_lane=2, interval_s=0.0)
        seen = []
        for _ in range(12):
            acc = index.best()
            assert acc is not None
            seen.append(acc.id)
            use(index, acc)
            await trio.sleep(1)
        assert sorted(seen[:6]) == sorted(a.id for a in accounts)
        assert seen[6:] == seen[:6]


async def test_ReadyIndex_prefers_a_lane_that_can_start_now(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        index, accounts = make_fleet(nursery, lanes=2, per_lane=3, interval_s=10.0)
        busy_lane = accounts[0].lane
        async with busy_lane.slot():  # p0 just started a call: its next start is 10 s out
            pass
        index.assign(accounts[0])
        # p1 can start now, then 10 s later; p0 only 20 s from now (one started, one queued)
        for _ in range(2):
            acc = index.best()
            assert acc is not None and acc.lane.name == "p1"
            index.assign(acc)
        acc = index.best()
        assert acc is not None
        index.assign(acc)
        # p1's third account or p0 (both at +20 s); once p1 is exhausted, p0 is all that is left
        while (acc := index.best()) is not None and acc.lane.name == "p1":
            index.assign(acc)
        assert acc is not None and acc.lane is busy_lane


async def test_ReadyIndex_avoid_cooldown_and_disable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        index, (a, b) = make_fleet(nursery, lanes=1, per_lane=2, interval_s=0.0)
        assert index.best(avoid={a.id}) is b
        index.assign(b)
        b.cooldown_until = trio.current_time() + 37
        index.unassign(b, b.lane)
        index.mark_free(b)  # parked until its cooldown ends
        assert index.next_cooldown_end() == trio.current_time() + 37
        assert index.best(avoid={a.id}) is None
        a.disabled_reason = "test"
        index.discard(a)
        assert index.best() is None
        await trio.sleep(37)
        assert index.best() is b


async def test_ReadyIndex_heaps_stay_bounded_over_many_decisions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        index, _ = make_fleet(nursery, lanes=50, per_lane=4, interval_s=0.0)
        for _ in range(5000):
            acc = index.best()
            assert acc is not None
            use(index, acc)
            await trio.sleep(0.01)
        assert len(index._ready) + len(index._future) <= 2 * 50 + 64


async def test_ReadyIndex_spreads_a_burst_over_fresh_lanes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three never-used proxies with three accounts each: a burst of three jobs goes to three
    # different proxies, not three accounts queued behind one gate.
    async with trio.open_nursery() as nursery:
        index, _ = make_fleet(nursery, lanes=3, per_lane=3, interval_s=2.0)
        lanes = set()
        for _ in range(3):
            acc = index.best()
            assert acc is not None
            lanes.add(acc.lane.name)
            index.assign(acc)
        assert lanes == {"p0", "p1", "p2"}
