"""RateGate invariants, deterministic on trio's MockClock."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mtpoold._gate import RateGate

EPS = 1e-9


def run_scenario(
    interval_s: float,
    arrivals: list[float],
    cancel_after: dict[int, float],
    *,
    jitter_s: tuple[float, float] = (0.05, 0.15),
    seed: int = 0,
) -> tuple[list[tuple[int, float]], list[int]]:
    """Run waiters arriving at ``arrivals`` (s); waiter i is cancelled ``cancel_after[i]`` s
    after it arrives. Returns ``[(waiter, start)]`` in start order and the order in which the
    waiters reached the gate (equal arrival times reach it in whatever order trio runs them)."""
    starts: list[tuple[int, float]] = []
    reached: list[int] = []

    async def main() -> None:
        gate = RateGate(interval_s=interval_s, jitter_s=jitter_s, rng=random.Random(seed))
        t0 = trio.current_time()

        async def waiter(i: int, at: float) -> None:
            await trio.sleep_until(t0 + at)
            reached.append(i)
            with trio.move_on_after(cancel_after.get(i, float("inf"))):
                start = await gate.wait_for_slot()
                starts.append((i, start - t0))

        async with trio.open_nursery() as nursery:
            # Spawn in arrival order so equal arrival times queue in index order.
            for i, at in sorted(enumerate(arrivals), key=lambda p: (p[1], p[0])):
                nursery.start_soon(waiter, i, at)
                await trio.testing.wait_all_tasks_blocked()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return starts, reached


intervals = st.sampled_from([0.0, 0.001, 0.5, 1.5, 2.0, 3.25])
arrival_lists = st.lists(
    st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=25
)


@settings(max_examples=60, deadline=None)
@given(interval=intervals, arrivals=arrival_lists, data=st.data())
def test_RateGate_invariants_under_generated_arrivals(
    interval: float, arrivals: list[float], data: st.DataObject
) -> None:
    cancel_after = data.draw(
        st.dictionaries(
            st.integers(0, len(arrivals) - 1), st.floats(min_value=0, max_value=10), max_size=8
        )
    )
    starts, reached = run_scenario(interval, arrivals, cancel_after)
    times = [t for _, t in starts]

    # 1. No two starts closer than the interval, jitter included.
    for a, b in zip(times, times[1:], strict=False):
        assert b - a >= interval - EPS

    # 2. Arrival order kept among the waiters that got a slot.
    order = [i for i, _ in starts]
    assert order == [i for i in reached if i in set(order)]

    # 3. Nobody starts before arriving plus the minimum jitter.
    for i, t in starts:
        assert t >= arrivals[i] + (0.05 if interval > 0 else 0.0) - EPS

    # 4. Every waiter not cancelled got a slot.
    uncancelled = set(range(len(arrivals))) - set(cancel_after)
    assert uncancelled <= set(order)


@settings(max_examples=30, deadline=None)
@given(interval=st.sampled_from([0.5, 1.5, 2.0]), arrivals=arrival_lists, data=st.data())
def test_RateGate_cancelled_waiter_does_not_waste_a_slot(
    interval: float, arrivals: list[float], data: st.DataObject
) -> None:
    # Each start after a gap is explained by its own arrival (+ jitter) or by the previous
    # start + interval; a cancelled waiter never pushes a later start further out.
    cancel_after = data.draw(
        st.dictionaries(
            st.integers(0, len(arrivals) - 1), st.floats(min_value=0, max_value=3), max_size=8
        )
    )
    starts, _ = run_scenario(interval, arrivals, cancel_after)
    prev = float("-inf")
    for i, t in starts:
        bound = max(arrivals[i] + 0.15, prev + interval)
        assert t <= bound + EPS, (i, t, bound)
        prev = t


def test_RateGate_cancelled_head_frees_its_slot_for_the_next_waiter() -> None:
    # Waiter 0 starts at ~0.1, waiter 1 would start at ~2.1 but is cancelled at 1.0;
    # waiter 2 must start at ~2.1, not 4.1.
    starts, _ = run_scenario(2.0, [0.0, 0.0, 0.0], {1: 1.0}, jitter_s=(0.1, 0.1))
    assert starts == [(0, pytest.approx(0.1)), (2, pytest.approx(2.1))]


@pytest.mark.parametrize("interval", [0.5, 1.5, 2.0])
def test_RateGate_utilization_under_saturation(interval: float) -> None:
    n = 200
    starts, _ = run_scenario(interval, [0.0] * n, {})
    times = [t for _, t in starts]
    achieved = (n - 1) / (times[-1] - times[0])
    assert achieved >= 0.99 * (1 / interval)
    # and honoured to the millisecond: the gaps are the interval as written
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) == pytest.approx(
        interval, abs=1e-3
    )


def test_RateGate_with_interval_0_admits_at_once_without_jitter() -> None:
    starts, _ = run_scenario(0.0, [0.0] * 5 + [3.0], {})
    assert sorted(t for _, t in starts) == [0.0] * 5 + [3.0]


def test_RateGate_idle_gate_spreads_starts_by_jitter() -> None:
    starts, _ = run_scenario(0.5, [0.0, 5.0, 10.0], {}, jitter_s=(0.05, 0.15), seed=3)
    for (_, t), at in zip(starts, [0.0, 5.0, 10.0], strict=True):
        assert 0.05 - EPS <= t - at <= 0.15 + EPS


async def test_RateGate_statistics_and_earliest_start_at(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = RateGate(interval_s=2.0, jitter_s=(0.1, 0.1))
    t0 = trio.current_time()
    assert gate.earliest_start_at() == pytest.approx(t0 + 0.1)
    await gate.wait_for_slot()
    stats = gate.statistics()
    assert (stats.starts, stats.waiting, stats.interval_s) == (1, 0, 2.0)
    assert stats.next_slot_in_s == pytest.approx(2.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gate.wait_for_slot)
        nursery.start_soon(gate.wait_for_slot)
        await trio.testing.wait_all_tasks_blocked()
        assert gate.statistics().waiting == 2
        # two queued ahead: the new arrival starts after 3 intervals from the last start
        assert gate.earliest_start_at() == pytest.approx(t0 + 0.1 + 3 * 2.0)
    assert gate.statistics().starts == 3


def test_RateGate_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match=r"^interval_s must be >= 0, got -1$"):
        RateGate(interval_s=-1)
    with pytest.raises(
        ValueError, match=r"^jitter_s must satisfy 0 <= low <= high, got \(0.2, 0.1\)$"
    ):
        RateGate(jitter_s=(0.2, 0.1))
