"""Where the metrics' counters and histograms are recorded, on MockClock: the lane's gate
wait and call duration, the pool's jobs by rate class and outcome, the budget totals."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from telethon import errors as tg
from test_pool_budgets import config_with, guarded, wall

from mtpoold._compose import open_pool
from mtpoold._dispatch import Dispatcher
from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._lane import ProxyCoolingDown, ProxyLane
from mtpoold._latency import LATENCY_BUCKETS_S
from mtpoold._stats import BudgetStatistics

from _fakeclient import Sleep, World, make_config


def _bucket(value_s: float) -> int:
    return next(
        (i for i, b in enumerate(LATENCY_BUCKETS_S) if value_s <= b), len(LATENCY_BUCKETS_S)
    )


async def test_lane_records_the_wait_for_a_slot_and_how_long_it_was_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lane = ProxyLane(
        key="p1", name="p1", type="socks5", capacity=1, interval_s=2.0, jitter_s=(0, 0)
    )

    async def call(hold_s: float) -> None:
        async with lane.slot():
            await trio.sleep(hold_s)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, 1.0)  # starts at 0, holds 1 s
        nursery.start_soon(call, 0.5)  # the token at 1 s, the gate's slot at 2 s: waited 2 s
    stats = lane.statistics()
    assert stats.calls == 2
    wait = stats.gate_wait
    assert wait.count == 2 and wait.sum_s == pytest.approx(2.0)
    assert wait.counts[_bucket(0.0)] == 1 and wait.counts[_bucket(2.0)] == 1
    held = stats.call_latency
    assert held.count == 2 and held.sum_s == pytest.approx(1.5)
    assert held.counts[_bucket(1.0)] == 1 and held.counts[_bucket(0.5)] == 1


async def test_lane_does_not_record_a_waiter_that_left_or_met_a_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lane = ProxyLane(key="p1", name="p1", type="socks5", capacity=1, interval_s=0.0)
    async with trio.open_nursery() as nursery:

        async def holder(task_status: trio.TaskStatus[None]) -> None:
            async with lane.slot():
                task_status.started()
                await trio.sleep(10)

        await nursery.start(holder)
        with trio.move_on_after(1):  # gives up waiting for the token
            async with lane.slot():
                pass  # pragma: no cover
        dispatcher = Dispatcher({}, {"p1": lane}, {"p1": collections.OrderedDict()})
        dispatcher.cool_down_lane(lane, trio.current_time() + 60)  # the proxy starts cooling
        with pytest.raises(ProxyCoolingDown):  # the token comes free at 10 s: nothing sent
            async with lane.slot():
                pass  # pragma: no cover
    stats = lane.statistics()
    assert stats.calls == stats.gate_wait.count == stats.call_latency.count == 1


async def test_pool_counts_jobs_by_rate_class_and_outcome(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", {"ok": 1}, tg.UsernameNotOccupiedError(request=None), Sleep(100))
    config = make_config(tmp_path, accounts={"a1": "p1"}, policy={"max_attempts": 1})
    async with open_pool(config, client_factory=world.factory()) as pool:
        await pool.invoke("help.GetConfig", {})
        with pytest.raises(JobFailed) as info:
            await pool.resolve("@nobody_here")
        assert info.value.error_class is ErrorClass.PEER_NOT_FOUND
        with trio.move_on_after(5):  # the caller goes away
            await pool.get_messages("@channel_x", [1])
        with pytest.raises(JobFailed):  # refused before it is accepted: not a job
            await pool.invoke("help.GetConfig", {}, account="nobody")
        stats = pool.statistics()
    assert stats.jobs_by_class == {
        "other": {"OK": 1},
        "resolve": {"PEER_NOT_FOUND": 1},
        "read": {"CANCELLED": 1},
    }
    assert stats.jobs_ok + stats.jobs_failed == 3
    assert stats.jobs_in_flight == 0


async def test_pool_counts_a_job_under_the_class_a_reload_moved_its_function_to(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    before = config_with(tmp_path)
    after = config_with(tmp_path, rate_classes={"cheap": {"functions": ["help.GetConfig"]}})
    async with open_pool(before, client_factory=guarded(World()), wall_clock=wall) as pool:
        await pool.invoke("help.GetConfig", {})
        await pool.invoke("help.GetConfig", {})  # the method's classes, remembered
        assert pool._new_job("help.GetConfig", 1e9, None, frozenset(), None).rate_classes == {
            "other"
        }
        await pool.reload(after)
        await pool.invoke("help.GetConfig", {})
        assert pool._new_job("help.GetConfig", 1e9, None, frozenset(), None).rate_classes == {
            "cheap"
        }
        stats = pool.statistics()
    assert stats.jobs_by_class == {"other": {"OK": 2}, "cheap": {"OK": 1}}


async def test_pool_sums_budgets_over_accounts_and_windows(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = config_with(tmp_path, rate_classes={"resolve": {"per_hour": 3, "per_day": 10}})
    async with open_pool(config, client_factory=guarded(World()), wall_clock=wall) as pool:
        for _ in range(3):
            await pool.resolve("@channel_x", deadline_s=10)
        budgets = {(b.rate_class, b.window): b for b in pool.statistics().budgets}
        await trio.sleep(3600)  # the hour window frees; the day window still counts them
        later = {(b.rate_class, b.window): b for b in pool.statistics().budgets}
    assert budgets[("resolve", "per_hour")] == BudgetStatistics(
        rate_class="resolve", window="per_hour", window_s=3600.0, spent=3, limit=3, exhausted=1
    )
    assert budgets[("resolve", "per_day")].spent == 3
    assert budgets[("resolve", "per_day")].exhausted == 0
    assert later[("resolve", "per_hour")].spent == 0
    assert later[("resolve", "per_day")].spent == 3
    assert {k[0] for k in budgets} == {"resolve", "join", "send"}  # the shipped budgeted classes


async def test_pool_without_budgets_reports_none(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config: Any = config_with(tmp_path, economy={"budgets": False})
    async with open_pool(config, client_factory=guarded(World()), wall_clock=wall) as pool:
        await pool.resolve("@channel_x", deadline_s=10)
        assert pool.statistics().budgets == ()


async def test_budget_totals_follow_the_warm_up(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """An account still warming up counts its scaled limit (`BudgetBook.limits`' rule), and
    one that spent counts its spends, in the summed totals."""
    config = config_with(
        tmp_path,
        rate_classes={"resolve": {"per_hour": 10}},
        economy={"warmup_days": 2, "warmup_start": 0.5},
    )
    async with open_pool(config, client_factory=guarded(World()), wall_clock=wall) as pool:
        for _ in range(3):
            await pool.resolve("@channel_x", deadline_s=10)
        fresh = {(b.rate_class, b.window): b for b in pool.statistics().budgets}
        await trio.sleep(86400)  # half way through the warm-up: 0.75 of each limit
        later = {(b.rate_class, b.window): b for b in pool.statistics().budgets}
    assert fresh[("resolve", "per_hour")] == BudgetStatistics(
        rate_class="resolve", window="per_hour", window_s=3600.0, spent=3, limit=5, exhausted=0
    )
    assert later[("resolve", "per_hour")].limit == 7 and later[("resolve", "per_hour")].spent == 0
